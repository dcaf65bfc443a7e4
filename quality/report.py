"""`freshlabel dq report`: what the checks saw, as a terminal summary and an HTML page.

The page (index.html plus PNG plots, in one folder) shows, for the chosen period: each
check's runs, failures and pass rate; the failures (what alerted) with their batches; the
quarantined rows by table with a sample; and plots of the pass rate per check over time,
the label distribution over time, feature coverage and the freshness lag.
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyiceberg.expressions import GreaterThanOrEqual

from infra.catalog import ensure_namespace, ensure_table, open_catalog
from infra.cli_args import parse_time
from infra.config import Settings
from schemas.quality import QUARANTINE_TABLES, CheckResult

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
SAMPLE_ROWS = 20


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'24h', '30m', '7d', '90s' back from now, or an ISO time (UTC if it has no zone)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration like 24h, 30m, 7d or an ISO time like "
            "2026-11-20T12:00:00Z"
        ) from None


@dataclass
class CheckSummary:
    table: str
    check: str
    severity: str
    runs: int = 0
    failures: int = 0
    skipped: int = 0
    last_observed: float | None = None
    threshold: str = ""

    @property
    def pass_rate(self) -> float | None:
        return None if not self.runs else 1 - self.failures / self.runs


@dataclass
class ReportData:
    since: datetime
    results: list[dict[str, Any]]
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def checks(self) -> list[CheckSummary]:
        by_key: dict[tuple[str, str], CheckSummary] = {}
        batches: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
        for row in self.results:
            key = (row["table_name"], row["check"])
            summary = by_key.setdefault(key, CheckSummary(key[0], key[1], row["severity"]))
            summary.threshold = row["threshold"]
            if row["skipped"]:
                summary.skipped += 1
                continue
            # A check over several columns runs once per batch: it failed if any failed.
            batch = batches[key]
            batch[row["batch_key"]] = batch.get(row["batch_key"], True) and row["passed"]
            if row["observed_value"] is not None and not row["column"]:
                summary.last_observed = row["observed_value"]
        for key, verdicts in batches.items():
            by_key[key].runs = len(verdicts)
            by_key[key].failures = sum(not ok for ok in verdicts.values())
        return sorted(by_key.values(), key=lambda s: (s.table, -s.failures, s.check))

    def failures(self) -> list[dict[str, Any]]:
        rows = [r for r in self.results if not r["passed"]]
        return sorted(rows, key=lambda r: r["evaluated_at"], reverse=True)


def load(settings: Settings, since: datetime) -> ReportData:
    catalog = open_catalog(settings)
    namespace = settings.catalog.namespace
    ensure_namespace(catalog, namespace)
    results_table = ensure_table(catalog, namespace, CheckResult.table)
    where = GreaterThanOrEqual("evaluated_at", since.isoformat())
    results = results_table.scan(row_filter=where).to_arrow().to_pylist()
    # A replayed batch's results replace the first try's: keep the latest per key.
    latest: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
    for row in sorted(results, key=lambda r: r["_ingested_at"]):
        latest[(row["table_name"], row["batch_key"], row["check"], row["column"])] = row
    data = ReportData(since, sorted(latest.values(), key=lambda r: r["evaluated_at"]))
    for name in QUARANTINE_TABLES.values():
        table = ensure_table(catalog, namespace, name)
        rows = table.scan(row_filter=GreaterThanOrEqual("_ingested_at", since.isoformat()))
        arrow = rows.to_arrow()
        data.quarantined[name] = arrow.num_rows
        keep = [c for c in arrow.column_names if not c.endswith("_updated_at")]
        data.quarantine_samples[name] = arrow.select(keep).slice(0, SAMPLE_ROWS).to_pylist()
    return data


def summary_lines(data: ReportData) -> list[str]:
    lines = [f"data quality since {data.since:%Y-%m-%d %H:%M:%S} UTC"]
    checks = data.checks()
    if not checks:
        lines.append("no checks ran in this period")
    else:
        lines.append(f"{'table':<22}{'check':<26}{'sev':<9}{'runs':>5}{'fail':>6}{'pass':>7}")
        for s in checks:
            rate = "-" if s.pass_rate is None else f"{100 * s.pass_rate:.0f}%"
            lines.append(
                f"{s.table:<22}{s.check:<26}{s.severity:<9}{s.runs:>5}{s.failures:>6}{rate:>7}"
            )
    failures = data.failures()
    lines.append(f"failed checks (alerts raised): {len(failures)}")
    for row in failures[:10]:
        column = f" [{row['column']}]" if row["column"] else ""
        lines.append(
            f"  {row['evaluated_at']:%H:%M:%S} {row['table_name']}.{row['check']}{column}: "
            f"{row['message']}"
        )
    quarantined = ", ".join(f"{t} {n}" for t, n in data.quarantined.items())
    lines.append(f"quarantined rows: {sum(data.quarantined.values())} ({quarantined})")
    return lines


# Plots ----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in CI
    import matplotlib.pyplot as plt

    return plt


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_pass_rate(data: ReportData, path: Path) -> None:
    """Checks x time buckets, coloured by the share of batches that passed."""
    plt = _pyplot()
    import numpy as np

    # One verdict per (check, batch): a check over several columns failed if any did.
    verdicts: dict[tuple[str, str], tuple[datetime, bool]] = {}
    for r in data.results:
        if not r["skipped"]:
            key = (f"{r['table_name']}.{r['check']}", r["batch_key"])
            _, ok = verdicts.get(key, (r["evaluated_at"], True))
            verdicts[key] = (r["evaluated_at"], ok and bool(r["passed"]))
    names = sorted({name for name, _ in verdicts})
    fig, ax = plt.subplots(figsize=(11, 0.3 * max(len(names), 4) + 1.5), constrained_layout=True)
    if not verdicts:
        _empty(ax, "no checks ran")
    else:
        times = [at.timestamp() for at, _ in verdicts.values()]
        start, end = min(times), max(times) + 1e-6
        buckets = 24
        passed = np.zeros((len(names), buckets))
        total = np.zeros((len(names), buckets))
        for (name, _), (at, ok) in verdicts.items():
            row = names.index(name)
            col = min(int((at.timestamp() - start) / (end - start) * buckets), buckets - 1)
            total[row, col] += 1
            passed[row, col] += ok
        rate = np.where(total > 0, passed / np.maximum(total, 1), np.nan)
        image = ax.imshow(rate, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ticks = [0, buckets // 2, buckets - 1]
        labels = [
            datetime.fromtimestamp(start + (end - start) * (t + 0.5) / buckets, UTC) for t in ticks
        ]
        ax.set_xticks(ticks, [f"{t:%m-%d %H:%M:%S}" for t in labels], fontsize=7)
        fig.colorbar(image, ax=ax, label="pass rate")
    ax.set_title("Pass rate per check over time (share of batches passing)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _series(data: ReportData, check_suffix: str) -> dict[str, list[tuple[datetime, float]]]:
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for r in data.results:
        if r["check"].endswith(check_suffix) and r["observed_value"] is not None:
            series[f"{r['table_name']}.{r['check']}"].append(
                (r["evaluated_at"], r["observed_value"])
            )
    return series


def plot_lines(data: ReportData, check_suffix: str, title: str, ylabel: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    series = _series(data, check_suffix)
    if not series:
        _empty(ax, "no data in this period")
    for name, points in sorted(series.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name)
    thresholds = {
        (r["table_name"], r["check"]): (r["threshold_min"], r["threshold_max"])
        for r in data.results
        if r["check"].endswith(check_suffix)
    }
    for low, high in thresholds.values():
        for value in (low, high):
            if value is not None:
                ax.axhline(value, color="red", linestyle="--", linewidth=0.8)
    if series:
        ax.legend(fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_label_distribution(data: ReportData, path: Path) -> None:
    """Share of each argmax grade per labels batch (stacked)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    batches = []
    for r in data.results:
        if r["check"] == "label_distribution" and r["details"]:
            profile = json.loads(r["details"]).get("profile")
            if profile:
                batches.append((r["evaluated_at"], profile))
    if not batches:
        _empty(ax, "no labels in this period")
    else:
        grades = sorted({g for _, p in batches for g in p}, key=lambda g: (len(g), g))
        times = [t for t, _ in batches]
        shares = []
        for grade in grades:
            shares.append([p.get(grade, 0) / max(sum(p.values()), 1) for _, p in batches])
        ax.stackplot(times, shares, labels=[f"grade {g}" for g in grades])
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
        fig.autofmt_xdate()
    ax.set_title("Label distribution over time (argmax grade share per batch)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# HTML ----------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    settings: Settings,
    since: datetime,
    out_dir: Path | None = None,
    data: ReportData | None = None,
) -> Path:
    """Write index.html and its plots; returns the page's path."""
    out = out_dir or settings.state_dir / "dq-report"
    out.mkdir(parents=True, exist_ok=True)
    data = data or load(settings, since)
    plot_pass_rate(data, out / "pass_rate.png")
    plot_label_distribution(data, out / "label_distribution.png")
    plot_lines(
        data, "_coverage", "Feature coverage per batch", "share of rows", out / "coverage.png"
    )
    plot_lines(data, "freshness_lag", "Freshness lag (p95 per batch)", "seconds", out / "lag.png")

    checks = [
        [
            s.table,
            s.check,
            s.severity,
            s.runs,
            s.failures,
            "-" if s.pass_rate is None else f"{100 * s.pass_rate:.0f}%",
            s.skipped,
            s.threshold,
        ]
        for s in data.checks()
    ]
    failures = [
        [
            f"{r['evaluated_at']:%Y-%m-%d %H:%M:%S}",
            r["table_name"],
            r["check"],
            r["column"] or "",
            r["severity"],
            r["message"],
            r["failed_rows"],
            r["offset_ranges"],
        ]
        for r in data.failures()[:200]
    ]
    sections = [
        f"<h1>freshlabel data quality</h1><p>since {data.since:%Y-%m-%d %H:%M:%S} UTC, "
        f"generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC</p>",
        "<h2>Checks</h2>",
        _table(
            ["table", "check", "severity", "runs", "failed", "pass rate", "skipped", "threshold"],
            checks,
        ),  # fmt: skip
        f"<h2>Failed checks (alerts raised): {len(data.failures())}</h2>",
        _table(
            ["time", "table", "check", "column", "severity", "what", "rows", "offsets"], failures
        ),  # fmt: skip
        f"<h2>Quarantined rows: {sum(data.quarantined.values())}</h2>",
    ]
    for name, count in data.quarantined.items():
        sample = data.quarantine_samples.get(name, [])
        sections.append(f"<h3>{html.escape(name)}: {count}</h3>")
        if sample:
            headers = list(sample[0])
            sections.append(_table(headers, [[row[h] for h in headers] for row in sample]))
    sections.append("<h2>Plots</h2>")
    for image in ("pass_rate.png", "label_distribution.png", "coverage.png", "lag.png"):
        sections.append(f'<p><img src="{image}" alt="{image}"></p>')
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee}"
    )
    page = out / "index.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>freshlabel dq report</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>",
        encoding="utf-8",
    )
    return page
