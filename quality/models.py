"""What the gate hands back and what an alert says."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, Field

from infra.config import Severity
from schemas.quality import CheckResult

__all__ = ["Alert", "CheckResult", "GateOutcome", "Severity"]


class Alert(BaseModel):
    """One message to the people on call: what broke, where, and which rows.

    `firing` when a check fails (again, at most once per `quality.alert_repeat_s`),
    `resolved` when it passes again. `repeats` counts the failures folded into this
    message since the previous one for the same (table, check).
    """

    status: Literal["firing", "resolved"]
    table: str
    check: str
    severity: Severity
    summary: str
    columns: list[str] = Field(default_factory=list)
    observed_value: float | None = None
    threshold: str = ""
    rows: int = 0
    failed_rows: int = 0
    quarantined_rows: int = 0
    quarantine_table: str | None = None
    batch_id: str
    offset_ranges: str = ""
    sample_rows: list[dict[str, Any]] = Field(default_factory=list)
    repeats: int = 1
    failing_since: datetime
    at: datetime

    @property
    def key(self) -> str:
        return f"{self.table}.{self.check}"


@dataclass
class GateOutcome:
    """The gate's verdict on one batch.

    `passed` commits to the table; `quarantined` (the source columns plus
    `failed_checks`) goes to the quarantine table; `results` to `dq_results`.
    """

    table_name: str
    batch_id: str
    batch_key: str
    offset_ranges: str
    passed: pa.Table
    quarantined: pa.Table
    results: list[CheckResult]
    alerts: list[Alert] = field(default_factory=list)
    # Per-batch statistics the reference window keeps (histograms, rows per window).
    profile: dict[str, Any] = field(default_factory=dict)
    # Kafka (partition, first offset, last offset) of every row of the batch.
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    # Positions, in the checked rows, of the quarantined ones (the sink's mask).
    quarantined_indices: list[int] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]
