"""The one configuration object of the platform.

Every component reads `Settings`; values come, highest priority first, from keyword
arguments, `FRESHLABEL_*` environment variables (nested with `__`, e.g.
`FRESHLABEL_BROKER__PORT=29092`), the YAML file named by `FRESHLABEL_CONFIG`, then the
defaults below, which describe the embedded single-machine stack.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator
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
# Data-quality alerts (quality/alerts.py); the default of `quality.alerts_topic`.
DQ_ALERTS_TOPIC = "dq.alerts"


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


# Topics a Flink window reads, with the FlinkSettings window (days) and slide (hours) of it:
# their retention must cover that window, so a restore or a fresh deploy can refill it.
WINDOWED_TOPICS: dict[str, tuple[str, str]] = {
    "board_saves": ("top_boards_window_days", "top_boards_slide_hours"),
    "engagements": ("top_queries_window_days", "top_queries_slide_hours"),
}


class TopicSettings(BaseModel):
    default_partitions: int = 4
    partitions: dict[str, int] = Field(
        default_factory=lambda: {"pin_content": 2, "pin_captions": 2, "board_saves": 2}
    )
    dlq_partitions: int = 1
    replication_factor: int = 1
    # Changelogs keyed by pin: compacted, so the latest version of every pin is kept
    # forever and a fresh deploy still finds it after the delete retention has passed.
    compacted: list[str] = Field(default_factory=lambda: ["pin_content", "pin_captions"])
    # Retention (days) of every topic that is neither compacted nor windowed, unless
    # `retention_days` names it.
    default_retention_days: float = Field(default=7.0, gt=0)
    retention_days: dict[str, float] = Field(default_factory=dict)
    # Windowed topics keep their window (plus one slide) plus this margin: time to restore
    # a job or replay a window before the oldest records of it are deleted.
    window_margin_days: float = Field(default=2.0, ge=0)

    def partitions_for(self, topic: str) -> int:
        if topic.endswith(".dlq"):
            return self.dlq_partitions
        return self.partitions.get(topic, self.default_partitions)

    @property
    def all_topics(self) -> list[str]:
        topics = [*EVENT_TOPICS, *DERIVED_TOPICS]
        return topics + [f"{t}.dlq" for t in topics] + [DQ_ALERTS_TOPIC]


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
    # An event time further ahead of the wall clock than this is refused (reason
    # event_time_out_of_range): it would drag every watermark and day partition with it.
    max_future_s: float = Field(default=300.0, ge=0)
    # An event time older than this many days is refused the same way (a 1970 default
    # value, a client with a dead clock). Replays of older history raise it.
    max_age_days: float = Field(default=400.0, gt=0)
    # Largest dead letter (JSON, original bytes base64-encoded) sent to a DLQ topic; a
    # bigger one keeps a prefix of the value plus its size and SHA-256. Stays below the
    # producer's max_request_size (1 MiB by default; the writer also caps it by that).
    max_dead_letter_bytes: int = Field(default=900_000, ge=16_384)


class SinkSettings(BaseModel):
    """Iceberg sink batching. Large commits: 200k-row commits ran ~5x faster than 10k here."""

    batch_rows: int = 100_000
    batch_seconds: float = 60.0
    # Prometheus metrics of a sink process on this port (one port per process, so set it per
    # `sink run`), with /healthz and /readyz beside /metrics; 0 disables the endpoint.
    metrics_port: int = 0
    # Address the metrics endpoint binds: loopback here, 0.0.0.0 in a pod (production).
    metrics_host: str = "127.0.0.1"
    # /healthz answers 503 once the sink's loop has not turned for this long (a wedged
    # process); above the longest commit, gate and reconnect pause it can take.
    liveness_timeout_s: float = Field(default=300.0, gt=0)
    # Who reads which partition. "group": the Kafka consumer group splits them between sink
    # processes. "static": worker `worker_index` of `workers` takes every partition p with
    # p % workers == worker_index and never joins a group (for brokers whose group
    # coordinator cannot be trusted); the Iceberg ledger keeps an overlap exactly once.
    assignment: Literal["group", "static"] = "group"
    worker_index: int = Field(default=0, ge=0)
    workers: int = Field(default=1, ge=1)
    # Seconds to wait for the group to finish a join; then the sink rejoins as a fresh
    # member, and after `join_attempts` such joins stops, naming the stuck group.
    join_timeout_s: float = Field(default=30.0, gt=0)
    join_attempts: int = Field(default=3, ge=1)
    # Then: "static" reads every partition without the group (correct, since the ledger
    # fences writers, but each such process reads everything); "fail" stops the sink.
    on_stuck_group: Literal["static", "fail"] = "static"
    # Seconds the broker may stay unreachable while the sink reconnects with backoff.
    reconnect_timeout_s: float = Field(default=300.0, gt=0)
    # Commit conflicts with other writers: each retry re-reads the ledger first.
    commit_attempts: int = Field(default=30, ge=1)
    # A record whose event key is already in the table within this many days of its
    # dedupe time (`dedupe_time_field`) is a duplicate and kept once.
    dedupe_horizon_days: float = Field(default=7.0, gt=0)
    # Memory of the key index (16 bytes a key); older days are re-read when needed.
    dedupe_max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # Decode whole polls with the bulk fast path (streams/fast_decode.py: the same rows and
    # dead letters as the strict model, ~5x less CPU); false judges every record strictly.
    fast_decode: bool = True


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
    # Simulated clock: day 0 of the run. Oct 1 spans Halloween, Thanksgiving and the run-up
    # to Christmas in the default 56 days, so seasonal queries rise and fall.
    start: datetime = datetime(2026, 10, 1, tzinfo=UTC)
    # Pins shown per request at most (positions 1..page_size; a request shows half to all).
    page_size: int = Field(default=10, ge=1)
    # Share of impressions, engagements and board saves delivered late: produced
    # `late_by_s` (x0.5..1.5) after their event time, to exercise late-record handling.
    late_share: float = Field(default=0.0, ge=0.0, le=1.0)
    late_by_s: float = Field(default=3600.0, gt=0.0)
    # Rows of the labeled sample (`freshlabel generate --labeled-sample PATH`).
    sample_rows: int = Field(default=5_000, ge=1)


class FlinkSettings(BaseModel):
    """The enrichment job and the embedded Flink cluster that runs it (docs/enrichment.md)."""

    # `freshlabel up` starts the embedded cluster only when enabled: two JVMs cost ~1.5 GB
    # and several seconds, which stacks that never run a Flink job should not pay.
    enabled: bool = False
    host: str = "127.0.0.1"
    rest_port: int = 18081
    jobmanager_rpc_port: int = 16123
    task_slots: int = 2
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "1728m"
    # The virtual environment whose apache-flink package provides FLINK_HOME and the
    # interpreter that submits jobs (PyFlink pins pyarrow<17, so it lives apart).
    venv: Path = PROJECT_ROOT / ".venv-flink"
    parallelism: int = 1
    checkpoint_interval_s: float = 10.0
    # A topic partition with no data holds the watermark back without this. Wall-clock
    # time: long enough that a partition whose records wait in a slow fetch (a starved
    # machine, a busy broker) is never taken for idle, since its records would then be
    # late; each quiet partition holds the watermark back this long after its last record.
    # A finite replay does not wait for it: its end is flushed by clock marks written into
    # every partition (streams/enrich/clock.py).
    source_idle_timeout_s: float = 30.0
    # Partitions ahead of the slowest by more than this are paused (0: off). Bounds the
    # state a backlog builds up, at some throughput cost.
    alignment_max_drift_s: float = 0.0
    # Small fetches interleave partitions finely, so none waits long behind the others.
    fetch_partition_bytes: int = 64 * 1024
    watermark_delay_s: float = 5.0
    # Records later than this behind the watermark are late: counted and sent to the DLQ.
    # The join emits an impression once the watermark minus this passes it (the output is
    # append-only, so results cannot be corrected later): latency = delay + lateness.
    allowed_lateness_s: float = 60.0
    top_queries_window_days: int = 30
    top_queries_slide_hours: int = 24
    top_queries_k: int = 5
    top_boards_window_days: int = 30
    top_boards_slide_hours: int = 24
    top_boards_k: int = 5
    job_name: str = "freshlabel-enrich"
    consumer_group: str = "freshlabel-enrich"
    # Records {"event_time": T} here move the job's event-time clock to T when every other
    # topic is idle: how a finite replay flushes its last impressions (docs/enrichment.md).
    clock_topic: str = "enrich.clock"
    health_timeout_s: float = 90.0
    submit_timeout_s: float = 180.0
    savepoint_timeout_s: float = 120.0
    # Where keyed state lives: "rocksdb" (on disk, incremental checkpoints; memory bounded
    # by managed memory) or "hashmap" (on the JVM heap). docs/enrichment.md, "State".
    state_backend: Literal["rocksdb", "hashmap"] = "rocksdb"
    incremental_checkpoints: bool = True
    # Share of the TaskManager's memory given to RocksDB (block cache and write buffers).
    # At 0.3 the job's ~20 RocksDB instances starved (write stalls; the 20k-impression e2e
    # emitted nothing for 30 s); 0.5 leaves ~250 MB of task heap in the default 1728m.
    managed_memory_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    # A pin with neither an impression nor a change for this long (wall-clock days) has
    # its stored versions dropped (state TTL); 0 keeps them forever. The TTL the job uses is
    # the larger of this and the longest feature window plus one slide, so windowed state
    # never expires while it can still be shown.
    version_ttl_days: float = Field(default=90.0, ge=0.0)


Runtime = Literal["torch", "onnx"]
Quantize = Literal["none", "int8"]
GpuPrecision = Literal["fp32", "fp16"]


class TritonModelSettings(BaseModel):
    """The served teacher model as `teacher export` writes it into config.pbtxt: its name,
    dynamic batching, instances and numerics. `TritonSettings` (what the platform serves)
    and `ExportOptions` (serving/teacher/export.py) are both this, plus their own fields."""

    model_name: str = "teacher"
    max_batch_size: int = 64
    max_queue_delay_us: int = 5000
    # Two single-threaded CPU instances, one per core: the int8 teacher runs pair by pair
    # (small ops that a second intra-op thread does not speed up), so one instance with
    # two threads used 0.85 cores for 58 pairs/s, two instances 1.5-1.7 cores for 132-139
    # (docs/benchmarks.md, teacher runtimes).
    cpu_instances: int = 2
    gpu_instances: int = 1
    # Intra-op threads per model instance (torch's and onnxruntime's); 0: one per core.
    model_threads: int = 1
    # CPU instances' inference runtime: "onnx" (onnxruntime, graphs exported from the
    # teacher's weights by `teacher export`) or "torch" (eager PyTorch). GPU: always torch.
    runtime: Runtime = "onnx"
    # "int8": dynamic int8 quantization of the encoders on CPU instances, "none": fp32.
    # int8 is the default: with the onnx runtime its 3-fold CV is within 0.003 of fp32 in
    # nDCG@10 / QWK (docs/teacher.md) at twice the speed (docs/benchmarks.md).
    quantize: Quantize = "int8"
    # GPU instances' precision ("fp16": half the memory traffic; measure it with
    # benchmarks/gpu_check.sh before choosing it, as int8 was measured on CPU).
    gpu_precision: GpuPrecision = "fp32"


class TritonSettings(TritonModelSettings):
    """The teacher's Triton Inference Server: embedded (bundled tritonserver) or remote,
    serving the model `TritonModelSettings` describes."""

    host: str = "127.0.0.1"
    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    # Set to use a remote Triton (host:port of its gRPC endpoint); nothing is started then.
    url: str | None = None
    # Model repository served by the embedded server; defaults to <state_dir>/triton-repo.
    repository: Path | None = None
    health_timeout_s: float = 120.0
    request_timeout_s: float = 30.0
    max_in_flight: int = 64
    # Client retries of UNAVAILABLE / DEADLINE_EXCEEDED, with exponential backoff.
    retries: int = 3
    retry_backoff_s: float = 0.2
    # Seconds Triton waits for in-flight requests when stopped.
    exit_timeout_s: float = 10.0
    # `configs/<name>.pbtxt` of the model to serve instead of config.pbtxt ("gpu" in
    # production: `freshlabel teacher export` writes both).
    model_config_name: str | None = None
    # Seconds between scans of the repository for new versions (a roll without restart:
    # export version N+1 and Triton swaps it in); 0 loads the repository once at start.
    repository_poll_s: int = 0


class TeacherRecipe(BaseModel):
    """How a teacher is trained and what it reads: the fields `settings.teacher` sets and
    `TrainConfig` (serving/teacher/train.py) starts from, defined once here."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 8e-5
    max_length: int = 128
    val_fraction: float = 0.2
    patience: int = 1
    seed: int = 13
    # Top encoder layers fine-tuned; the frozen rest is MiniLM's, its output computed once
    # and cached (CPU). `trainable_layers` >= `cross_encoder_layers` fine-tunes everything.
    trainable_layers: int = 3
    # Cross-encoder layers kept from MiniLM's 6, bottom first: 4 score a pair at 53% of
    # the previous recipe's token-layers (with the bi-encoder's view below) at the same
    # CV quality (docs/teacher.md, "Send what you use").
    cross_encoder_layers: int = Field(default=4, ge=1, le=6)
    infer_batch_size: int = 64
    # The bi-encoder reads the pin text with these word budgets ({field: words}; 0 drops
    # the field): its zero-shot cosine ranks as well from the title and the description's
    # first words, at a third of the tokens (docs/teacher.md, "Send what you use").
    bi_encoder_budgets: dict[str, int] = Field(default_factory=lambda: {"description": 8})
    # Fields whose English stop words (the description's "the", "with", "your"...) the
    # cross-encoder does not read: the same CV quality from 17% fewer tokens a pair ([]
    # reads every word; docs/teacher.md, "Send what you use").
    cross_encoder_stopword_fields: list[str] = Field(default_factory=lambda: ["description"])


