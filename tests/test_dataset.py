"""Training sets on a real catalog: one label per impression and version, streamed to torch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from torch.utils.data import DataLoader

from infra.catalog import ensure_namespace, ensure_table, open_catalog
from infra.config import Settings
from schemas import EnrichedImpression, RelevanceLabel
from serving.dataset import TrainingSetDataset, build_training_set
from streams.arrow_rows import SourcePosition, to_arrow
from tests.helpers import impression_fields

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _append(settings: Settings, table_name: str, events: list) -> None:  # type: ignore[type-arg]
    catalog = open_catalog(settings)
    ensure_namespace(catalog, "freshlabel")
    table = ensure_table(catalog, "freshlabel", table_name)
    positions = [SourcePosition(0, i) for i in range(len(events))]
    table.append(to_arrow(table, events, positions, "test", datetime.now(UTC)))


def _label(i: int, version: str, probs: list[float], at: datetime) -> RelevanceLabel:
    return RelevanceLabel(
        impression_id=f"i-{i}",
        query=f"q {i % 7}",
        pin_id=f"p-{i}",
        teacher_version=version,
        label_scale=len(probs),
        probs=probs,
        score=sum((k + 1) * p for k, p in enumerate(probs)),
        labeled_at=at,
        input_hash=f"h{i}",
    )


def test_build_and_stream_a_training_set(settings: Settings) -> None:
    enriched = [
        EnrichedImpression(
            impression_id=f"i-{i}",
            request_id="r",
            user_id="u",
            query=f"q {i % 7}",
            pin_id=f"p-{i}",
            position=1,
            country="DE",
            locale="de-DE",
            event_time=T0 + timedelta(hours=i),
            title=f"Plätzchen {i}",
            caption="ein Teller mit Keksen" if i % 2 else None,
            board_titles=["Weihnachten"] if i % 3 == 0 else None,
        )
        for i in range(50)
    ]
    _append(settings, "impressions_enriched", enriched)
    v1 = [_label(i, "v1", [0.7, 0.1, 0.1, 0.1], T0) for i in range(50)]
    v2 = [_label(i, "v2", [0.1, 0.1, 0.2, 0.6], T0 + timedelta(days=1)) for i in range(40)]
    # a relabel of the same impression by v2 later: the newer label wins
    v2_again = [_label(i, "v2", [0.05, 0.8, 0.1, 0.05], T0 + timedelta(days=2)) for i in range(5)]
    _append(settings, "labels", v1 + v2 + v2_again)

    assert build_training_set(settings, "v2", "students_v2") == 40
    assert build_training_set(settings, "v2", "students_v2") == 40  # idempotent
    table = open_catalog(settings).load_table("freshlabel.students_v2")
    rows = {r["impression_id"]: r for r in table.scan().to_arrow().to_pylist()}
    assert len(rows) == 40
    assert rows["i-0"]["label"] == 2 and rows["i-10"]["label"] == 4
    assert rows["i-3"]["board_titles"] == ["Weihnachten"] and rows["i-2"]["caption"] is None
    assert rows["i-1"]["title"] == "Plätzchen 1"

    batches = list(TrainingSetDataset(settings, "students_v2", "v2", batch_size=16))
    assert [len(b["query"]) for b in batches] == [16, 16, 8]
    assert batches[0]["probs"].shape == (16, 4)
    assert "title: Plätzchen" in batches[0]["pin_text"][0]
    loader = DataLoader(
        TrainingSetDataset(settings, "students_v2", "v2", batch_size=8),
        batch_size=None,
        num_workers=2,
    )
    seen = [i for batch in loader for i in batch["impression_id"]]
    assert sorted(seen) == sorted(rows)


def test_freshness_from_event_time_and_enriched_at(settings: Settings) -> None:
    from serving.labeler.freshness import freshness

    now = datetime.now(UTC)
    rows = [
        EnrichedImpression(
            **impression_fields(
                f"f-{i}", now - timedelta(seconds=30 + i), enriched_at=now - timedelta(seconds=10)
            )
        )
        for i in range(10)
    ]
    _append(settings, "impressions_enriched", rows)
    labels = [
        RelevanceLabel(
            impression_id=f"f-{i}",
            query="q",
            pin_id="p",
            teacher_version="v1",
            label_scale=2,
            probs=[0.5, 0.5],
            score=1.5,
            labeled_at=now,
            input_hash="h",
        )
        for i in range(10)
    ]
    _append(settings, "labels", labels)
    catalog = open_catalog(settings)
    live = freshness(catalog, "freshlabel")
    replay = freshness(catalog, "freshlabel", start="enriched_at")
    assert live.labels == replay.labels == 10
    assert live.lag_p50_s is not None and live.lag_p95_s is not None
    assert replay.lag_p50_s is not None
    assert 30 <= live.lag_p50_s < 120 and live.lag_p95_s >= live.lag_p50_s
    assert 10 <= replay.lag_p50_s < live.lag_p50_s


def test_labels_carrying_their_impression_time_need_no_enriched_row(settings: Settings) -> None:
    from serving.labeler.freshness import freshness

    now = datetime.now(UTC)
    carried = _label(9001, "v1", [0.5, 0.5], now).model_copy(
        update={"impression_time": now - timedelta(seconds=400)}
    )
    _append(settings, "labels", [carried])
    catalog = open_catalog(settings)
    fresh = freshness(catalog, "freshlabel")
    # No enriched table row exists for it: the lag comes from the label alone.
    assert fresh.labels == 1 and fresh.lag_p50_s is not None
    assert 400 <= fresh.lag_p50_s < 500
