"""The teacher client's contract without a server: the Triton priority of every request,
the in-flight bound (the labeler's memory bound on the teacher side), and the per-class
metrics and status line of live labeling and backfills."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from infra.config import Settings
from infra.worker_health import metric_value
from infra.worker_status import WorkerStatus, describe
from serving.client import TeacherClient
from serving.labeler.metrics import LabelerMetrics
from serving.labeler.triton_scorer import TritonScorer
from tests.helpers import impression_fields


class FakeTriton:
    """Stands in for `tritonclient.grpc.aio.InferenceServerClient`: answers every pair with
    a fixed label, records each request's arguments and the most requests in flight."""

    def __init__(self, delay_s: float = 0.0, embeddings: bool = False) -> None:
        self.delay_s = delay_s
        self.embeddings = embeddings  # the model config declares the embedding outputs
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        n = inputs[0].shape()[0]
        outputs = {
            "probs": np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (n, 1)),
            "score": np.full((n, 1), 1.75, dtype=np.float32),
            "label": np.full((n, 1), 2, dtype=np.int32),
            "query_embedding": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
            "pin_embedding": -np.arange(n * 3, dtype=np.float32).reshape(n, 3),
        }
        asked = {o.name() for o in kwargs.get("outputs") or ()} or set(outputs)
        return SimpleNamespace(
            as_numpy=lambda name: outputs[name] if name in asked else None,
            get_response=lambda: SimpleNamespace(model_version="1"),
        )

    async def get_model_config(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        names = ["probs", "score", "label"]
        names += ["query_embedding", "pin_embedding"] if self.embeddings else []
        return {
            "config": {
                "output": [{"name": n} for n in names],
                "parameters": {"teacher_version.1": {"string_value": "t-v1"}},
            }
        }

    async def close(self) -> None:
        pass


def _client(fake: FakeTriton, **options: Any) -> TeacherClient:
    client = TeacherClient("127.0.0.1:1", **options)
    client._client = fake  # type: ignore[assignment]
    return client


def test_every_request_carries_the_clients_priority() -> None:
    async def main() -> None:
        fake = FakeTriton()
        client = _client(fake, batch_size=4, priority=1)
        labels = await client.score(["q"] * 10, ["title: t"] * 10)
        assert len(labels) == 10 and {x.teacher_version for x in labels} == {"t-v1"}
        assert [c["priority"] for c in fake.calls] == [1, 1, 1]

    asyncio.run(main())


def test_embeddings_are_requested_only_when_asked_and_served() -> None:
    async def main() -> None:
        fake = FakeTriton(embeddings=True)
        client = _client(fake, batch_size=4)
        plain = await client.score(["q"] * 6, ["title: t"] * 6)
        assert [o.name() for o in fake.calls[-1]["outputs"]] == ["probs", "score", "label"]
        assert all(x.query_embedding is None and x.pin_embedding is None for x in plain)
        rich = await client.score(["q"] * 6, ["title: t"] * 6, embeddings=True)
        assert [o.name() for o in fake.calls[-1]["outputs"]] == [
            "probs",
            "score",
            "label",
            "query_embedding",
            "pin_embedding",
        ]
        # Each pair carries its own rows (the second request holds pairs 4 and 5).
        q, p = rich[5].query_embedding, rich[5].pin_embedding
        assert q is not None and p is not None
        assert q.tolist() == [3.0, 4.0, 5.0]
        assert p.tolist() == [-3.0, -4.0, -5.0]
        assert rich[5].probs == plain[5].probs
        # A teacher exported before the embeddings were served does not declare them:
        # asking for them would be refused, so the pairs come without.
        old = FakeTriton(embeddings=False)
        client = _client(old, batch_size=4)
        bare = await client.score(["q"] * 3, ["title: t"] * 3, embeddings=True)
        assert client.serves_embeddings is False and len(bare) == 3
        assert all(x.query_embedding is None for x in bare)
        assert [o.name() for o in old.calls[-1]["outputs"]] == ["probs", "score", "label"]
        # The labeler's scorer hands them on with each scored pair.
        scorer = TritonScorer(_client(FakeTriton(embeddings=True)))
        (pair,) = await scorer.score(["q"], ["title: t"], embeddings=True)
        assert pair.query_embedding is not None
        assert pair.query_embedding.tolist() == [0.0, 1.0, 2.0] and pair.label_scale == 2

    asyncio.run(main())


def test_a_negative_priority_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="priority must be 0"):
        TeacherClient("127.0.0.1:1", priority=-1)