class TeacherSettings(TeacherRecipe):
    """Where trained teachers live, and the recipe (`TeacherRecipe`) they are trained with."""

    # A trained teacher directory; `freshlabel up` serves it when set (exporting it into
    # the Triton repository as version 1 if the repository has no version yet).
    model_dir: Path | None = None
    # Where `make teacher` puts the real-data teacher.
    teachers_dir: Path = PROJECT_ROOT / ".freshlabel" / "teachers"


Severity = Literal["critical", "warning"]


class CheckRule(BaseModel):
    """One data-quality check of one table: its threshold and how bad a failure is.

    critical: the offending rows go to `<table>_quarantine` (never dropped), the rest of
    the batch commits; warning: everything commits and an alert goes out. Units of
    `min`/`max` depend on the check (docs/quality.md lists them).
    """

    severity: Severity = "warning"
    enabled: bool = True
    min: float | None = None
    max: float | None = None
    # Allowed values: countries, locales, label scales, score formulas.
    values: list[str] | None = None
    # Columns the check covers (required keys, text lengths, the time column of a lag).
    columns: list[str] | None = None
    # Batch-level statistics are judged only on batches with at least this many rows.
    min_rows: int = 1


# Per table, per check (infra/quality_checks.yaml). A partial override (YAML or
# FRESHLABEL_QUALITY__TABLES__...) is merged over these, so one threshold can change without
# restating the rest.
DEFAULT_CHECKS: dict[str, dict[str, dict[str, Any]]] = yaml.safe_load(
    Path(__file__).with_name("quality_checks.yaml").read_text(encoding="utf-8")
)["tables"]


