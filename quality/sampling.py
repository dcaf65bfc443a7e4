"""The few offending rows an alert names, so the people on call can find them.

A sample names each row by its Kafka partition and offset (enough to find it in the
topic and in `<table>_quarantine`), plus at most two of its keys and the failing column's
value cut to 80 characters. It never carries a whole row: alerts go to Slack and to a
topic, and a feature text has no business there. (Not to be confused with
`quality/samples.py`, the clean and broken synthetic rows the tests and the demo send.)
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

# Keys of the source row named in an alert's sample, when the table has them.
ROW_KEYS = ("impression_id", "pin_id", "query", "teacher_version")


def sample_rows(
    rows: pa.Table, failing: list[int], column: str | None, limit: int
) -> list[dict[str, Any]]:
    """The first `limit` failing rows, as small dicts an alert can carry.

    Args:
        rows: the checked batch (with `_kafka_partition` and `_kafka_offset`).
        failing: positions of the failing rows in `rows`, in order.
        column: the column the check judged, shown (cut to 80 chars) when it is not a key.
        limit: how many rows at most (`quality.alert_sample_rows`).

    Returns:
        One dict per sampled row: `partition`, `offset`, up to two keys, the column.
    """
    picked = failing[:limit]
    if not picked:
        return []
    taken = rows.take(pa.array(picked, pa.int64()))
    keys = [k for k in ROW_KEYS if k in rows.column_names][:2]
    sample = []
    for row in taken.to_pylist():
        item: dict[str, Any] = {
            "partition": row["_kafka_partition"],
            "offset": row["_kafka_offset"],
        }
        item.update({k: row[k] for k in keys})
        if column and column in row and column not in keys:
            value = row[column]
            item[column] = value if not isinstance(value, str) else value[:80]
        sample.append(item)
    return sample
