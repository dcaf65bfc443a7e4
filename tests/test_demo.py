"""`freshlabel demo` end to end: every part of the platform, on its own ports and state."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra.config import Settings
from infra.process import free_port
from tests.conftest import ROOT, settings_env


@pytest.mark.slow
@pytest.mark.stack
def test_demo_runs_the_whole_platform_and_reports(settings: Settings) -> None:
    env = settings_env(settings)
    for name in (
        "FLINK__REST_PORT",
        "FLINK__JOBMANAGER_RPC_PORT",
        "TRITON__HTTP_PORT",
        "TRITON__GRPC_PORT",
        "TRITON__METRICS_PORT",
    ):
        env[f"FRESHLABEL_{name}"] = str(free_port())
    # A configured teacher would make this test depend on `make teacher`: use the quick one.
    env["FRESHLABEL_TEACHER__TEACHERS_DIR"] = str(settings.state_dir / "no-teachers")
    env["FRESHLABEL_DEMO__IMPRESSIONS"] = "3000"
    result = subprocess.run(
        [sys.executable, "-m", "freshlabel.cli", "demo"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "freshlabel demo report" in result.stdout
    report = json.loads((settings.state_dir / "demo-report.json").read_text())
    assert report["teacher"]["source"] == "quick-world-sample"
    assert report["impressions_generated"] >= 3000
    assert report["events_produced"]["impressions"] == report["impressions_generated"]
    assert report["enriched_rows"] == report["impressions_generated"]
    assert report["enriched_duplicates"] == 0 and report["pit_violations"] == 0
    # The features are really there, not all null.
    coverage = report["feature_coverage"]
    assert coverage["title"] > 0.9, coverage
    assert coverage["caption"] > 0.25 and coverage["top_queries"] > 0.1, coverage
    assert report["labels_rows"] == report["enriched_rows"]
    assert report["label_duplicates"] == 0 and report["unlabeled_impressions"] == 0
    # The served teacher runs int8 ONNX by default: its labels carry that in their version.
    assert report["teacher"]["served_version"] == report["teacher"]["version"] + "+onnx-int8"
    assert set(report["labels_by_version"]) == {report["teacher"]["served_version"]}
    assert 0 < report["dedup_hit_rate"] < 1
    assert report["freshness_lag_p95_s"] is not None
    assert report["teacher_truth_agreement"]["pairs"] == report["labels_rows"]
    assert report["dq_alerts"] and report["quarantined_rows"] > 0
    # The small student run: distilled from the labels, judged on later impressions.
    student = report["student"]
    assert student["teacher_version"] == report["teacher"]["served_version"]
    assert 0 < student["evaluated_rows"] < student["training_set_rows"]
    assert -1 <= report["student_truth_qwk"] <= 1 and report["student_teacher_qwk"] > 0
    assert report["student_pairs_per_s"] > 0
    for key in ("dlq_records", "rows_in_iceberg"):
        assert key in report
