"""The student drift signal: how often a student's label differs from the teacher's on
fresh traffic, per language and per query family, with an alert when it rises.

A student is distilled once from the teacher's labels; the traffic it serves keeps moving.
When its labels stop matching the teacher's on today's traffic, it needs retraining. The
live labeler already has everything a student reads for every pair the teacher scores: the
served teacher returns its bi-encoder embeddings of the query and of the pin text (the
vectors its bi cosine was computed from, so they cost the server nothing extra), and the
labeler holds the texts the lexical pair features read. So, with `labeler.student_dir` set:

- pairs the teacher scores: `pair_features` + `Student.predict` (numpy, microseconds a pair);
  the student's label is kept by the pair's score-cache key in a memory LRU
  (`labeler.cache_memory_items` entries, a few dozen bytes each), since it is a function of
  the pair alone;
- every labeled row, cache hits included: its teacher label (argmax of the probabilities)
  is compared with the student's label for its pair; a hit whose pair was scored before
  this process started (or fell out of the LRU) has no student label and is not compared
  (`not_compared` in the status) until the teacher scores it again;
- the verdicts go into sliding windows of the last `labeler.drift_window_rows` compared
  rows per language (from the impression's locale: "de-DE" -> "de") and per query family
  (`labeler.query_families`, the search product's query -> family table; queries it does
  not name are "unknown"; without the table there is no family dimension);
- a group whose window holds at least `labeler.drift_min_rows` rows and disagrees on more
  than `labeler.drift_alert_rate` of them fires an alert through the quality gate's alert
  path (`quality/alerts.py`: grouping, `quality.alert_repeat_s` rate limit, recovery; the
  `dq.alerts` topic, the log, the webhook), table `labels`, check
  `student_disagreement[lang=de]`; `resolved` when it falls back. Smaller groups are
  reported and never alert.

A student is only fed features like those it was trained on: its manifest's feature
versions must name the served teacher (the served version without its numerics suffix)
and the bi-encoder numerics that suffix implies (`+onnx-int8` -> "onnx-int8", none -> fp32
in either runtime, which agree to ~1e-5). Otherwise one log line names both and the fix,
the status says why, and labeling goes on with the comparison off for that teacher version.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import numpy as np
from threadpoolctl import ThreadpoolController

from infra.config import Settings
from quality.alerts import AlertManager
from quality.models import Alert
from serving.labeler.cache import cache_key, normalize_query

if TYPE_CHECKING:
    from schemas import EnrichedImpression, RelevanceLabel
    from serving.labeler.labeler import ScoredPair
    from serving.labeler.metrics import LabelerMetrics
    from serving.student.model import Student
    from serving.teacher.lexical import Bm25Stats

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Callable[..., Any])

ALERT_TABLE = "labels"
CHECK = "student_disagreement"
DIMENSIONS = ("lang", "family")
UNKNOWN = "unknown"
# Disagreeing rows kept per group as the sample an alert shows.
SAMPLES_KEPT = 20


def language_of(locale: str | None) -> str:
    """The language of a locale: "de-DE" -> "de", "pt_BR" -> "pt", "" -> "unknown"."""
    lang = (locale or "").replace("_", "-").split("-", 1)[0].strip().lower()
    return lang or UNKNOWN


def served_features(served_version: str) -> tuple[str, str]:
    """What a served teacher's embeddings are: (trained version, bi-encoder numerics).

    The export names numerics that change labels in the served version
    (serving/teacher/export.py): `t+onnx-int8` -> ("t", "onnx-int8"), `t+torch-int8` ->
    ("t", "torch-int8"), `t+fp16` -> ("t", "torch-fp16"), `t` -> ("t", "fp32") (fp32 in
    either runtime: ONNX and torch agree to ~1e-5).
    """
    trained, _, suffix = served_version.partition("+")
    return trained, {"": "fp32", "fp16": "torch-fp16"}.get(suffix, suffix)


def numerics_match(student_numerics: str | None, served_numerics: str) -> bool:
    if student_numerics is None:
        return False
    if served_numerics == "fp32":
        return student_numerics.endswith("-fp32")
    return student_numerics == served_numerics


def check_student(student: Student, served_version: str) -> str | None:
    """Why `student` cannot read the embeddings of `served_version` (None: it can).

    Returns:
        One line naming the student's and the served teacher's versions and the fix.
    """
    versions = student.manifest.feature_versions
    trained, numerics = served_features(served_version)
    wanted_teacher = versions.get("teacher_version")
    wanted_numerics = versions.get("bi_encoder_numerics")
    if wanted_teacher == trained and numerics_match(wanted_numerics, numerics):
        return None
    return (
        f"student {student.version} reads features of teacher {wanted_teacher} with "
        f"bi-encoder numerics {wanted_numerics}, but Triton serves teacher {served_version} "
        f"({trained}, numerics {numerics}): the teacher-student disagreement is not measured "
        f"for it (labeling goes on); train a student on this teacher's labels (`freshlabel "
        f"dataset build --teacher-version {served_version} --out T`, then `freshlabel student "
        f"train --training-set T --teacher <{trained}'s directory> --out D`) and set "
        "FRESHLABEL_LABELER__STUDENT_DIR=D, or unset it"
    )


class QueryFamilies:
    """The search product's query taxonomy: normalized query -> family."""

    def __init__(self, families: dict[str, str], source: str = "") -> None:
        self.families = families
        self.source = source

    @classmethod
    def load(cls, path: Path) -> QueryFamilies:
        """A parquet or CSV file with columns `query` and `family`.

        Raises:
            ValueError: the file has no such columns, or is neither parquet nor CSV.
            OSError: the file cannot be read.
        """
        path = Path(path)
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif path.suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            options = pcsv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",")
            table = pcsv.read_csv(path, parse_options=options)
        else:
            raise ValueError(f"query families {path}: a .parquet, .csv or .tsv file is needed")
        missing = {"query", "family"} - set(table.column_names)
        if missing:
            raise ValueError(
                f"query families {path} has no column(s) {', '.join(sorted(missing))} "
                f"(columns: {', '.join(table.column_names)}); it needs `query` and `family`"
            )
        queries = table.column("query").to_pylist()
        families = table.column("family").to_pylist()
        mapping = {
            normalize_query(str(q)): str(f)
            for q, f in zip(queries, families, strict=True)
            if q is not None and f not in (None, "")
        }
        return cls(mapping, str(path))

    def of(self, query: str) -> str:
        return self.families.get(normalize_query(query), UNKNOWN)


