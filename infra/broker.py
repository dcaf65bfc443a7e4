"""The embedded Kafka-compatible broker (Tansu), in memory or on S3 (durable)."""

from __future__ import annotations

import os

from kafka import KafkaAdminClient

from infra.artifacts import TANSU, require
from infra.config import Settings
from infra.process import ServiceRecord, start

# Tansu reads these from the environment; a stray value would silently override our flags.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")


def start_broker(settings: Settings) -> ServiceRecord:
    b = settings.broker
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    if b.durable:
        store = settings.object_store
        storage = f"s3://{store.bucket}/"
        env.update(
            AWS_ENDPOINT=store.endpoint,
            AWS_ALLOW_HTTP="true",
            AWS_ACCESS_KEY_ID=store.access_key,
            AWS_SECRET_ACCESS_KEY=store.secret_key,
            AWS_DEFAULT_REGION=store.region,
        )
    else:
        storage = "memory://tansu/"
    argv = [
        str(require(settings.tools_dir, TANSU)),
        "broker",
        "--cluster-id",
        b.cluster_id,
        "--listener-url",
        f"tcp://{b.host}:{b.port}",
        "--advertised-listener-url",
        f"tcp://localhost:{b.port}",
        "--storage-engine",
        storage,
    ]
    return start("broker", argv, settings.log_dir / "broker.log", {"kafka": b.port}, env=env)


def broker_healthy(settings: Settings, timeout_s: float = 3.0) -> bool:
    """The broker answers a metadata request (an open port alone is not enough)."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.broker.bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            **settings.broker.client_options,
        )
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()
