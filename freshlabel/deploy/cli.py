"""`freshlabel deploy render | validate`: Kubernetes manifests from a settings profile."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.config import CONFIG_ENV, Settings

_ENV_PREFIX = "FRESHLABEL_"


@contextmanager
def _only_profile(profile: Path) -> Iterator[None]:
    """The profile alone decides: FRESHLABEL_* variables of this shell (secrets among them)
    must not leak into rendered manifests."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ[CONFIG_ENV] = str(profile)
    try:
        yield
    finally:
        os.environ.pop(CONFIG_ENV, None)
        os.environ.update(saved)


def load_profile(profile: Path) -> Settings:
    """Settings from `profile` alone (no FRESHLABEL_* environment).

    Args:
        profile: a settings YAML file (infra/profiles/production.yaml).

    Returns:
        The settings.

    Raises:
        FileNotFoundError: `profile` is not a file.
    """
    if not profile.is_file():
        raise FileNotFoundError(f"profile {profile} is not a file; pass a settings YAML")
    with _only_profile(profile):
        return Settings()


def _render(args: argparse.Namespace, settings: Settings) -> int:
    from freshlabel.deploy.render import write

    written = write(load_profile(Path(args.profile)), Path(args.out))
    for path in written:
        print(path)
    print(f"{len(written)} files in {args.out}; check them with `freshlabel deploy validate`")
    return 0


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from freshlabel.deploy.validate import CRD_DIR, KUBERNETES_VERSION, validate_dir

    errors = validate_dir(Path(args.dir), Path(args.crds) if args.crds else CRD_DIR)
    for line in errors:
        print(line)
    if errors:
        print(f"{len(errors)} error(s) in {args.dir}")
        return 1
    print(f"{args.dir}: every manifest is valid (Kubernetes {KUBERNETES_VERSION} and the CRDs)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `deploy render` and `deploy validate`.

    Args:
        sub: the top-level subparsers of `freshlabel`.
    """
    deploy = sub.add_parser("deploy", help="Kubernetes manifests").add_subparsers(
        dest="verb", required=True
    )
    p = deploy.add_parser("render", help="write the manifests of a settings profile")
    p.add_argument("--profile", required=True, help="settings YAML (infra/profiles/...)")
    p.add_argument("--out", required=True, help="folder for the manifests")
    p.set_defaults(handler=_render)
    p = deploy.add_parser("validate", help="check rendered manifests offline")
    p.add_argument("dir", help="folder `deploy render` wrote")
    p.add_argument("--crds", help="folder of CRDs (default: ../shared/k8s/crds)")
    p.set_defaults(handler=_validate)