def _merged_checks(
    override: dict[str, dict[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {
        table: {check: dict(rule) for check, rule in checks.items()}
        for table, checks in DEFAULT_CHECKS.items()
    }
    for table, checks in (override or {}).items():
        for check, rule in (checks or {}).items():
            given = rule.model_dump(exclude_unset=True) if isinstance(rule, BaseModel) else rule
            merged.setdefault(table, {}).setdefault(check, {}).update(given or {})
    return merged


class LabelerSettings(BaseModel):
    """The continuous labeler: enriched impressions -> teacher -> `labels` topic."""

    group_id: str = "freshlabel-labeler"
    # Rows taken per poll and scored together (the client splits them into Triton requests).
    batch_rows: int = 2_000
    request_rows: int = 64
    # Requests on the wire at once. More than Triton can batch only queues on the server,
    # where a deadline can expire; a CPU teacher is saturated by a few.
    max_in_flight: int = 4
    # Cache misses scored per step: each step's scores are cached before the next, so a
    # retry after an outage or a timeout resumes instead of starting the batch over.
    score_chunk_rows: int = 256
    cache_memory_items: int = 200_000
    # Prometheus metrics on this port, with /healthz and /readyz beside /metrics; 0 disables
    # the endpoint.
    metrics_port: int = 0
    # Address the metrics endpoint binds: loopback here, 0.0.0.0 in a pod (production).
    metrics_host: str = "127.0.0.1"
    # /healthz answers 503 once the labeler's loop has not turned for this long; above the
    # longest teacher call (`triton.request_timeout_s` times its retries) it can wait on.
    liveness_timeout_s: float = Field(default=300.0, gt=0)
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    # How long the broker may be away (connect, publish) before the labeler gives up.
    broker_wait_s: float = 120.0
    # A member without an assignment for this long (polling) rejoins as a fresh member, at
    # most `rejoins` times; then the labeler stops with the cause (a stuck group).
    join_timeout_s: float = 30.0
    rejoins: int = 2
    # Triton priority level of each class of traffic: the exported model's dynamic batcher
    # has two levels and dequeues level 1 first, so live labels overtake a backfill in
    # Triton's queue. 0 sends requests at the model's default level.
    live_priority: int = Field(default=1, ge=0)
    backfill_priority: int = Field(default=2, ge=0)
    # Rows a backfill scores and publishes per step; a stop request (SIGTERM) ends it after
    # the step in progress, so a step is kept short even at a backfill's low priority. Its
    # labels go to the broker in one burst per step, ahead of live labels in the queue of
    # the same partitions: small steps keep those bursts short.
    backfill_batch_rows: int = Field(default=128, ge=1)
    # A backfill's requests: Triton cannot interrupt a running batch, so a live request
    # arriving while a backfill batch runs waits for it, and the batcher fills the live
    # batch up with queued backfill requests; small backfill requests, one on the wire,
    # bound both to backfill_request_rows * backfill_max_in_flight pairs (about 0.1 s on a
    # CPU teacher). Per pair, small CPU batches cost about what large ones do.
    backfill_request_rows: int = Field(default=2, ge=1)
    backfill_max_in_flight: int = Field(default=1, ge=1)
    # Most bytes one fetch takes from a partition (kafka-python max_partition_fetch_bytes).
    # A partition with fetched records still buffered is not fetched again, so its high
    # watermark, and the lag reported from it, is as old as that buffer: a small fetch
    # keeps the reported lag fresh (and the buffered bytes, part of the memory bound, low).
    # The embedded Tansu broker ignores this cap (it returned 40 KB against 8 KB).
    fetch_partition_bytes: int = Field(default=262_144, ge=1024)
    # Metrics endpoint of a running `label backfill` (a job); 0 disables it.
    backfill_metrics_port: int = 0
    # The drift signal (serving/labeler/drift.py): a student directory (`freshlabel student
    # train --out`) whose labels the live labeler compares with the teacher's on every
    # labeled row; None: off. The served teacher then also returns its embeddings.
    student_dir: Path | None = None
    # Compared rows per language / query family in the sliding window of the rate.
    drift_window_rows: int = Field(default=2_000, ge=1)
    # A group with fewer compared rows in its window is reported, never alerted on.
    drift_min_rows: int = Field(default=200, ge=1)
    # A group whose disagreement rate rises past this alerts (quality alert path).
    drift_alert_rate: float = Field(default=0.35, gt=0, lt=1)
    # The search product's query taxonomy: a parquet/CSV file of `query`, `family`
    # (queries it does not name: "unknown"); None: no per-family rates.
    query_families: Path | None = None


class QualitySettings(BaseModel):
    """Data-quality checks run by the sink on every batch, and where alerts go."""

    enabled: bool = True
    alerts_topic: str = DQ_ALERTS_TOPIC
    # Slack-compatible incoming webhook; unset sends alerts to the topic and the log only.
    webhook_url: str | None = None
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 3
    webhook_backoff_s: float = 0.5
    # A check that keeps failing alerts again at most once per this many seconds; the
    # repeats in between are counted into that alert (and into the recovery message).
    alert_repeat_s: float = 900.0
    # Offending rows named (partition, offset, key) in one alert.
    alert_sample_rows: int = 5
    # The reference window of distribution checks: the table's last N batches within
    # `reference_hours`; the checks start once it holds `reference_min_batches`.
    reference_batches: int = 24
    reference_hours: float = 24.0
    reference_min_batches: int = 3
    # Width of the event-time windows the volume check counts rows in.
    volume_window_s: float = 60.0
    tables: dict[str, dict[str, CheckRule]] = Field(
        default_factory=lambda: {
            t: {c: CheckRule(**r) for c, r in checks.items()}
            for t, checks in DEFAULT_CHECKS.items()
        }
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_table_checks(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tables" in data:
            data = {**data, "tables": _merged_checks(data["tables"])}
        return data

    def rules_for(self, table: str) -> dict[str, CheckRule]:
        """The enabled checks of `table` (empty for a table without a suite)."""
        return {c: r for c, r in self.tables.get(table, {}).items() if r.enabled}


# The demo's world: what it sets over `settings.generator` (a smaller world of its own
# seed; freshlabel/demo.py sets `start` and `truth_dir` itself).
DEMO_WORLD: dict[str, Any] = {"seed": 11, "impressions": 6_000, "sim_days": 28}


class DemoSettings(BaseModel):
    """`make demo`: a seeded world replayed through the whole platform.

    Its world is `settings.generator` with `generator` set over it: GeneratorSettings fields,
    defined and validated there, given in this section by name (`demo.impressions`,
    `FRESHLABEL_DEMO__IMPRESSIONS`) or under `demo.generator`, over `DEMO_WORLD`.
    """

    generator: dict[str, Any] = Field(default_factory=lambda: dict(DEMO_WORLD))
    # Without a configured teacher the demo trains a quick one on a labeled sample of
    # another seed's world (a stand-in for human judgements).
    quick_teacher_rows: int = 1_500
    quick_teacher_epochs: int = 2
    # The small student run at the end: trained on this share of the labeled impressions
    # (the oldest), evaluated on the rest; its training set is written to this table.
    student_train_share: float = Field(default=0.7, gt=0, lt=1)
    student_table: str = "students_demo"
    # The demo stops each worker once everything upstream of it is through; a stage that
    # makes no progress for this many seconds is stopped where it is (the report shows what
    # is missing).
    stall_timeout_s: float = Field(default=300.0, gt=0)
    timeout_s: float = 1_800.0

    @model_validator(mode="before")
    @classmethod
    def _world_by_name(cls, data: Any) -> Any:
        """`demo.<generator field>` and `demo.generator`, merged over `DEMO_WORLD`."""
        if not isinstance(data, dict):
            return data
        named = {k: v for k, v in data.items() if k in GeneratorSettings.model_fields}
        if not named and "generator" not in data:
            return data
        rest = {k: v for k, v in data.items() if k not in named}
        return {**rest, "generator": {**DEMO_WORLD, **(data.get("generator") or {}), **named}}

    @field_validator("generator")
    @classmethod
    def _generator_fields(cls, world: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(world) - set(GeneratorSettings.model_fields))
        if unknown:
            raise ValueError(f"{unknown} are not generator settings (GeneratorSettings)")
        return GeneratorSettings.model_validate(world).model_dump(include=set(world))

    def world(self, generator: GeneratorSettings) -> GeneratorSettings:
        """The demo's generator settings.

        Args:
            generator: the platform's (`settings.generator`).

        Returns:
            `generator` with this section's `generator` values set over it.
        """
        return GeneratorSettings.model_validate({**generator.model_dump(), **self.generator})


class MonitoringSettings(BaseModel):
    """Thresholds of the production alerts (freshlabel/deploy/monitoring.py, docs/monitoring.md).

    Rates are per second, averaged over `rate_window_s`; each alert fires once its
    condition has held for `for_s` (the worker-down alert: `down_for_s`).
    """

    # Event time to row visible in Iceberg, at `freshness_quantile`, per table.
    freshness_sla_s: float = Field(default=600.0, gt=0)
    freshness_quantile: float = Field(default=0.95, gt=0, lt=1)
    # Consumer lag alerts when it grew over this window and stands above `lag_min_records`.
    lag_growth_window_s: float = Field(default=900.0, gt=0)
    lag_min_records: int = Field(default=10_000, ge=0)
    # Dead letters (all DLQs) and quarantined rows per second.
    dlq_rate_per_s: float = Field(default=1.0, ge=0)
    quarantine_rate_per_s: float = Field(default=1.0, ge=0)
    # Failed teacher calls per second, and the p95 of one teacher batch call.
    teacher_error_rate_per_s: float = Field(default=0.1, ge=0)
    teacher_latency_p95_s: float = Field(default=5.0, gt=0)
    rate_window_s: float = Field(default=600.0, gt=0)
    for_s: float = Field(default=600.0, ge=0)
    down_for_s: float = Field(default=300.0, ge=0)
    scrape_interval_s: float = Field(default=30.0, gt=0)
    # Where the alerts' runbook links point (docs/monitoring.md, one section per alert).
    runbook_url: str = "docs/monitoring.md"


class ComponentResources(BaseModel):
    """CPU (cores) and memory (Kubernetes quantity) of one pod of a component."""

    cpu: float = Field(default=1.0, gt=0)
    memory: str = "1Gi"


class DeploySettings(BaseModel):
    """What only a Kubernetes deployment needs (`freshlabel deploy render`, freshlabel/deploy/).

    Numbers the platform itself uses (partitions, batch sizes, windows, ports) are not here:
    the renderer reads them from the rest of `Settings`, so the cluster and the embedded
    stack cannot drift. Secrets never appear here: workers get them from the Secret named
    `secret_name` as `FRESHLABEL_*` environment variables.
    """

    namespace: str = "freshlabel"
    # Images (infra/images/): <registry>/<name>:<image_tag>; registry "" for a bare name.
    registry: str = ""
    image_tag: str = "dev"
    flink_image: str = "freshlabel-flink"
    platform_image: str = "freshlabel-platform"
    triton_image: str = "freshlabel-triton"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # Existing Secret whose keys are FRESHLABEL_* variables (broker password, catalog
    # credential, S3 keys); mounted as environment into every worker and the Flink job.
    secret_name: str = "freshlabel-secrets"
    # Where the settings profile is mounted in every pod (FRESHLABEL_CONFIG points at it).
    config_mount_dir: str = "/etc/freshlabel"
    # Strimzi: the Kafka cluster (label strimzi.io/cluster) and the namespace its Topic
    # Operator watches (None: `namespace`).
    kafka_cluster: str = "kafka"
    kafka_namespace: str | None = None
    # Prometheus port of a sink or the labeler when its own metrics_port is 0.
    metrics_port: int = Field(default=9400, gt=0, lt=65536)
    # Seconds a stopped sink or labeler gets to commit what it holds before it is killed.
    termination_grace_s: int = Field(default=120, ge=0)
    # Seconds of failed liveness probes before a worker is restarted.
    liveness_failure_s: int = Field(default=60, gt=0)
    probe_period_s: int = Field(default=10, gt=0)
    sink_resources: ComponentResources = Field(
        default_factory=lambda: ComponentResources(cpu=1.0, memory="4Gi")
    )
    labeler_resources: ComponentResources = Field(
        default_factory=lambda: ComponentResources(cpu=1.0, memory="2Gi")
    )
    triton_resources: ComponentResources = Field(
        default_factory=lambda: ComponentResources(cpu=4.0, memory="16Gi")
    )
    jobmanager_resources: ComponentResources = Field(
        default_factory=lambda: ComponentResources(cpu=1.0, memory="2048m")
    )
    taskmanager_resources: ComponentResources = Field(
        default_factory=lambda: ComponentResources(cpu=2.0, memory="8192m")
    )
    # Topics a sink Deployment commits to Iceberg (one Deployment per topic/table).
    sink_topics: list[str] = Field(default_factory=lambda: list(DERIVED_TOPICS))
    # KEDA: replicas of sinks and labelers between min and max; max is always capped at
    # the partition count of the topic the worker reads (more would sit idle).
    sink_min_replicas: int = Field(default=1, ge=0)
    sink_max_replicas: int | None = Field(default=None, ge=1)
    labeler_min_replicas: int = Field(default=1, ge=0)
    labeler_max_replicas: int | None = Field(default=None, ge=1)
    # Consumer-group lag (records) per replica KEDA aims at.
    sink_lag_threshold: int = Field(default=200_000, gt=0)
    labeler_lag_threshold: int = Field(default=20_000, gt=0)
    keda_polling_s: int = Field(default=30, gt=0)
    keda_cooldown_s: int = Field(default=300, ge=0)
    # KEDA TriggerAuthentication (created with the Kafka credentials, outside these
    # manifests) its kafka triggers use; None: the cluster needs no authentication.
    keda_kafka_auth: str | None = None
    # Prometheus that KEDA asks for Triton's queue time.
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # Triton: replicas, GPUs per replica, the average queue time per request (µs) KEDA
    # keeps each replica under, and how long a replica may take to load its models.
    triton_min_replicas: int = Field(default=1, ge=1)
    triton_max_replicas: int = Field(default=4, ge=1)
    triton_gpus: int = Field(default=1, ge=0)
    triton_queue_target_us: float = Field(default=50_000.0, gt=0)
    # Window (s) of the queue-time rates KEDA compares with the target.
    triton_queue_window_s: int = Field(default=120, gt=0)
    triton_startup_timeout_s: int = Field(default=600, gt=0)
    # Model repositories on object storage: one per teacher version, at
    # <triton_repository_uri>/<teacher_version> (what `freshlabel teacher export` wrote).
    triton_repository_uri: str = "s3://freshlabel-models/triton"
    teacher_version: str = "1"
    # Flink (Kubernetes operator): checkpoints, savepoints and HA metadata under this root.
    flink_state_uri: str = "s3://freshlabel-flink/enrich"
    flink_service_account: str = "flink"
    taskmanager_replicas: int | None = Field(default=None, ge=1)
    # An upgrade with state is a manifest change: a new nonce makes the operator take a
    # savepoint; initial_savepoint restores a fresh deployment from one.
    flink_initial_savepoint: str | None = None
    flink_savepoint_nonce: int | None = None
    # Flink autoscaler (job.autoscaler.*); max parallelism None: the largest partition
    # count of the job's input topics (a source gets no more than one task a partition).
    autoscaler_enabled: bool = True
    autoscaler_target_utilization: float = Field(default=0.7, gt=0, le=1)
    autoscaler_metrics_window_s: int = Field(default=600, gt=0)
    autoscaler_stabilization_s: int = Field(default=300, ge=0)
    autoscaler_max_parallelism: int | None = Field(default=None, ge=1)

    def image(self, name: str) -> str:
        """The full reference of image `name` (one of the *_image fields)."""
        prefix = f"{self.registry.rstrip('/')}/" if self.registry else ""
        return f"{prefix}{name}:{self.image_tag}"

    @property
    def triton_repository(self) -> str:
        return f"{self.triton_repository_uri.rstrip('/')}/{self.teacher_version}"

    @property
    def checkpoints_uri(self) -> str:
        return f"{self.flink_state_uri.rstrip('/')}/checkpoints"

    @property
    def savepoints_uri(self) -> str:
        return f"{self.flink_state_uri.rstrip('/')}/savepoints"

    @property
    def ha_uri(self) -> str:
        return f"{self.flink_state_uri.rstrip('/')}/ha"


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
    labeler: LabelerSettings = Field(default_factory=LabelerSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)

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

    @property
    def teacher_cache_dir(self) -> Path:
        """Frozen-layer caches of teacher training (large: ~0.5 GB for CrowdFlower), reused
        by reruns, CV and the teacher benchmarks."""
        return self.state_dir / "cache" / "teacher"

    @property
    def platform_topics(self) -> list[str]:
        """Every topic the platform reads or writes: events, derived topics, their DLQs,
        data-quality alerts and the Flink clock topic."""
        extra = [self.quality.alerts_topic, self.flink.clock_topic]
        return list(dict.fromkeys([*self.topics.all_topics, *extra]))

    def topic_config(self, topic: str) -> dict[str, str]:
        """Kafka topic configuration of `topic`: compaction for the pin changelogs,
        retention >= window + slide + margin for windowed inputs, the default otherwise.

        Args:
            topic: a topic name (any; unknown ones get the default retention).

        Returns:
            `cleanup.policy` and, for deleted topics, `retention.ms` (strings, as Kafka
            and Strimzi take them).
        """
        t = self.topics
        if topic in t.compacted:
            return {"cleanup.policy": "compact"}
        if topic in t.retention_days:
            days = t.retention_days[topic]
        elif topic in WINDOWED_TOPICS:
            window_field, slide_field = WINDOWED_TOPICS[topic]
            window_days = getattr(self.flink, window_field)
            slide_days = getattr(self.flink, slide_field) / 24
            days = window_days + slide_days + t.window_margin_days
        else:
            days = t.default_retention_days
        return {"cleanup.policy": "delete", "retention.ms": str(round(days * 86_400_000))}


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