@dataclass
class _Window:
    """The verdicts (1: disagreed) of a group's last `size` compared rows."""

    size: int
    verdicts: deque[int] = field(default_factory=deque)
    disagreed: int = 0
    samples: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))

    def add(self, disagreed: bool) -> None:
        self.verdicts.append(int(disagreed))
        self.disagreed += int(disagreed)
        if len(self.verdicts) > self.size:
            self.disagreed -= self.verdicts.popleft()

    @property
    def rows(self) -> int:
        return len(self.verdicts)

    @property
    def rate(self) -> float:
        return self.disagreed / len(self.verdicts) if self.verdicts else 0.0


class DisagreementWindows:
    """Sliding windows of teacher-student verdicts per (dimension, group)."""

    def __init__(self, window_rows: int) -> None:
        self.window_rows = window_rows
        self.groups: dict[tuple[str, str], _Window] = {}

    def add(
        self, dimension: str, group: str, disagreed: bool, sample: dict[str, Any] | None = None
    ) -> None:
        window = self.groups.get((dimension, group))
        if window is None:
            window = self.groups[(dimension, group)] = _Window(self.window_rows)
        window.add(disagreed)
        if disagreed and sample is not None:
            window.samples.append(sample)

    def get(self, dimension: str, group: str) -> _Window | None:
        return self.groups.get((dimension, group))


class Publisher(Protocol):
    def publish(self, alerts: list[Alert]) -> None: ...

    def close(self) -> None: ...


def _guarded(step: str, fallback: Callable[[], Any]) -> Callable[[M], M]:
    """A monitoring step that does nothing (returns `fallback()`) without a student or
    once the comparison is off, and that turns the comparison off
    (`DriftMonitor._failed`) instead of raising: a bug in the monitor never stops
    labeling."""

    def wrap(method: M) -> M:
        @functools.wraps(method)
        def run(self: DriftMonitor, *args: Any, **kwargs: Any) -> Any:
            if self.student is None or self._off is not None:
                return fallback()
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                self._failed(step, exc)
                return fallback()

        return cast(M, run)

    return wrap


