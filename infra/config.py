"""The one configuration object of the platform.

Every component reads `Settings`; values come, highest priority first, from keyword
arguments, `FRESHLABEL_*` environment variables (nested with `__`, e.g.
`FRESHLABEL_BROKER__PORT=29092`), the YAML file named by `FRESHLABEL_CONFIG`, then the
defaults below, which describe the embedded single-machine stack.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "FRESHLABEL_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Topics that carry events, with the schemas/ model each one holds.
EVENT_TOPICS = ("impressions", "pin_content", "pin_captions", "board_saves", "engagements")
DERIVED_TOPICS = ("impressions.enriched", "labels")


class BrokerSettings(BaseModel):
    """Kafka: the embedded Tansu broker, or an external cluster by `bootstrap_servers`."""

    host: str = "127.0.0.1"
    port: int = 19092
    # Set to point every client at an external Kafka cluster; the embedded broker is
    # then not started by `freshlabel up`.
    bootstrap_servers: str | None = None
    # Extra kafka-python client options (security_protocol, sasl_*, ssl_*) for production.
    client_options: dict[str, Any] = Field(default_factory=dict)
    durable: bool = False
    cluster_id: str = "freshlabel"
    health_timeout_s: float = 30.0

    @property
    def embedded(self) -> bool:
        return self.bootstrap_servers is None

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"localhost:{self.port}"


class ObjectStoreSettings(BaseModel):
    """SeaweedFS (`weed mini`) as the S3 store behind the durable broker."""

    host: str = "127.0.0.1"
    s3_port: int = 18333
    master_port: int = 19333
    volume_port: int = 18080
    filer_port: int = 18888
    bucket: str = "tansu"
    access_key: str = "freshlabel"
    secret_key: str = "freshlabel-secret"
    region: str = "us-east-1"
    health_timeout_s: float = 60.0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"


class TopicSettings(BaseModel):
    default_partitions: int = 4
    partitions: dict[str, int] = Field(
        default_factory=lambda: {"pin_content": 2, "pin_captions": 2, "board_saves": 2}
    )
    dlq_partitions: int = 1
    replication_factor: int = 1

    def partitions_for(self, topic: str) -> int:
        if topic.endswith(".dlq"):
            return self.dlq_partitions
        return self.partitions.get(topic, self.default_partitions)

    @property
    def all_topics(self) -> list[str]:
        topics = [*EVENT_TOPICS, *DERIVED_TOPICS]
        return topics + [f"{t}.dlq" for t in topics]


class CatalogSettings(BaseModel):
    """Iceberg catalog: SQLite file by default; a Postgres URI or a REST catalog by config."""

    name: str = "freshlabel"
    type: Literal["sql", "rest"] = "sql"
    # sql: a SQLAlchemy URI (sqlite:///..., postgresql+psycopg2://...); rest: the catalog URL.
    uri: str | None = None
    # file:// path or s3:// bucket; defaults to `<state_dir>/warehouse`.
    warehouse: str | None = None
    namespace: str = "freshlabel"
    # Passed through to pyiceberg (s3.endpoint, s3.access-key-id, credential, token, ...).
    properties: dict[str, str] = Field(default_factory=dict)


class DecodeSettings(BaseModel):
    """Limits of the shared decode step; anything over them goes to the DLQ."""

    max_record_bytes: int = 1_000_000
    max_text_bytes: int = 16_384


class SinkSettings(BaseModel):
    """Iceberg sink batching. Large commits: 200k-row commits ran ~5x faster than 10k here."""

    batch_rows: int = 100_000
    batch_seconds: float = 60.0


class GeneratorSettings(BaseModel):
    """The synthetic search world (`freshlabel generate`)."""

    seed: int = 7
    impressions: int = 20_000
    # Events per second written to Kafka; 0 writes as fast as the broker takes them.
    rate: float = 0.0
    sim_days: int = 56
    pins: int = 3_000
    users: int = 2_000
    queries_file: Path | None = PROJECT_ROOT.parent / "shared" / "data" / "wands" / "query.csv"
    # Hidden ground truth (relevance, feature history); defaults to <state_dir>/world/.
    truth_dir: Path | None = None


class FlinkSettings(BaseModel):
    """The enrichment job and the embedded Flink cluster that runs it."""

    rest_port: int = 18081
    parallelism: int = 1
    checkpoint_interval_s: float = 10.0
    # A topic partition with no data holds the watermark back without this.
    source_idle_timeout_s: float = 2.0
    watermark_delay_s: float = 5.0
    # Records later than this behind the watermark are late: counted and sent to the DLQ.
    allowed_lateness_s: float = 60.0
    top_queries_window_days: int = 30
    top_queries_slide_hours: int = 24
    top_queries_k: int = 5
    top_boards_k: int = 5
    health_timeout_s: float = 90.0


class TritonSettings(BaseModel):
    """The teacher's Triton Inference Server: embedded (bundled tritonserver) or remote."""

    host: str = "127.0.0.1"
    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    # Set to use a remote Triton (host:port of its gRPC endpoint); nothing is started then.
    url: str | None = None
    model_name: str = "teacher"
    # Model repository served by the embedded server; defaults to <state_dir>/triton-repo.
    repository: Path | None = None
    health_timeout_s: float = 120.0
    request_timeout_s: float = 30.0
    max_in_flight: int = 64


class TeacherSettings(BaseModel):
    """Where trained teachers live and how their input text is built."""

    # A trained teacher directory; `freshlabel up` serves it when set and exported.
    model_dir: Path | None = None
    max_length: int = 192


class QualitySettings(BaseModel):
    """Data-quality checks run by the sink on every batch, and where alerts go."""

    enabled: bool = True
    alerts_topic: str = "dq.alerts"
    webhook_url: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRESHLABEL_", env_nested_delimiter="__", extra="forbid"
    )

    profile: str = "embedded"
    # Runtime state (PID files, logs, catalog, warehouse) and unpacked binaries/jars.
    state_dir: Path = PROJECT_ROOT / ".freshlabel"
    tools_dir: Path = PROJECT_ROOT / ".tools"
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    flink: FlinkSettings = Field(default_factory=FlinkSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = os.environ.get(CONFIG_ENV)
        if yaml_path:
            if not Path(yaml_path).is_file():
                raise FileNotFoundError(
                    f"{CONFIG_ENV}={yaml_path} does not name a file; "
                    "point it at a YAML config (see infra/profiles/) or unset it"
                )
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        self.state_dir = self.state_dir.expanduser().resolve()
        self.tools_dir = self.tools_dir.expanduser().resolve()
        return self

    @property
    def catalog_uri(self) -> str:
        return self.catalog.uri or f"sqlite:///{self.state_dir / 'catalog.db'}"

    @property
    def warehouse(self) -> str:
        return self.catalog.warehouse or (self.state_dir / "warehouse").as_uri()

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
