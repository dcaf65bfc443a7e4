"""The drift signal without a broker: the labeler's label maker with a fake teacher that
returns embeddings, a small trained student, and the drift monitor between them.

- per-group sliding windows (language from the locale, family from a query taxonomy);
- the alert transitions through the quality alert path (firing once, rate-limited, then
  resolved) and groups below `drift_min_rows` that are reported but never alert;
- cache hits compared too (the student's label is kept by the pair's cache key);
- a student whose feature versions do not name the served teacher is refused with one
  log line, embeddings are not requested, and labeling goes on;
- the status file's `student` section, the `freshlabel status` line and the Prometheus
  gauges.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.config import Settings
from infra.worker_status import describe, read_statuses
from quality.alerts import AlertPublisher
from quality.models import Alert
from schemas import EnrichedImpression, RelevanceLabel
from serving.labeler.cache import ScoreCache
from serving.labeler.drift import (
    DisagreementWindows,
    DriftMonitor,
    QueryFamilies,
    check_student,
    language_of,
    served_features,
)
from serving.labeler.labeler import LabelMaker, ScoredPair
from serving.labeler.metrics import LabelerMetrics
from serving.student.features import BM25_FILE, PAIR_FEATURES, StudentInputs, pair_features
from serving.student.model import Student, StudentConfig, train_student
from serving.teacher.lexical import Bm25Stats
from tests.quality_webhook import WebhookReceiver

DIM = 8
SERVED = "t-1+onnx-int8"
T0 = datetime(2026, 10, 1, tzinfo=UTC)


def vector(text: str) -> np.ndarray:
    """A deterministic unit vector per text: the fake bi-encoder."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small student trained on synthetic inputs, saved with its BM25 statistics and the
    feature versions of teacher t-1 served as onnx int8."""
    root = tmp_path_factory.mktemp("student")
    rng = np.random.default_rng(0)
    n = 200
    q = rng.normal(size=(n, DIM)).astype(np.float32)
    p = rng.normal(size=(n, DIM)).astype(np.float32)
    pair = rng.normal(size=(n, len(PAIR_FEATURES))).astype(np.float32)
    probs = rng.dirichlet(np.ones(4), size=n).astype(np.float32)
    student = train_student(
        StudentInputs(q, p, pair),
        4,
        probs=probs,
        config=StudentConfig(hidden=[16], epochs=2, val_fraction=0),
        version="student-test",
    )
    student.manifest.teacher_version = SERVED
    student.manifest.feature_versions = {
        "feature_set": "1",
        "teacher_version": "t-1",
        "bi_encoder_numerics": "onnx-int8",
    }
    bm25 = root / "teacher-bm25.json"
    Bm25Stats.fit(["title: oak desk", "title: eichentisch", "title: vase"]).save(bm25)
    out = root / "student"
    student.save(out, bm25_file=bm25)
    return out


class EmbeddingTeacher:
    """A teacher stand-in that returns embeddings when asked: its label is the student's
    own (agreement) unless `disagree(query)`, then the next grade."""

    def __init__(self, student_dir: Path, version: str = SERVED) -> None:
        self.student = Student.load(student_dir)
        self.bm25 = Bm25Stats.load(student_dir / BM25_FILE)
        self.version = version
        self.disagree: Callable[[str], bool] = lambda q: False
        self.asked: list[bool] = []  # per call: embeddings requested
        self.pairs = 0

    async def served(self) -> tuple[str, int]:
        return self.version, 4

    async def score(
        self, queries: Sequence[str], pin_texts: Sequence[str], embeddings: bool = False
    ) -> list[ScoredPair]:
        self.asked.append(embeddings)
        self.pairs += len(queries)
        q = np.stack([vector(x) for x in queries])
        p = np.stack([vector("pin " + x) for x in pin_texts])
        inputs = pair_features(self.bm25, queries, pin_texts, q, p)
        student = self.student.predict(inputs).label
        out = []
        for i, query in enumerate(queries):
            label = int(student[i]) % 4 + 1 if self.disagree(query) else int(student[i])
            probs = [0.1] * 4
            probs[label - 1] = 0.7
            out.append(
                ScoredPair(
                    probs=probs,
                    score=(sum((k + 1) * x for k, x in enumerate(probs)) - 1) / 3,
                    teacher_version=self.version,
                    label_scale=4,
                    query_embedding=q[i] if embeddings else None,
                    pin_embedding=p[i] if embeddings else None,
                )
            )
        return out


class Collected:
    """An alert publisher that keeps what it is handed."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def publish(self, alerts: list[Alert]) -> None:
        self.alerts += alerts

    def close(self) -> None:
        pass