def test_live_and_backfill_scorers_use_their_configured_levels() -> None:
    async def main() -> list[tuple[int, int, int]]:
        settings = Settings(
            labeler={
                "live_priority": 1,
                "backfill_priority": 2,
                "request_rows": 64,
                "max_in_flight": 4,
                "backfill_request_rows": 8,
                "backfill_max_in_flight": 2,
            }
        )
        live = TritonScorer.from_settings(settings)
        bulk = TritonScorer.from_settings(settings, traffic="backfill")
        try:
            return [
                (s.client.priority, s.client.batch_size, s.client.max_in_flight)
                for s in (live, bulk)
            ]
        finally:
            await live.close()
            await bulk.close()

    assert asyncio.run(main()) == [(1, 64, 4), (2, 8, 2)]


def test_no_more_than_max_in_flight_requests_at_once() -> None:
    async def main() -> FakeTriton:
        fake = FakeTriton(delay_s=0.01)
        client = _client(fake, batch_size=8, max_in_flight=3)
        labels = await client.score(["q"] * 200, ["title: t"] * 200)
        assert len(labels) == 200
        return fake

    fake = asyncio.run(main())
    assert len(fake.calls) == 25
    assert fake.most_in_flight == 3  # the bound is reached, never passed


def test_status_shows_each_class_rate_latency_and_live_freshness(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from schemas import EnrichedImpression

    settings = Settings(state_dir=tmp_path)
    at = datetime.now(UTC) - timedelta(seconds=2)
    row = EnrichedImpression(**impression_fields("i1", at, query="oak desk", title="oak desk"))
    lines = {}
    for traffic in ("live", "backfill"):
        metrics = LabelerMetrics(settings, serve=False, traffic=traffic)  # type: ignore[arg-type]
        metrics.observe_teacher(0.2, 64)
        metrics.observe_teacher(0.4, 64)
        metrics.record_batch([], [row], 0.0)
        snap = metrics.snapshot()
        assert snap["traffic"] == traffic
        assert snap[f"{traffic}_pairs_per_s"] > 0
        assert snap[f"{traffic}_teacher_p50_s"] == pytest.approx(0.3)
        assert snap["teacher_pairs"] == 128
        sample = metrics.registry.get_sample_value(
            "freshlabel_teacher_pairs_total", {"traffic": traffic}
        )
        assert sample == 128
        status = WorkerStatus(
            name="labeler" if traffic == "live" else "labeler-backfill",
            pid=1,
            start_ticks=0,
            started_at=0,
            updated_at=0,
            metrics=snap,
        )
        lines[traffic] = describe(status)
    live = LabelerMetrics(settings, serve=False).snapshot()
    assert live["live_freshness_p95_s"] is None  # nothing labeled yet: no figure
    assert "live:" in lines["live"] and "freshness p50 2." in lines["live"]
    assert "backfill:" in lines["backfill"] and "freshness" not in lines["backfill"]
    assert "pairs/s" in lines["backfill"]


class FakeConsumer:
    """A consumer holding two partitions, 120 and 30 records behind their watermarks."""

    def assignment(self) -> set[Any]:
        from kafka import TopicPartition

        return {TopicPartition("impressions.enriched", p) for p in (0, 1)}

    def highwater(self, tp: Any) -> int:
        return 1000 if tp.partition == 0 else 500

    def position(self, tp: Any, timeout_ms: int = 0) -> int:
        return 880 if tp.partition == 0 else 470


def test_backlog_counts_rows_in_hand_and_reaches_the_status_file_at_once(
    tmp_path: Path,
) -> None:
    from infra.worker_status import read_statuses

    settings = Settings(state_dir=tmp_path)
    metrics = LabelerMetrics(settings)
    metrics.observe_backlog(FakeConsumer(), in_hand=200)  # type: ignore[arg-type]
    lag = {
        s.labels["partition"]: s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "freshlabel_consumer_lag_records"
    }
    assert lag == {"0": 120, "1": 30}  # per partition: behind the position
    assert metric_value(metrics.backlog) == 350  # plus the 200 polled, not labeled yet
    # Written without waiting for the batch to end (a slow teacher can take minutes).
    (status,) = [s for s in read_statuses(settings) if s.name == "labeler"]
    assert status.metrics["backlog"] == 350
    metrics.write_status(stopped=True)