class DriftMonitor:
    """Compares the student's labels with the teacher's on the live labeler's rows.

    Args:
        settings: the platform settings (`labeler.drift_*`, `quality` for alerts).
        student: the loaded student (None: off, `reason` says why).
        bm25: the BM25 statistics its lexical features read (its directory's bm25.json).
        families: the query taxonomy (None: no family dimension).
        metrics: the labeler's metrics (gauges, counter, status file).
        publisher: where alerts go (default: the quality gate's `AlertPublisher`).
        clock: monotonic seconds, for the alert rate limit.
        reason: why the monitor is off (with `student` None).
    """

    def __init__(
        self,
        settings: Settings,
        student: Student | None,
        bm25: Bm25Stats | None,
        families: QueryFamilies | None,
        metrics: LabelerMetrics,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.monotonic,
        reason: str | None = None,
        student_dir: Path | None = None,
    ) -> None:
        cfg = settings.labeler
        self.settings = settings
        self.student = student
        self.bm25 = bm25
        self.families = families
        self.metrics = metrics
        self.student_dir = student_dir
        self.window_rows = cfg.drift_window_rows
        self.min_rows = cfg.drift_min_rows
        self.alert_rate = cfg.drift_alert_rate
        self.windows = DisagreementWindows(cfg.drift_window_rows)
        self.alerts = AlertManager(settings.quality.alert_repeat_s, clock)
        self._publisher = publisher
        self._off = reason  # why there is no student at all (None: loaded)
        self._served: str | None = None  # the teacher version of the last batch
        self._refused: dict[str, str | None] = {}  # served version -> refusal (None: fits)
        self._bare: dict[str, str] = {}  # fitting versions served without embeddings
        self._labels: OrderedDict[str, int] = OrderedDict()  # cache key -> student label
        self._label_items = cfg.cache_memory_items
        # The student's products run on one BLAS thread: as fast for a chunk of a few
        # hundred pairs, and OpenBLAS's second thread would otherwise spin after every call,
        # taking a core from Triton and the broker (measured: 97 -> 51 us of CPU a scored
        # pair at the same wall time; benchmarks/bench_drift.py).
        self._blas = ThreadpoolController().select(user_api="blas")
        self.compared = 0
        self.not_compared = 0
        self.predicted = 0
        self.seconds = 0.0  # spent in the monitor (features, predict, compare)
        self.alerts_sent = 0
        metrics.student_status = self.snapshot

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: LabelerMetrics, publisher: Publisher | None = None
    ) -> DriftMonitor | None:
        """The monitor `labeler.student_dir` asks for (None when unset). A student or a
        taxonomy that cannot be loaded turns it off with one log line (labeling goes on)."""
        cfg = settings.labeler
        if cfg.student_dir is None:
            return None
        from serving.student.features import BM25_FILE
        from serving.student.model import Student
        from serving.teacher.lexical import Bm25Stats

        student_dir = Path(cfg.student_dir)
        try:
            student = Student.load(student_dir)
            bm25 = Bm25Stats.load(student_dir / BM25_FILE)
            families = QueryFamilies.load(cfg.query_families) if cfg.query_families else None
        except Exception as exc:
            reason = (
                f"student drift monitoring is off: {type(exc).__name__}: {exc}; fix "
                "FRESHLABEL_LABELER__STUDENT_DIR / FRESHLABEL_LABELER__QUERY_FAMILIES "
                "(labeling goes on)"
            )
            log.error("%s", " ".join(reason.split()))
            return cls(settings, None, None, None, metrics, publisher, reason=reason)
        if not student.manifest.feature_versions:
            reason = (
                f"student {student.version} in {student_dir} names no feature versions (not "
                "trained by `freshlabel student train`?): the teacher-student disagreement is "
                "not measured (labeling goes on); train it with `freshlabel student train`"
            )
            log.error("%s", reason)
            return cls(settings, None, None, None, metrics, publisher, reason=reason)
        log.info(
            "student %s (%s) compared with the teacher on fresh traffic; alert above %.0f%% "
            "disagreement of the last %d rows of a language%s",
            student.version,
            student_dir,
            100 * cfg.drift_alert_rate,
            cfg.drift_window_rows,
            " or query family" if families else "",
        )
        return cls(settings, student, bm25, families, metrics, publisher, student_dir=student_dir)

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            from quality.alerts import AlertPublisher

            self._publisher = AlertPublisher(self.settings)
        return self._publisher

    # -- which teacher versions the student can read ------------------------------------

    def fits(self, version: str) -> bool:
        """Whether the student reads this served teacher's embeddings; a refusal is logged
        once per version and shown in the status while that version is served."""
        if self.student is None:
            return False
        if version not in self._refused:
            refusal = check_student(self.student, version)
            self._refused[version] = refusal
            if refusal is not None:
                log.error("%s", refusal)
        return self._refused[version] is None

    def wants_embeddings(self, served_version: str) -> bool:
        """Whether to ask the teacher for embeddings in a batch it serves with this version."""
        self._served = served_version
        return self._off is None and self.fits(served_version)

    @property
    def reason(self) -> str | None:
        """Why rows are not compared now (None: they are)."""
        if self._off is not None or self._served is None:
            return self._off
        return self._refused.get(self._served) or self._bare.get(self._served)

    # -- pairs the teacher scored ----------------------------------------------------------

    def _failed(self, step: str, exc: Exception) -> None:
        """A bug in the monitor must not stop labeling: turn the comparison off, say why."""
        self._off = (
            f"the student comparison failed in {step} ({type(exc).__name__}: {exc}); the "
            "teacher-student disagreement is no longer measured (labeling goes on); restart "
            "the labeler, and report the error if it repeats"
        )
        log.exception("%s", self._off)

    @_guarded("predict", lambda: None)
    def predict(
        self,
        keys: Sequence[str],
        queries: Sequence[str],
        pin_texts: Sequence[str],
        pairs: Sequence[ScoredPair],
    ) -> None:
        """The student's label of each scored pair that came with embeddings of a teacher
        it fits, remembered by the pair's score-cache key."""
        assert self.student is not None
        from serving.student.features import FeatureMismatch, pair_features

        started = time.perf_counter()
        take = []
        for i, pair in enumerate(pairs):
            version = pair.teacher_version
            if not self.fits(version):
                continue
            if pair.query_embedding is None or pair.pin_embedding is None:
                if version not in self._bare:
                    self._bare[version] = (
                        f"Triton serves teacher {version} without its embeddings (outputs "
                        "query_embedding, pin_embedding): it was exported before they were "
                        "served; export it again (`freshlabel teacher export`, a new "
                        "--version) to measure the student's disagreement (labeling goes on)"
                    )
                    log.error("%s", self._bare[version])
                continue
            self._bare.pop(version, None)
            take.append(i)
        if not take:
            self.seconds += time.perf_counter() - started
            return
        assert self.bm25 is not None
        inputs = pair_features(
            self.bm25,
            [queries[i] for i in take],
            [pin_texts[i] for i in take],
            np.stack([pairs[i].query_embedding for i in take]),  # type: ignore[misc]
            np.stack([pairs[i].pin_embedding for i in take]),  # type: ignore[misc]
        )
        try:
            with self._blas.limit(limits=1):
                labels = self.student.predict(inputs).label
        except FeatureMismatch as exc:
            refusal = f"{exc}; the teacher-student disagreement is not measured (labeling goes on)"
            log.error("%s", refusal)
            for i in take:
                self._refused[pairs[i].teacher_version] = refusal
            self.seconds += time.perf_counter() - started
            return
        for i, label in zip(take, labels.tolist(), strict=True):
            self._labels[keys[i]] = label
            self._labels.move_to_end(keys[i])
        while len(self._labels) > self._label_items:
            self._labels.popitem(last=False)
        self.predicted += len(take)
        self.seconds += time.perf_counter() - started

    # -- every labeled row -----------------------------------------------------------------

    @_guarded("observe", list)
    def observe(
        self,
        rows: Sequence[EnrichedImpression],
        labels: Sequence[RelevanceLabel],
        batch_id: str = "",
        offset_ranges: str = "",
    ) -> list[Alert]:
        """Compare each published label with the student's label of its pair, update the
        windows, metrics and alerts.

        Args:
            rows: the batch's decoded rows (for locale and query).
            labels: the labels published for them (some rows may have none: dead letters).
            batch_id, offset_ranges: where the batch came from, for the alerts.

        Returns:
            The alerts sent (firing or resolved).
        """
        started = time.perf_counter()
        by_id = {r.impression_id: r for r in rows}
        touched: set[tuple[str, str]] = set()
        compared = 0
        for label in labels:
            key = cache_key(label.query, label.pin_id, label.input_hash, label.teacher_version)
            student_label = self._labels.get(key)
            row = by_id.get(label.impression_id)
            if student_label is None or row is None:
                self.not_compared += 1
                continue
            self._labels.move_to_end(key)
            teacher_label = int(np.argmax(label.probs)) + 1
            disagreed = student_label != teacher_label
            sample = (
                {
                    "impression_id": label.impression_id,
                    "query": label.query,
                    "pin_id": label.pin_id,
                    "teacher_label": teacher_label,
                    "student_label": student_label,
                }
                if disagreed
                else None
            )
            for group in self._groups(row):
                self.windows.add(*group, disagreed, sample)
                touched.add(group)
            compared += 1
        self.compared += compared
        self.metrics.observe_student(
            compared,
            {g: (w.rate, w.rows) for g in touched if (w := self.windows.get(*g)) is not None},
        )
        alerts = self._alerts(batch_id, offset_ranges)
        self.seconds += time.perf_counter() - started
        if alerts:
            self.publisher.publish(alerts)
            self.alerts_sent += len(alerts)
        return alerts

    def _groups(self, row: EnrichedImpression) -> list[tuple[str, str]]:
        groups = [("lang", language_of(row.locale))]
        if self.families is not None:
            groups.append(("family", self.families.of(row.query)))
        return groups

    @staticmethod
    def check_name(dimension: str, group: str) -> str:
        return f"{CHECK}[{dimension}={group}]"

    def _alerts(self, batch_id: str, offset_ranges: str) -> list[Alert]:
        alerts = []
        now = datetime.now(UTC)
        for (dimension, group), window in sorted(self.windows.groups.items()):
            if window.rows < self.min_rows:
                continue  # reported, never judged: too few rows
            check = self.check_name(dimension, group)
            decision = self.alerts.observe(ALERT_TABLE, check, window.rate > self.alert_rate)
            if decision is None:
                continue
            status, repeats, since = decision
            alerts.append(
                self._alert(status, repeats, since, dimension, group, window, batch_id, now)
            )
            alerts[-1].offset_ranges = offset_ranges
            if status == "resolved":
                window.samples.clear()
        return alerts

    def _alert(
        self,
        status: str,
        repeats: int,
        since: datetime,
        dimension: str,
        group: str,
        window: _Window,
        batch_id: str,
        now: datetime,
    ) -> Alert:
        assert self.student is not None
        where = f"{ALERT_TABLE}.{self.check_name(dimension, group)}"
        share = (
            f"{window.rate:.1%} of the last {window.rows} labeled rows of "
            f"{dimension}={group} (alert above {self.alert_rate:.1%})"
        )
        if status == "resolved":
            summary = (
                f"[resolved] {where}: student {self.student.version} disagrees with the "
                f"teacher on {share} again; it was above since {since:%Y-%m-%d %H:%M:%S} UTC"
            )
        else:
            again = (
                f" (still above after {repeats} more batch(es); since "
                f"{since:%Y-%m-%d %H:%M:%S} UTC)"
                if repeats > 1
                else ""
            )
            summary = (
                f"[warning] {where}: student {self.student.version} disagrees with the "
                f"teacher on {share}{again}: it no longer matches the teacher on fresh "
                "traffic; retrain it on recent labels (`freshlabel dataset build`, then "
                "`freshlabel student train`)"
            )
        return Alert(
            status=status,  # type: ignore[arg-type]
            table=ALERT_TABLE,
            check=self.check_name(dimension, group),
            severity="warning",
            summary=summary,
            columns=["probs"],
            observed_value=round(window.rate, 4),
            threshold=f"<= {self.alert_rate}",
            rows=window.rows,
            failed_rows=window.disagreed,
            batch_id=batch_id or "labeler",
            sample_rows=list(window.samples)[-self.settings.quality.alert_sample_rows :]
            if status == "firing"
            else [],
            repeats=repeats,
            failing_since=since,
            at=now,
        )

    # -- status ------------------------------------------------------------------------------

    def alerting(self) -> list[str]:
        return sorted(
            f"{d}={g}"
            for (d, g) in self.windows.groups
            if self.alerts.is_firing(ALERT_TABLE, self.check_name(d, g))
        )

    def snapshot(self) -> dict[str, Any]:
        """The `student` section of the labeler's status file."""
        out: dict[str, Any] = {
            "version": self.student.version if self.student else None,
            "dir": str(self.student_dir) if self.student_dir else None,
            "teacher_version": self.student.manifest.teacher_version if self.student else None,
            "state": "on" if self.student is not None and self.reason is None else "off",
            "reason": self.reason,
            "window_rows": self.window_rows,
            "min_rows": self.min_rows,
            "alert_rate": self.alert_rate,
            "compared": self.compared,
            "not_compared": self.not_compared,
            "alerting": self.alerting(),
            "seconds": round(self.seconds, 3),
        }
        for dimension in DIMENSIONS:
            if dimension == "family" and self.families is None:
                continue
            out[dimension] = {
                group: {"rate": round(w.rate, 4), "rows": w.rows}
                for (d, group), w in sorted(self.windows.groups.items())
                if d == dimension
            }
        return out

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
