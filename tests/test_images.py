"""The production images (infra/images/*/Dockerfile) are built from the pins `make setup` uses.

No docker here, so nothing is built: these checks read the Dockerfiles. Every COPY source
exists and travels in the build context; each image installs from a requirements file with
its lock as constraints; every version or sha256 typed in a Dockerfile is the pinned one (the
Flink lock, pyproject's Python, the tritonserver the embedded stack runs, infra/artifacts.py).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from infra import artifacts
from infra.config import PROJECT_ROOT

IMAGES_DIR = PROJECT_ROOT / "infra" / "images"
IMAGES = ("flink", "platform", "triton")
# The image -> (requirements file, lock file) it installs from.
REQUIREMENTS = {
    "flink": ("requirements/flink.txt", "requirements/flink.lock"),
    "platform": ("requirements/platform.txt", "requirements/platform.lock"),
    "triton": (None, "requirements/platform.lock"),
}


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one Dockerfile, continuation lines joined."""
    text = (IMAGES_DIR / name / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _args(name: str) -> dict[str, str]:
    """ARG defaults (the first default of each name wins, as in a multi-stage build)."""
    found: dict[str, str] = {}
    for keyword, rest in _instructions(name):
        if keyword == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            found.setdefault(key.strip(), value.strip())
    return found


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def _lock(path: str) -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / path).read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def _dockerignored(path: str) -> bool:
    patterns = [
        ln.strip()
        for ln in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    parts = Path(path.rstrip("/")).parts
    return any(
        fnmatch.fnmatch("/".join(parts[: i + 1]), pattern.removeprefix("**/"))
        or fnmatch.fnmatch(parts[i], pattern.removeprefix("**/"))
        for pattern in patterns
        for i in range(len(parts))
    )


@pytest.mark.parametrize("image", IMAGES)
def test_copy_sources_exist_and_travel_in_the_context(image: str) -> None:
    copies = [rest for keyword, rest in _instructions(image) if keyword in ("COPY", "ADD")]
    assert copies, f"{image}: no COPY at all"
    for rest in copies:
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        if "--from=" in rest:
            continue  # from an earlier stage, not the build context
        for source in words[:-1]:
            assert (PROJECT_ROOT / source).exists(), f"{image}: COPY {source} is not in the repo"
            assert not _dockerignored(source), f"{image}: COPY {source} is in .dockerignore"


@pytest.mark.parametrize("image", IMAGES)
def test_installs_from_requirements_with_the_lock(image: str) -> None:
    requirements, lock = REQUIREMENTS[image]
    runs = " ".join(rest for keyword, rest in _instructions(image) if keyword == "RUN")
    if requirements:
        assert re.search(rf"-r {re.escape(requirements)} -c {re.escape(lock)}", runs), (
            f"{image}: installs without `-r {requirements} -c {lock}`"
        )
    else:
        # Triton: named packages, every version taken from the lock (as constraints).
        assert lock in runs and "-c /tmp/constraints.txt" in runs, f"{image}: not from {lock}"
    if image != "triton":
        assert "pip install --no-deps -e ." in runs, f"{image}: the project is not installed"


@pytest.mark.parametrize("image", IMAGES)
def test_no_version_or_digest_differs_from_the_pins(image: str) -> None:
    text = (IMAGES_DIR / image / "Dockerfile").read_text()
    pins = {**_lock("requirements/platform.lock"), **_lock("requirements/flink.lock")}
    for name, version in re.findall(r"([A-Za-z0-9_.\-\[\]]+)==([\w.+\-]+)", text):
        assert pins.get(name.lower()) == version, f"{image}: {name}=={version} is not the lock's"
    pinned_hashes = {h for a in artifacts.ARTIFACTS for h in (a.sha256, a.wheel_sha256)}
    for digest in re.findall(r"\b[0-9a-f]{64}\b", text):
        assert digest in pinned_hashes, f"{image}: sha256 {digest} is not in infra/artifacts.py"
    # Every ARG that carries a version is one this test checks against its source.
    checked = {"FLINK_VERSION", "PYTHON_VERSION", "TRITON_RELEASE"}
    for key, value in _args(image).items():
        if re.fullmatch(r"[\d.]+", value):
            assert key in checked, f"{image}: ARG {key}={value} is a version nothing checks"


def _python_version() -> str:
    """The one minor version pyproject allows (requires-python = ">=3.11,<3.12")."""
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    pins = re.search(r'requires-python = ">=(\d+\.\d+),<(\d+\.\d+)"', text)
    assert pins, "pyproject.toml has no requires-python range"
    low, high = pins.groups()
    assert int(high.split(".")[1]) == int(low.split(".")[1]) + 1, "pyproject allows >1 minor"
    return low


def test_base_images_run_the_pinned_versions() -> None:
    flink = _args("flink")
    assert flink["FLINK_VERSION"] == _lock("requirements/flink.lock")["apache-flink"]
    python = _python_version()
    for image in IMAGES:
        assert _args(image)["PYTHON_VERSION"] == python, f"{image}: not Python {python}"
    bases = {
        image: [
            _expand(rest.split()[0], _args(image))
            for k, rest in _instructions(image)
            if k == "FROM"
        ]
        for image in IMAGES
    }
    assert set(bases["flink"]) == {f"flink:{flink['FLINK_VERSION']}-java17"}
    assert set(bases["platform"]) == {f"python:{python}-slim"}
    release = _args("triton")["TRITON_RELEASE"]
    assert set(bases["triton"]) == {f"nvcr.io/nvidia/tritonserver:{release}-py3"}
    # `make images` passes the Flink version read from the same lock.
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "sed -n 's/^apache-flink==//p' requirements/flink.lock" in makefile
    for image in IMAGES:
        assert f"-f infra/images/{image}/Dockerfile" in makefile, f"make images skips {image}"


def _ngc_release(triton_version: str) -> str:
    """NVIDIA ships Triton 2.N as the monthly NGC release YY.MM, 2.30 = 23.01, one a month."""
    months = int(triton_version.split(".")[1]) - 30
    return f"{23 + months // 12}.{months % 12 + 1:02d}"


def test_triton_base_is_the_release_of_the_embedded_tritonserver(tmp_path: Path) -> None:
    try:
        from infra.triton import server_env, tritonserver_binary

        binary = tritonserver_binary()
    except Exception as exc:  # noqa: BLE001 - any missing piece means: not installed here
        pytest.skip(f"SKIPPED LOUDLY: no bundled tritonserver to read the version from: {exc}")
    # Without a repository or endpoints it prints its version table and exits (~1.5 s).
    result = subprocess.run(
        [
            str(binary),
            f"--model-repository={tmp_path / 'none'}",
            "--allow-http=false",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
        ],
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"server_version\s*\|\s*(\S+)", result.stdout + result.stderr)
    assert found, f"tritonserver printed no server_version:\n{result.stderr[-2000:]}"
    assert _args("triton")["TRITON_RELEASE"] == _ngc_release(found.group(1))
    assert _ngc_release("2.51.0") == "24.10" and _ngc_release("2.42.0") == "24.01"


def test_triton_stub_and_constraints_follow_the_lock() -> None:
    text = re.sub(r"\\\n", " ", (IMAGES_DIR / "triton" / "Dockerfile").read_text())
    sed = re.search(r"sed -E 's/(.+?)/(.+?)/' requirements/platform.lock", text)
    assert sed, "triton: the constraints are not derived from platform.lock"
    pattern, replacement = sed.group(1), sed.group(2).replace("\\1", r"\g<1>")
    lock = (PROJECT_ROOT / "requirements/platform.lock").read_text().splitlines()
    changed = [ln for ln in lock if re.sub(pattern, replacement, ln) != ln]
    assert [ln.split("==")[0] for ln in changed] == ["torch"], changed
    stub = "python_backend_stubs/${PYTHON_VERSION}/triton_python_backend_stub"
    assert stub in text
    try:
        import pytriton
    except ImportError:
        pytest.skip("SKIPPED LOUDLY: nvidia-pytriton is not installed to check the stub path")
    version = _args("triton")["PYTHON_VERSION"]
    shipped = (
        Path(pytriton.__file__).parent / "tritonserver" / _expand(stub, {"PYTHON_VERSION": version})
    )
    assert shipped.is_file(), f"{shipped} is not in nvidia-pytriton"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == version


def test_flink_image_uses_the_pinned_jars_and_the_matching_python_jar() -> None:
    text = re.sub(r"\\\n", " ", (IMAGES_DIR / "flink" / "Dockerfile").read_text())
    tools_dirs = set(re.findall(r"FRESHLABEL_TOOLS_DIR=(\S+)", text))
    assert len(tools_dirs) == 1, (
        f"flink: the jars are fetched to one place and read there: {tools_dirs}"
    )
    assert "-m infra.fetch_tools" in text, "flink: the jars do not come through infra.fetch_tools"
    assert f"{next(iter(tools_dirs))}/{artifacts.TANSU.name}" in text  # the broker is dropped
    jar = "/opt/flink/opt/flink-python-${FLINK_VERSION}.jar"
    assert jar in text
    shipped = sorted(
        (PROJECT_ROOT / ".venv-flink").glob(
            "lib/python3*/site-packages/pyflink/opt/flink-python-*.jar"
        )
    )
    if not shipped:
        pytest.skip("SKIPPED LOUDLY: no .venv-flink to check the flink-python jar name")
    assert shipped[0].name == Path(_expand(jar, _args("flink"))).name