def rows(prefix: str, n: int, locale: str, query: str, pins: int = 5) -> list[EnrichedImpression]:
    return [
        EnrichedImpression(
            impression_id=f"{prefix}-{i}",
            request_id=f"{prefix}-r{i}",
            user_id=f"u{i % 7}",
            query=f"{query} {i % 3}",
            pin_id=f"{prefix}-pin-{i % pins}",
            position=1,
            country=locale[-2:],
            locale=locale,
            event_time=T0 + timedelta(seconds=i),
            title=f"{prefix} title {i % pins}",
        )
        for i in range(n)
    ]


def settings_for(tmp_path: Path, student_dir: Path, **labeler: Any) -> Settings:
    values = {
        "student_dir": student_dir,
        "drift_window_rows": 100,
        "drift_min_rows": 40,
        "drift_alert_rate": 0.35,
        **labeler,
    }
    return Settings(state_dir=tmp_path / "state", labeler=values)


class Rig:
    """The live labeler's label maker and drift monitor, without Kafka: label a batch and
    observe it, as `Labeler._label` does once the batch is published."""

    def __init__(
        self,
        settings: Settings,
        teacher: EmbeddingTeacher,
        publisher: Any = None,
        serve: bool = False,
        cache: ScoreCache | None = None,
    ) -> None:
        self.metrics = LabelerMetrics(settings, serve=serve)
        self.publisher = publisher or Collected()
        self.drift = DriftMonitor.from_settings(settings, self.metrics, self.publisher)
        assert self.drift is not None
        self.cache = cache or ScoreCache(settings.state_dir / "cache.sqlite")
        self.maker = LabelMaker(teacher, self.cache, self.metrics, chunk_rows=64, drift=self.drift)

    def label(self, batch: list[EnrichedImpression]) -> list[RelevanceLabel]:
        labels = asyncio.run(self.maker.labels_for(batch))
        assert self.drift is not None
        self.drift.observe(batch, labels, "test@0:0-9", "0:0-9")
        return labels


def test_language_family_and_served_numerics() -> None:
    assert [language_of(x) for x in ("de-DE", "fr-CA", "pt_BR", "EN", "", None)] == [
        "de",
        "fr",
        "pt",
        "en",
        "unknown",
        "unknown",
    ]
    assert served_features("t+onnx-int8") == ("t", "onnx-int8")
    assert served_features("t+torch-int8") == ("t", "torch-int8")
    assert served_features("t+fp16") == ("t", "torch-fp16")
    assert served_features("t") == ("t", "fp32")


def test_windows_slide_per_group() -> None:
    windows = DisagreementWindows(window_rows=4)
    for verdict in (True, True, False, False):
        windows.add("lang", "de", verdict)
    windows.add("lang", "en", True)
    de = windows.get("lang", "de")
    assert de is not None and (de.rows, de.rate) == (4, 0.5)
    for _ in range(2):  # the two disagreements slide out
        windows.add("lang", "de", False)
    assert (de.rows, de.rate) == (4, 0.0)
    en = windows.get("lang", "en")
    assert en is not None and (en.rows, en.rate) == (1, 1.0)
    assert windows.get("family", "de") is None


def test_alert_fires_once_is_rate_limited_then_resolves(student_dir: Path, tmp_path: Path) -> None:
    teacher = EmbeddingTeacher(student_dir)
    rig = Rig(settings_for(tmp_path, student_dir), teacher)
    collected = rig.publisher
    teacher.disagree = lambda q: q.startswith("eichentisch")
    rig.label(rows("de1", 60, "de-DE", "eichentisch") + rows("en1", 60, "en-US", "oak desk"))
    assert all(teacher.asked)  # embeddings asked for every scoring call
    (alert,) = collected.alerts
    assert alert.status == "firing" and alert.key == "labels.student_disagreement[lang=de]"
    assert alert.table == "labels" and alert.severity == "warning"
    assert alert.observed_value == 1.0 and alert.rows == 60 and alert.failed_rows == 60
    assert alert.threshold == "<= 0.35" and alert.offset_ranges == "0:0-9"
    assert "student student-test disagrees with the teacher on 100.0%" in alert.summary
    assert "retrain" in alert.summary
    assert alert.sample_rows and alert.sample_rows[0]["query"].startswith("eichentisch")
    assert alert.sample_rows[0]["teacher_label"] != alert.sample_rows[0]["student_label"]
    gauge = rig.metrics.registry.get_sample_value
    assert gauge("freshlabel_labeler_student_disagreement", {"dimension": "lang", "group": "de"})
    assert gauge(
        "freshlabel_labeler_student_disagreement", {"dimension": "lang", "group": "en"}
    ) == pytest.approx(0.0)
    assert gauge("freshlabel_labeler_student_window_rows", {"dimension": "lang", "group": "de"})
    assert gauge("freshlabel_labeler_student_compared_total") == 120

    # Still failing: counted, not sent again within quality.alert_repeat_s.
    rig.label(rows("de2", 20, "de-DE", "eichentisch"))
    assert len(collected.alerts) == 1
    assert rig.drift is not None and rig.drift.alerting() == ["lang=de"]

    # The student matches again on new pairs: the window slides back under the threshold.
    teacher.disagree = lambda q: False
    rig.label(rows("de3", 60, "de-DE", "eichentisch"))  # window: 40 of 100 disagree
    assert [a.status for a in collected.alerts] == ["firing"]
    rig.label(rows("de4", 20, "de-DE", "eichentisch"))  # 20 of 100
    resolved = collected.alerts[-1]
    assert resolved.status == "resolved" and resolved.check == "student_disagreement[lang=de]"
    assert resolved.observed_value == pytest.approx(0.2) and resolved.rows == 100
    assert resolved.repeats == 2 and "[resolved]" in resolved.summary  # 2 batches folded
    assert rig.drift.alerting() == []


