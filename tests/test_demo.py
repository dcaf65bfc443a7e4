"""`freshlabel demo` end to end, on its own ports and state folder."""

from __future__ import annotations

import json

import pytest

from infra.config import Settings
from tests.conftest import freshlabel


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_its_report(settings: Settings) -> None:
    result = freshlabel(settings, "demo", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "freshlabel demo report" in result.stdout
    report = json.loads((settings.state_dir / "demo-report.json").read_text())
    produced = report["events_produced"]
    assert set(produced) == {"impressions", "pin_content", "pin_captions", "board_saves",
                             "engagements"}
    for topic, table in [("impressions", "impressions"), ("pin_content", "pin_content"),
                         ("pin_captions", "pin_captions"), ("board_saves", "board_saves"),
                         ("engagements", "engagements")]:
        assert report["rows_in_iceberg"][table] == produced[topic]
    assert report["dlq_records"]["impressions"] == report["bad_records_produced"] == 4
    # the stack is down again
    assert not (settings.state_dir / "demo-run" / "stack.json").exists()
