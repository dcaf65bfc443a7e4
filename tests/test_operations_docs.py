"""The runbook's commands exist, and the catalog page names only pyiceberg's own properties.

docs/operations.md and docs/catalog.md are operated from, not read for pleasure: every
`freshlabel` command in their shell blocks (also through the toolbox aliases `fl` and `flj`)
must parse with the real command line, and every pyiceberg property docs/catalog.md puts in
a `properties:` block or its property table must be one pyiceberg 0.12 defines.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from freshlabel.cli import build_parser
from infra.config import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
ALIASES = ("freshlabel", "fl", "flj")


def _shell_lines(path: Path) -> list[str]:
    """Lines of the ```sh blocks, continuation lines joined."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S):
        lines += re.sub(r"\\\n\s*", " ", block).splitlines()
    return lines


def _commands(path: Path) -> list[list[str]]:
    """Each `freshlabel ...` (or alias) invocation, shell variables replaced by a word."""
    found = []
    for line in _shell_lines(path):
        line = line.split(" #", 1)[0].strip()
        line = re.sub(r"^\S+=\$\(|\)$", "", line)  # SP=$(flj jobs stop ... | tail -1)
        line = line.split(" | ", 1)[0]
        if line.split(" ", 1)[0] not in ALIASES or line.endswith("{"):
            continue  # another program, or the alias's own definition
        words = shlex.split(re.sub(r'"?\$\{?\w+\}?"?', "VALUE", line))
        found.append(words[1:])
    return found


@pytest.mark.parametrize("doc", ["operations.md", "catalog.md"])
def test_every_command_in_the_runbook_parses(doc: str) -> None:
    commands = _commands(DOCS / doc)
    assert commands, f"no freshlabel commands found in {doc}"
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs/{doc}: `freshlabel {' '.join(argv)}` does not parse")
    if doc == "operations.md":
        verbs = {" ".join(argv[:2]) for argv in commands}
        for needed in (
            "deploy render",
            "deploy validate",
            "jobs stop",
            "jobs deploy",
            "label backfill",
            "teacher export",
            "dlq replay",
            "up",
            "status",
        ):
            assert any(v.startswith(needed) for v in verbs), f"runbook lacks `{needed}`"


def _pyiceberg_properties() -> set[str]:
    """String constants of pyiceberg's catalog and FileIO modules (its property names)."""
    import pyiceberg.catalog as catalog
    import pyiceberg.catalog.rest as rest
    import pyiceberg.io as io

    names: set[str] = set()
    for module in (catalog, rest, io):
        names |= {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}
    return names


def test_catalog_page_names_only_pyiceberg_properties() -> None:
    text = (DOCS / "catalog.md").read_text()
    known = _pyiceberg_properties()
    used = set()
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        props = block.split("properties:", 1)[1] if "properties:" in block else ""
        used |= set(re.findall(r"^\s+([a-z0-9.\-]+):", props, flags=re.M))
    table = text.split("## Properties pyiceberg", 1)[1].split("\n## ", 1)[0]
    for cell in re.findall(r"^\| ([^|]+) \|", table, flags=re.M):
        used |= set(re.findall(r"`([a-z0-9.\-]+)`", cell)[:1])  # the first name is the key
    used = {p for p in used if not p.startswith("header.")}
    assert {"credential", "oauth2-server-uri", "scope", "token", "warehouse"} <= used
    assert used <= known, f"not pyiceberg 0.12 properties: {sorted(used - known)}"
