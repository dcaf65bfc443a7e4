"""The embedded Triton Inference Server that serves the teacher.

Runs the `tritonserver` binary bundled in the `nvidia-pytriton` wheel on a plain model
repository (written by `freshlabel teacher export`). The wheel ships only the python
backend; Triton wants it as `<backend dir>/python/` with the stub beside the library, so
that folder is assembled under the state folder. Verified details (stack-notes.md):
LD_LIBRARY_PATH lists this Python's LIBDIR first, numpy<2 in the venv, 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import requests

from infra.config import Settings
from infra.process import ServiceError, ServiceRecord, start, wait_until

SERVICE = "triton"


def _package_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - environment problem
        raise ServiceError(
            "tritonserver comes from the nvidia-pytriton wheel; run `make setup`"
        ) from exc
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def tritonserver_binary() -> Path:
    return _package_dir() / "bin" / "tritonserver"


def repository_path(settings: Settings) -> Path:
    return (settings.triton.repository or settings.state_dir / "triton-repo").resolve()


def backend_dir(settings: Settings) -> Path:
    """`<state>/triton_backends/python/` with the library, utils and this Python's stub.
    (Not named `triton`: a folder of that name on the stub's path passes for OpenAI's
    Triton package and breaks `import torch._dynamo`.)"""
    package = _package_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": package / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": package
        / "backends"
        / "python"
        / "triton_python_backend_utils.py",
        "triton_python_backend_stub": package
        / "python_backend_stubs"
        / version
        / "triton_python_backend_stub",
    }
    target = settings.state_dir / "triton_backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.exists():
            raise ServiceError(
                f"{source} is missing from nvidia-pytriton (no stub for Python {version}?)"
            )
        dest = target / name
        if not dest.exists() or dest.stat().st_size != source.stat().st_size:
            shutil.copy2(source, dest)
    return target.parent


def server_env() -> dict[str, str]:
    """The environment tritonserver and its python stubs need: this venv's Python first on
    PATH, and its LIBDIR ahead of the wheel's bundled libraries."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    libs = [
        sysconfig.get_config_var("LIBDIR") or "",
        str(_package_dir().parent.parent / "nvidia_pytriton.libs"),
    ]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    # The stub must not pick up a caller's PYTHONPATH copy of the code: the repository
    # carries its own snapshot of the teacher code.
    env.pop("PYTHONPATH", None)
    # No __pycache__ inside the repository: with --model-control-mode=poll, Triton takes new
    # files in a version folder for a changed model and reloads it, again and again.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def server_args(settings: Settings, repository: str) -> list[str]:
    """tritonserver's arguments shared by every deployment (the embedded server and the
    rendered Kubernetes one): the repository, the ports and the model options of
    `settings.triton`.

    Args:
        settings: The platform settings.
        repository: The model repository (a local folder, or `s3://…` in production).

    Returns:
        The arguments, without the binary.
    """
    t = settings.triton
    args = [
        f"--model-repository={repository}",
        f"--http-port={t.http_port}",
        f"--grpc-port={t.grpc_port}",
        f"--metrics-port={t.metrics_port}",
        f"--exit-timeout-secs={int(t.exit_timeout_s)}",
    ]
    if t.model_config_name:
        args.append(f"--model-config-name={t.model_config_name}")
    if t.repository_poll_s > 0:
        args += ["--model-control-mode=poll", f"--repository-poll-secs={t.repository_poll_s}"]
    return args


def server_argv(settings: Settings, repository: Path) -> list[str]:
    """The embedded server's command line: the shared arguments, bound to `triton.host`,
    CPU only, with the Python backend unpacked here."""
    t = settings.triton
    return [
        str(tritonserver_binary()),
        *server_args(settings, str(repository)),
        f"--backend-directory={backend_dir(settings)}",
        f"--http-address={t.host}",
        f"--grpc-address={t.host}",
        f"--metrics-address={t.host}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        "--log-info=true",
    ]


def ports(settings: Settings) -> dict[str, int]:
    t = settings.triton
    return {"http": t.http_port, "grpc": t.grpc_port, "metrics": t.metrics_port}


def model_present(settings: Settings) -> bool:
    return (repository_path(settings) / settings.triton.model_name / "config.pbtxt").is_file()


def start_triton(settings: Settings) -> ServiceRecord:
    repository = repository_path(settings)
    if not model_present(settings):
        raise ServiceError(
            f"no model {settings.triton.model_name!r} in {repository}; "
            "run `freshlabel teacher export --model DIR --repo "
            f"{repository} --version 1` (or set FRESHLABEL_TEACHER__MODEL_DIR)"
        )
    return start(
        SERVICE,
        server_argv(settings, repository),
        settings.log_dir / "triton.log",
        ports(settings),
        env=server_env(),
        cwd=run_dir(settings),
    )


def run_dir(settings: Settings) -> Path:
    """An empty working folder: the python stub puts its cwd on sys.path, so anything
    there could shadow a real package."""
    path = settings.state_dir / "triton_cwd"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _get_json(url: str, timeout_s: float) -> dict | None:
    try:
        with requests.get(url, timeout=timeout_s) as response:
            response.raise_for_status()
            body = response.content
            return json.loads(body) if body else {}
    except (requests.RequestException, OSError, ValueError):
        return None


def triton_ready(settings: Settings, timeout_s: float = 1.0) -> bool:
    """Server live and the teacher model loaded (HTTP /v2/models/<name>/ready = 200)."""
    t = settings.triton
    base = f"http://{t.host}:{t.http_port}/v2"
    return _get_json(f"{base}/models/{t.model_name}/ready", timeout_s) is not None


def served_versions(settings: Settings, timeout_s: float = 1.0) -> list[str]:
    t = settings.triton
    meta = _get_json(f"http://{t.host}:{t.http_port}/v2/models/{t.model_name}", timeout_s)
    return list(meta.get("versions", [])) if meta else []


def wait_ready(settings: Settings, record: ServiceRecord) -> None:
    wait_until(
        record,
        lambda: triton_ready(settings),
        settings.triton.health_timeout_s,
        f"model {settings.triton.model_name!r} ready on :{settings.triton.http_port}",
    )


def enabled(settings: Settings) -> bool:
    """`freshlabel up` starts Triton only when a teacher is configured: a teacher directory
    (`teacher.model_dir`) or a repository that already holds the model. A remote Triton
    (`triton.url`) is never started here."""
    if settings.triton.url:
        return False
    return settings.teacher.model_dir is not None or model_present(settings)


PORT_ENV = {
    "triton http": "FRESHLABEL_TRITON__HTTP_PORT",
    "triton grpc": "FRESHLABEL_TRITON__GRPC_PORT",
    "triton metrics": "FRESHLABEL_TRITON__METRICS_PORT",
}


def ports_needed(settings: Settings) -> dict[str, int]:
    if not enabled(settings):
        return {}
    return {f"triton {name}": port for name, port in ports(settings).items()}


def health_detail(settings: Settings) -> str:
    versions = served_versions(settings)
    return (
        f"model {settings.triton.model_name!r} ready (versions {', '.join(versions) or '?'}) "
        f"at grpc {settings.triton.host}:{settings.triton.grpc_port}"
    )


def remote_ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    import tritonclient.grpc as grpcclient

    try:
        client = grpcclient.InferenceServerClient(url=settings.triton.url or "")
        return bool(client.is_model_ready(settings.triton.model_name, client_timeout=timeout_s))
    except Exception:
        return False