def test_a_small_group_is_reported_but_never_alerts(student_dir: Path, tmp_path: Path) -> None:
    teacher = EmbeddingTeacher(student_dir)
    rig = Rig(settings_for(tmp_path, student_dir), teacher)
    teacher.disagree = lambda q: True
    rig.label(rows("fr", 10, "fr-FR", "table chene"))
    assert rig.publisher.alerts == []
    assert rig.drift is not None
    status = rig.drift.snapshot()
    assert status["lang"] == {"fr": {"rate": 1.0, "rows": 10}}
    assert status["alerting"] == [] and status["state"] == "on"
    assert "family" not in status  # no taxonomy configured: no family dimension


def test_cache_hits_are_compared_with_the_student_label_of_their_pair(
    student_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, student_dir)
    teacher = EmbeddingTeacher(student_dir)
    rig = Rig(settings, teacher)
    batch = rows("hit", 50, "en-US", "oak desk")  # 15 distinct pairs
    rig.label(batch)
    scored = teacher.pairs
    assert 0 < scored < 50
    again = [r.model_copy(update={"impression_id": f"again-{i}"}) for i, r in enumerate(batch)]
    rig.label(again)
    assert teacher.pairs == scored  # all cache hits: the teacher was not asked
    assert rig.drift is not None
    assert (rig.drift.compared, rig.drift.not_compared) == (100, 0)
    # A fresh process (empty memory) on the same cache: hits of pairs it never saw scored
    # have no student label, and are counted as not compared.
    later = Rig(settings, teacher, cache=rig.cache)
    later.label(batch)
    assert later.drift is not None
    assert (later.drift.compared, later.drift.not_compared) == (0, 50)


def test_per_family_rates_from_the_query_taxonomy(student_dir: Path, tmp_path: Path) -> None:
    taxonomy = tmp_path / "families.csv"
    taxonomy.write_text("query,family\nEichentisch 0,furniture\noak desk 0,furniture\n")
    assert QueryFamilies.load(taxonomy).of("  eichentisch   0 ") == "furniture"
    settings = settings_for(tmp_path, student_dir, query_families=taxonomy)
    teacher = EmbeddingTeacher(student_dir)
    rig = Rig(settings, teacher)
    teacher.disagree = lambda q: q == "oak desk 1"
    rig.label(rows("fam", 30, "en-GB", "oak desk"))
    assert rig.drift is not None
    status = rig.drift.snapshot()
    assert status["family"] == {
        "furniture": {"rate": 0.0, "rows": 10},
        "unknown": {"rate": 0.5, "rows": 20},
    }
    assert status["lang"] == {"en": {"rate": pytest.approx(1 / 3, abs=1e-4), "rows": 30}}


@pytest.mark.parametrize(
    ("served", "numerics", "fits"),
    [
        ("t-1+onnx-int8", "onnx-int8", True),
        ("t-1+torch-int8", "onnx-int8", False),
        ("t-1", "onnx-int8", False),
        ("t-1", "torch-fp32", True),
        ("t-1", "onnx-fp32", True),
        ("t-1+fp16", "torch-fp32", False),
        ("t-2+onnx-int8", "onnx-int8", False),
    ],
)
def test_a_student_fits_only_its_teacher_and_numerics(
    student_dir: Path, served: str, numerics: str, fits: bool
) -> None:
    student = Student.load(student_dir)
    student.manifest.feature_versions["bi_encoder_numerics"] = numerics
    assert (check_student(student, served) is None) == fits


