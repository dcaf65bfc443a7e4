"""Iceberg sink throughput: enriched rows/s from a topic into the table, exactly once.

    .venv/bin/python benchmarks/bench_sink.py --rows 200000

Starts its own stack (free ports, temporary state folder), pre-fills `impressions.enriched`
with realistic enriched rows, then times `IcebergSink.run` from the first poll to the last
commit. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra import stack  # noqa: E402
from infra.config import Settings  # noqa: E402
from infra.process import free_port  # noqa: E402
from schemas import EnrichedImpression  # noqa: E402
from streams.iceberg_sink import IcebergSink  # noqa: E402
from streams.kafka_io import producer  # noqa: E402

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def enriched(i: int) -> EnrichedImpression:
    at = T0 + timedelta(seconds=2 * i)
    return EnrichedImpression(
        impression_id=f"imp-{i}", request_id=f"req-{i // 8}", user_id=f"user-{i % 5000}",
        query=f"cozy winter sweater {i % 300}", pin_id=f"pin-{i % 10000}", position=i % 8 + 1,
        country="US", locale="en-US", event_time=at,
        title="Chunky knit cardigan in oatmeal wool", description="A warm, oversized cardigan "
        "knitted from merino wool, with wooden buttons and deep pockets." * 2,
        link_title="Knit cardigan | shop", content_updated_at=at - timedelta(days=3),
        caption="a woman wearing a chunky cream cardigan in a snowy forest",
        caption_updated_at=at - timedelta(days=2),
        board_titles=["winter outfits", "knitting ideas", "cozy"],
        boards_updated_at=at - timedelta(hours=5),
        top_queries=["cardigan", "winter sweater", "knit cardigan women"],
        top_queries_updated_at=at - timedelta(days=1), enriched_at=at,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(state_dir=Path(tmp), broker={"port": free_port()})
        stack.up(settings)
        try:
            payloads = [(e.key.encode(), e.to_bytes()) for e in map(enriched, range(args.rows))]
            with producer(settings) as prod:
                for key, value in payloads:
                    prod.send("impressions.enriched", key=key, value=value)
                prod.flush()
            sink = IcebergSink(settings, "impressions.enriched", "impressions_enriched",
                               batch_rows=args.batch_rows, batch_seconds=60)
            started = time.monotonic()
            stats = sink.run(max_rows=args.rows, idle_timeout_s=10)
            elapsed = time.monotonic() - started
        finally:
            stack.down(settings)
    print(json.dumps({"rows": stats.rows_committed, "commits": stats.commits,
                      "seconds": round(elapsed, 2),
                      "rows_per_s": round(stats.rows_committed / elapsed)}))


if __name__ == "__main__":
    main()
