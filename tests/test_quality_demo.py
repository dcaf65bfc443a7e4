"""The demo's bad-data burst on a fresh stack: what `make demo` reports as dq_alerts."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshlabel.demo_burst import inject_bad_burst
from infra.config import Settings

pytestmark = pytest.mark.slow


def test_burst_raises_the_alerts_and_quarantines_the_broken_labels(
    running_stack: Settings,
) -> None:
    burst = inject_bad_burst(running_stack, rows_per_batch=200)

    assert {
        "impressions_enriched.caption_coverage",
        "impressions_enriched.volume",
        "labels.probs_sum_to_one",
        "labels.probs_in_range",
        "labels.label_scale_matches",
        "labels.required_keys",
    } <= set(burst.dq_alerts)
    # One broken label in ten, never dropped: in the quarantine table.
    assert burst.quarantined_rows == 20
    assert burst.quarantined_by_table == {
        "impressions_enriched_quarantine": 0,
        "labels_quarantine": 20,
    }
    # Missing captions and the volume drop are warnings: those rows commit.
    assert burst.rows_committed == {"impressions_enriched": 200 + 200 + 10, "labels": 180}
    page = Path(str(burst.html_report)).read_text()
    assert "labels_quarantine: 20" in page