def test_a_mismatched_student_is_refused_once_and_labeling_goes_on(
    student_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    teacher = EmbeddingTeacher(student_dir, version="t-2+onnx-int8")
    rig = Rig(settings_for(tmp_path, student_dir), teacher)
    teacher.disagree = lambda q: True
    with caplog.at_level(logging.ERROR, logger="serving.labeler.drift"):
        first = rig.label(rows("mis", 60, "de-DE", "eichentisch"))
        second = rig.label(rows("mis2", 60, "de-DE", "eichentisch"))
    assert len(first) == 60 and len(second) == 60  # labeled all the same
    assert teacher.asked and not any(teacher.asked)  # no embeddings requested
    (line,) = [r.getMessage() for r in caplog.records]
    assert "student student-test reads features of teacher t-1" in line
    assert "onnx-int8" in line and "Triton serves teacher t-2+onnx-int8" in line
    assert "freshlabel student train" in line and "\n" not in line
    assert rig.publisher.alerts == []
    assert rig.drift is not None
    status = rig.drift.snapshot()
    assert status["state"] == "off" and status["reason"] == line
    assert status["compared"] == 0 and status["lang"] == {}


def test_a_missing_student_turns_the_signal_off_not_the_labeler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, tmp_path / "no-student")
    with caplog.at_level(logging.ERROR, logger="serving.labeler.drift"):
        drift = DriftMonitor.from_settings(settings, LabelerMetrics(settings, serve=False))
    assert drift is not None and drift.student is None
    assert "not a student directory" in caplog.text and "labeling goes on" in caplog.text
    assert drift.snapshot()["state"] == "off"
    assert (
        DriftMonitor.from_settings(
            Settings(state_dir=tmp_path), LabelerMetrics(Settings(state_dir=tmp_path), serve=False)
        )
        is None
    )


def test_status_file_and_status_line_show_the_student(student_dir: Path, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, student_dir)
    teacher = EmbeddingTeacher(student_dir)
    rig = Rig(settings, teacher, serve=True)
    teacher.disagree = lambda q: q.startswith("eichentisch")
    rig.label(rows("st-de", 50, "de-DE", "eichentisch") + rows("st-en", 50, "en-US", "oak"))
    rig.metrics.write_status()
    (status,) = [s for s in read_statuses(settings) if s.name == "labeler"]
    student = status.metrics["student"]
    assert student["version"] == "student-test" and student["teacher_version"] == SERVED
    assert student["lang"] == {
        "de": {"rate": 1.0, "rows": 50},
        "en": {"rate": 0.0, "rows": 50},
    }
    assert student["alerting"] == ["lang=de"] and student["compared"] == 100
    line = describe(status)
    assert "student student-test: 100 rows compared" in line
    assert "most disagreement lang=de 100.0% of 50, ALERTING lang=de" in line


def test_alerts_take_the_quality_gates_delivery(
    student_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same publisher the gate uses: the log (logger quality.alerts) and the webhook;
    the topic is skipped here (no broker), as the publisher does when it is away."""

    class NoBroker(AlertPublisher):
        def _kafka(self) -> Any:
            raise ConnectionError("no broker in this test")

    with WebhookReceiver() as hook:
        settings = settings_for(tmp_path, student_dir).model_copy(
            update={"quality": Settings().quality.model_copy(update={"webhook_url": hook.url})}
        )
        teacher = EmbeddingTeacher(student_dir)
        rig = Rig(settings, teacher, publisher=NoBroker(settings))
        teacher.disagree = lambda q: True
        with caplog.at_level(logging.WARNING, logger="quality.alerts"):
            rig.label(rows("hook", 50, "de-DE", "eichentisch"))
            assert rig.drift is not None
            rig.drift.close()  # waits for the webhook, as the labeler's close does
        (body,) = hook.bodies
    assert body["text"].startswith("[warning] labels.student_disagreement[lang=de]")
    assert "dq alert [warning] labels.student_disagreement[lang=de]" in caplog.text


def test_a_failing_comparison_turns_itself_off_not_the_labeler(
    student_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    teacher = EmbeddingTeacher(student_dir)
    rig = Rig(settings_for(tmp_path, student_dir), teacher)
    assert rig.drift is not None and rig.drift.student is not None

    def broken(inputs: StudentInputs) -> Any:
        raise RuntimeError("boom")

    rig.drift.student.predict = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="serving.labeler.drift"):
        assert len(rig.label(rows("bug", 30, "en-US", "oak"))) == 30
        assert len(rig.label(rows("bug2", 30, "en-US", "oak"))) == 30
    status = rig.drift.snapshot()
    assert status["state"] == "off" and "RuntimeError: boom" in status["reason"]
    assert teacher.asked == [True, False]  # no embeddings asked for once it is off
    assert len([r for r in caplog.records if "failed in predict" in r.getMessage()]) == 1
