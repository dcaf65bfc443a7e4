"""`make demo`: the whole platform on one machine, end to end, with a report.

generator -> Kafka -> Flink enrichment -> sink -> Iceberg -> labeler -> Triton teacher
-> labels -> sink -> Iceberg, then a burst of bad data through the quality gate. The
report (stdout and `<state>/demo-report.json`) says what went in, what came out, and how
correct and fresh it is against the generator's hidden truth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from infra import stack
from infra.catalog import open_catalog
from infra.config import PROJECT_ROOT, Settings
from infra.progress import progress_bar
from serving.teacher.export import prepare_repository

DLQ_TOPICS = (
    "impressions.dlq",
    "pin_content.dlq",
    "pin_captions.dlq",
    "board_saves.dlq",
    "engagements.dlq",
    "impressions.enriched.dlq",
)


def log(message: str) -> None:
    print(f"[demo {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def _configured_teacher(settings: Settings) -> Path | None:
    if settings.teacher.model_dir is not None:
        return Path(settings.teacher.model_dir)
    default = settings.teacher.teachers_dir / "crowdflower"
    return default if (default / "manifest.json").exists() else None


def quick_teacher(settings: Settings, work: Path) -> Path:
    """Train a small teacher on a labeled sample of *another* seed's world, so it is judged
    on impressions it never saw."""
    from serving.teacher.data import load_pairs
    from serving.teacher.train import TrainConfig, train_teacher
    from streams.generator.sample import write_labeled_sample

    demo = settings.demo
    seed = demo.world(settings.generator).seed
    sample_settings = settings.model_copy(deep=True)
    sample_settings.generator.seed = seed + 1000
    sample = work / "world-sample.parquet"
    write_labeled_sample(sample_settings, sample, rows=demo.quick_teacher_rows)
    out = work / "quick-teacher"
    config = TrainConfig.from_settings(
        settings.teacher, epochs=demo.quick_teacher_epochs, max_length=96
    )
    train_teacher(load_pairs(sample, "world"), out, config, version=f"world-quick-s{seed}")
    return out


def _demo_settings(settings: Settings, teacher_dir: Path) -> Settings:
    s = settings.model_copy(deep=True)
    s.teacher.model_dir = teacher_dir
    s.flink.enabled = True
    s.generator = s.demo.world(s.generator)
    world = s.generator
    # Replay simulated history that ends yesterday: nothing is "from the future".
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    world.start = today - timedelta(days=world.sim_days + 1)
    world.truth_dir = s.state_dir / "world"
    # Replayed impressions are days old when they arrive: the live freshness SLA of the
    # enriched table would flag every batch of a replay.
    rules = s.quality.tables.get("impressions_enriched", {})
    if "freshness_lag" in rules:
        rules["freshness_lag"].max = float((world.sim_days + 2) * 86400)
    return s


def _spawn(settings_env: dict[str, str], *args: str, log_to: Path) -> subprocess.Popen[bytes]:
    log_to.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "freshlabel.cli", *args],
        env=settings_env,
        cwd=PROJECT_ROOT,
        stdout=open(log_to, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
    )


def _env_for(settings: Settings, settings_file: Path) -> dict[str, str]:
    import os

    settings_file.write_text(json.dumps(settings.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHLABEL_")}
    env["FRESHLABEL_CONFIG"] = str(settings_file)
    return env


def run(settings: Settings) -> dict[str, Any]:
    started = time.monotonic()
    work = settings.state_dir
    work.mkdir(parents=True, exist_ok=True)
    configured = _configured_teacher(settings)
    if configured is not None:
        teacher_dir, teacher_source = configured, "configured"
        log(f"teacher: configured, {teacher_dir}")
    else:
        log("no teacher configured: training a quick one on a labeled world sample")
        teacher_dir, teacher_source = quick_teacher(settings, work), "quick-world-sample"
    s = _demo_settings(settings, teacher_dir)
    log("starting the stack (broker, catalog, Flink, Triton)")
    prepare_repository(s)
    stack.up(s)
    try:
        report = _pipeline(s, work)
    finally:
        log("stopping the stack")
        stack.down(s)
    from serving.teacher.export import ExportOptions, served_version

    manifest = json.loads((teacher_dir / "manifest.json").read_text())
    report["teacher"] = {
        "source": teacher_source,
        "dir": str(teacher_dir),
        "version": manifest.get("version"),
        # What its labels carry: the runtime's numerics are part of it (int8: `+onnx-int8`).
        "served_version": served_version(
            str(manifest.get("version")), ExportOptions.from_settings(s), "KIND_CPU"
        ),
        "scale": manifest.get("scale"),
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _pipeline(s: Settings, work: Path) -> dict[str, Any]:
    from streams.enrich.clock import advance_event_time
    from streams.enrich.operations import deploy
    from streams.enrich.operations import stop as stop_job
    from streams.generator.run import run as generate

    log("deploying the Flink enrichment job")
    deploy(s)
    env = _env_for(s, work / "demo-settings.json")
    logs = work / "logs"
    # The workers run until the demo has seen every record through (below), not until they
    # are idle: a slow start (Flink's first output under load) must not end them early.
    procs = {
        name: _spawn(env, *args, log_to=logs / f"demo-{log_name}.log")
        for name, log_name, args in (
            (
                "enriched sink",
                "sink-enriched",
                ("sink", "run", "--topic", "impressions.enriched", "--batch-seconds", "5"),
            ),
            ("labeler", "labeler", ("label", "run")),
            (
                "labels sink",
                "sink-labels",
                ("sink", "run", "--topic", "labels", "--batch-seconds", "5"),
            ),
        )
    }
    try:
        log(
            f"generating {s.generator.impressions} impressions over {s.generator.sim_days} "
            "simulated days"
        )
        generated = generate(s, kafka=True, truth=True)
        # A finite replay: move the job's event-time clock past the end so it emits the last
        # rows.
        advance_event_time(s, s.generator.start + timedelta(days=s.generator.sim_days, hours=1))
        log(
            f"generated {generated.events} events in {generated.seconds:.0f} s; waiting for "
            "the pipeline to drain"
        )
        codes, labeler_stats = _drain_pipeline(
            s, procs, generated.counts.get("impressions", 0), logs
        )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stop_job(s, savepoint=False)
    if any(codes.values()):
        failed = {n: c for n, c in codes.items() if c}
        raise RuntimeError(f"demo processes failed: {failed}; see {logs}/demo-*.log")

    log("measuring against the generator's truth")
    report = _measure(s, generated.counts, labeler_stats)
    log("training a small student on the labels (the full study: benchmarks/bench_students.py)")
    report["student"] = _student(s, work, report["labels_by_version"])
    for key in ("student_truth_qwk", "student_teacher_qwk", "student_pairs_per_s"):
        report[key] = report["student"].get(key)
    # After measuring: the burst writes its own (bad) rows into the same tables.
    log("injecting a burst of bad data through the quality gate")
    from freshlabel.demo_burst import inject_bad_burst

    burst = inject_bad_burst(s)
    report["dq_alerts"] = burst.dq_alerts
    report["quarantined_rows"] = burst.quarantined_rows
    report["dq_report"] = burst.html_report
    report["dq_alert_summaries"] = burst.alert_summaries[:8]
    return report


def _drain_pipeline(
    s: Settings, procs: dict[str, subprocess.Popen[bytes]], impressions: int, logs: Path
) -> tuple[dict[str, int], dict[str, Any]]:
    """Stop each worker once everything upstream of it is through, in flow order: the
    enriched sink when its ledger covers one record per generated impression, the labeler
    when its group has committed the whole enriched topic, the labels sink when its ledger
    covers every label the labeler wrote. A stage that makes no progress for
    `demo.stall_timeout_s` is stopped where it is (the report then shows what is missing).

    Returns:
        worker name -> exit code (0: it committed what it held and stopped cleanly), and
        the labeler's final stats (the last JSON line of its log).
    """
    from infra.kafka_io import group_offsets
    from serving.labeler.labeler import SOURCE_TOPIC
    from streams.offsets import committed_offsets

    catalog = open_catalog(s)
    ns = s.catalog.namespace

    def ledger(table: str, topic: str) -> int:
        return sum(committed_offsets(catalog.load_table(f"{ns}.{table}"), topic).values())

    enriched = _drain_stage(
        s,
        "enriched sink",
        procs["enriched sink"],
        impressions,
        lambda: ledger("impressions_enriched", SOURCE_TOPIC),
    )
    _drain_stage(
        s,
        "labeler",
        procs["labeler"],
        enriched,
        lambda: sum(group_offsets(s, s.labeler.group_id, SOURCE_TOPIC).values()),
    )
    labeler_stats = _last_json_line(logs / "demo-labeler.log")
    labels = int(labeler_stats.get("labels", 0))
    _drain_stage(s, "labels sink", procs["labels sink"], labels, lambda: ledger("labels", "labels"))
    return {name: proc.returncode for name, proc in procs.items()}, labeler_stats


def _drain_stage(
    s: Settings,
    name: str,
    proc: subprocess.Popen[bytes],
    target: int,
    progress: Callable[[], int],
) -> int:
    """Poll `progress()` until it reaches `target` (or stalls, or the process ends), then
    stop `proc` with SIGTERM (it finishes its step, commits and exits) and wait for it.

    Returns:
        The last progress seen.
    """
    done, last_change, unknown = -1, time.monotonic(), ""
    deadline = time.monotonic() + s.demo.timeout_s
    bar = progress_bar(total=target, desc=f"draining {name}", unit="row")
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            now_done = progress()
        except Exception as exc:  # the broker or catalog busy for a moment: ask again
            if str(exc) != unknown:
                log(f"{name}: progress unknown for now ({exc})")
            unknown, now_done = str(exc), done
        if now_done != done:
            done, last_change = now_done, time.monotonic()
            bar.total = max(target, done)  # more than expected shows as 100%, not past it
            bar.update(max(done, 0) - bar.n)
        if done >= target:
            break
        if time.monotonic() - last_change > s.demo.stall_timeout_s:
            log(f"{name}: no progress for {s.demo.stall_timeout_s:.0f} s at {done}/{target}")
            break
        time.sleep(1.0)
    bar.close()
    proc.terminate()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        return max(done, progress())
    except Exception:
        return done


def _last_json_line(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                parsed: dict[str, Any] = json.loads(line)
                return parsed
            except json.JSONDecodeError:
                continue
    return {}


def _measure(s: Settings, produced: dict[str, int], labeler: dict[str, Any]) -> dict[str, Any]:
    from infra.kafka_io import read_all
    from serving.labeler.freshness import freshness
    from serving.teacher.metrics import qwk
    from streams.enrich.reference import pit_violations
    from streams.generator.truth import load_truth

    catalog = open_catalog(s)
    ns = s.catalog.namespace
    truth = load_truth(s.generator.truth_dir)  # type: ignore[arg-type]
    enriched = catalog.load_table(f"{ns}.impressions_enriched").scan().to_arrow()
    ids = enriched.column("impression_id").to_pylist()
    impressions = produced.get("impressions", 0)
    events = {
        t: truth.events(t)
        for t in ("impressions", "pin_content", "pin_captions", "board_saves", "engagements")
    }
    violations = pit_violations(enriched.to_pylist(), events, s.flink)
    labels = (
        catalog.load_table(f"{ns}.labels")
        .scan(selected_fields=("impression_id", "query", "pin_id", "teacher_version", "probs"))
        .to_arrow()
    )
    label_keys = list(
        zip(
            labels.column("impression_id").to_pylist(),
            labels.column("teacher_version").to_pylist(),
            strict=True,
        )
    )
    by_version = Counter(v for _, v in label_keys)
    labeled_ids = {i for i, _ in label_keys}
    grades = truth.grades()
    pairs = [
        (int(np.argmax(p)) + 1, grades[(q, pin)])
        for q, pin, p in zip(
            labels.column("query").to_pylist(),
            labels.column("pin_id").to_pylist(),
            labels.column("probs").to_pylist(),
            strict=True,
        )
        if (q, pin) in grades
    ]
    predicted = np.array([p for p, _ in pairs], dtype=int)
    actual = np.array([a for _, a in pairs], dtype=int)
    scale = int(max(predicted.max(initial=1), actual.max(initial=1)))
    fresh = freshness(catalog, ns, start="enriched_at")
    dlq = {t: len(read_all(s, t, 1.5)) for t in DLQ_TOPICS}
    sample = [
        {
            k: (v if isinstance(v, str | int | float | list) or v is None else str(v))
            for k, v in row.items()
            if not k.startswith("_")
        }
        for row in enriched.slice(0, 2).to_pylist()
    ]
    return {
        "events_produced": produced,
        "impressions_generated": impressions,
        "rows_in_iceberg": {"impressions_enriched": enriched.num_rows, "labels": labels.num_rows},
        "enriched_rows": enriched.num_rows,
        "enriched_duplicates": len(ids) - len(set(ids)),
        "missing_enriched": impressions - len(set(ids)),
        "dlq_records": sum(dlq.values()),
        "dlq_by_topic": {t: n for t, n in dlq.items() if n},
        "pit_violations": len(violations),
        "pit_violation_examples": [str(v) for v in violations[:5]],
        # Share of enriched rows that carry each feature (the joins really found versions).
        "feature_coverage": {
            f: round(1 - enriched.column(f).null_count / enriched.num_rows, 4)
            if enriched.num_rows
            else 0.0
            for f in ("title", "caption", "board_titles", "top_queries")
        },
        "labels_rows": labels.num_rows,
        "labels_by_version": dict(by_version),
        "label_duplicates": len(label_keys) - len(set(label_keys)),
        "unlabeled_impressions": len(set(ids) - labeled_ids),
        "freshness_lag_p50_s": fresh.lag_p50_s,
        "freshness_lag_p95_s": fresh.lag_p95_s,
        "freshness_measured_from": fresh.start,
        "dedup_hit_rate": _hit_rate(labeler),
        "teacher_truth_agreement": {
            "pairs": len(pairs),
            "exact": round(float((predicted == actual).mean()), 4) if pairs else None,
            "within_one": round(float((abs(predicted - actual) <= 1).mean()), 4) if pairs else None,
            "qwk": round(qwk(actual, predicted, scale), 4) if pairs else None,
        },
        "labeler": labeler,
        "sample_enriched_rows": sample,
    }


def _student(s: Settings, work: Path, labels_by_version: dict[str, int]) -> dict[str, Any]:
    """A student distilled from the demo's labels: trained on the first 70% of the
    impressions (by event time), evaluated on the rest against the truth and the teacher."""
    from serving.dataset import build_training_set
    from serving.student.evaluate import evaluate_student
    from serving.student.model import StudentConfig
    from serving.student.train import train_from_table

    if not labels_by_version:
        return {"skipped": "no labels in Iceberg"}
    version = max(labels_by_version, key=lambda v: labels_by_version[v])
    table = s.demo.student_table
    rows = build_training_set(s, version, table)
    times = sorted(
        open_catalog(s)
        .load_table(f"{s.catalog.namespace}.{table}")
        .scan(selected_fields=("event_time",))
        .to_arrow()
        .column("event_time")
        .to_pylist()
    )
    until = times[int(s.demo.student_train_share * len(times))]
    out = work / "student"
    teacher_dir = Path(s.teacher.model_dir)  # type: ignore[arg-type]
    student = train_from_table(
        s, table, out, teacher_dir, version, until, StudentConfig(), version="student-demo"
    )
    report = evaluate_student(s, out, table, teacher_dir, truth_dir=s.generator.truth_dir)
    return {
        "dir": str(out),
        "version": student.version,
        "teacher_version": version,
        "training_rows": student.manifest.training["rows"],
        "training_set_rows": rows,
        "evaluated_rows": report["rows"],
        "student_truth_qwk": report["vs_truth"]["student"]["qwk"],
        "student_truth_ndcg10": report["vs_truth"]["student"]["ndcg10"],
        "teacher_truth_qwk": report["vs_truth"]["teacher"]["qwk"],
        "bi_cosine_truth_ndcg10": report["vs_truth"]["bi_cosine"]["ndcg10"],
        "student_teacher_qwk": report["vs_teacher"]["qwk"],
        "student_pairs_per_s": report["serving"]["pairs_per_s"],
        "student_request_p99_ms": report["serving"]["request_p99_ms"],
    }


def _hit_rate(labeler: dict[str, Any]) -> float | None:
    rows = labeler.get("rows") or 0
    return round(labeler.get("cache_hits", 0) / rows, 4) if rows else None


def print_report(report: dict[str, Any]) -> None:
    line = "=" * 72
    print(f"\n{line}\nfreshlabel demo report\n{line}")
    t = report.get("teacher", {})
    print(
        f"teacher              {t.get('served_version')} ({t.get('source')}, "
        f"{t.get('scale')} levels)"
    )
    print(f"events produced      {report['events_produced']}")
    print(
        f"impressions          {report['impressions_generated']} generated -> "
        f"{report['enriched_rows']} enriched rows in Iceberg "
        f"({report['enriched_duplicates']} duplicates, {report['missing_enriched']} missing)"
    )
    print(f"point-in-time        {report['pit_violations']} violations against the truth")
    print(f"feature coverage     {report['feature_coverage']}")
    print(f"dead letters         {report['dlq_records']} {report['dlq_by_topic']}")
    print(
        f"labels               {report['labels_rows']} rows {report['labels_by_version']}, "
        f"{report['label_duplicates']} duplicates, "
        f"{report['unlabeled_impressions']} impressions unlabeled"
    )
    print(f"dedup hit rate       {report['dedup_hit_rate']}")
    print(
        f"freshness (from {report['freshness_measured_from']})  p50 "
        f"{report['freshness_lag_p50_s']} s, p95 {report['freshness_lag_p95_s']} s"
    )
    agreement = report["teacher_truth_agreement"]
    print(
        f"teacher vs truth     exact {agreement['exact']}, within one grade "
        f"{agreement['within_one']}, QWK {agreement['qwk']} on {agreement['pairs']} labels"
    )
    student = report.get("student") or {}
    if "student_truth_qwk" in student:
        print(
            f"student              QWK {student['student_truth_qwk']} vs truth, "
            f"{student['student_teacher_qwk']} vs teacher on {student['evaluated_rows']} later "
            f"impressions; {student['student_pairs_per_s']:,.0f} pairs/s on CPU"
        )
    print(f"quality alerts       {report['dq_alerts']}")
    print(f"quarantined rows     {report['quarantined_rows']} (report: {report['dq_report']})")
    print("sample enriched rows:")
    for row in report["sample_enriched_rows"]:
        print("  " + json.dumps(row, ensure_ascii=False, default=str)[:400])
    print(f"took {report['seconds']} s\n{line}")


def write_report(settings: Settings, report: dict[str, Any]) -> Path:
    path = settings.state_dir / "demo-report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return path
