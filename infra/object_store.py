"""SeaweedFS (`weed mini`): the local S3 store under the durable broker."""

from __future__ import annotations

import json

import requests

from infra.artifacts import venv_bin
from infra.config import Settings
from infra.process import ServiceRecord, start


def _s3_config(settings: Settings) -> dict[str, object]:
    store = settings.object_store
    return {
        "identities": [
            {
                "name": "freshlabel",
                "credentials": [{"accessKey": store.access_key, "secretKey": store.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def start_object_store(settings: Settings) -> ServiceRecord:
    store = settings.object_store
    data_dir = settings.state_dir / "seaweedfs"
    data_dir.mkdir(parents=True, exist_ok=True)
    s3_config = settings.state_dir / "seaweedfs-s3.json"
    s3_config.write_text(json.dumps(_s3_config(settings)))
    ports = {
        "s3": store.s3_port,
        "master": store.master_port,
        "volume": store.volume_port,
        "filer": store.filer_port,
    }
    argv = [
        str(venv_bin("weed")),
        "mini",
        f"-dir={data_dir}",
        f"-ip={store.host}",
        f"-ip.bind={store.host}",
        f"-bucket={store.bucket}",
        f"-s3.port={store.s3_port}",
        f"-s3.config={s3_config}",
        f"-master.port={store.master_port}",
        f"-volume.port={store.volume_port}",
        f"-filer.port={store.filer_port}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
    ]
    return start("object_store", argv, settings.log_dir / "object_store.log", ports)


def object_store_healthy(settings: Settings, timeout_s: float = 2.0) -> bool:
    url = f"{settings.object_store.endpoint}/healthz"
    try:
        with requests.get(url, timeout=timeout_s) as response:
            return bool(response.status_code == 200)
    except Exception:
        return False
