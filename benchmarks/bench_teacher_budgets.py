"""Send what you use: does a smaller per-field word budget keep the teacher's quality?

    .venv/bin/python -m benchmarks.bench_teacher_budgets \\
        --data ../shared/data/crowdflower/train.parquet --budget description=24

Builds the pin texts with the given word budgets instead of those in
`serving/teacher/text.py` FIELDS (only for this process), and runs the same query-grouped
cross-validation as `freshlabel teacher eval --cv 3 --epochs 1` (same folds, seeds and
recipe; a new frozen-layer cache, since the texts differ). Prints nDCG@10, QWK and
accuracy next to the WordPiece tokens per pair (cross-encoder) and per pin (bi-encoder),
which is what inference pays for. Compare with the same CV at the shipped budgets
(docs/teacher.md); a budget is only worth changing where quality holds. The bi-encoder
reads the pin text through `settings.teacher.bi_encoder_budgets`
(`FRESHLABEL_TEACHER__BI_ENCODER_BUDGETS='{"description": 8}'`); its tokens are counted so.

    .venv/bin/python -m benchmarks.bench_teacher_budgets --bi-zero-shot description=48,16,8,0

The bi-encoder's view alone, no training: its zero-shot cosine's nDCG@10 on every row and
its tokens per pin, for each word budget of one field (the CV above then checks the one
chosen inside the teacher).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import serving.teacher.text as text
from benchmarks.cpu import machine_load
from infra.config import Settings
from serving.teacher.data import load_pairs
from serving.teacher.encoders import BiEncoder, base_model_dir, load_tokenizer
from serving.teacher.evaluate import cross_validate
from serving.teacher.metrics import ndcg_at
from serving.teacher.text import PinView
from serving.teacher.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def override_budgets(items: list[str]) -> dict[str, int]:
    """Apply `field=words` overrides to text.FIELDS in this process; returns the budgets.

    Raises:
        SystemExit: an unknown field or a budget that is not a positive integer.
    """
    budgets = {field: budget for field, _, budget in text.FIELDS}
    for item in items:
        field, _, value = item.partition("=")
        if field not in budgets or not value.isdigit() or int(value) < 1:
            raise SystemExit(
                f"--budget {item!r}: give FIELD=WORDS with FIELD one of {', '.join(budgets)} "
                "and WORDS a positive integer"
            )
        budgets[field] = int(value)
    text.FIELDS = tuple((f, marker, budgets[f]) for f, marker, _ in text.FIELDS)
    return budgets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/crowdflower/train.parquet"
    )
    parser.add_argument("--columns", default="crowdflower")
    parser.add_argument("--budget", action="append", default=[], help="FIELD=WORDS (repeat)")
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--bi-zero-shot",
        metavar="FIELD=W1,W2,...",
        help="only the bi-encoder's zero-shot nDCG@10 for each word budget of FIELD",
    )
    args = parser.parse_args()
    budgets = override_budgets(args.budget)
    if args.bi_zero_shot:
        bi_zero_shot(args.data, args.columns, args.bi_zero_shot)
        return

    settings = Settings()
    config = TrainConfig.from_settings(settings.teacher, epochs=args.epochs)
    pairs = load_pairs(args.data, args.columns)
    tokenizer = load_tokenizer(base_model_dir())
    pair_ids = tokenizer(
        pairs.queries, pairs.pin_texts, truncation="only_second", max_length=config.max_length
    )["input_ids"]
    view = config.bi_encoder_view()
    bi_texts = [view(t) for t in pairs.pin_texts]
    pin_ids = tokenizer(bi_texts, truncation=True, max_length=config.max_length)["input_ids"]
    load_before = machine_load()
    started = time.monotonic()
    result = cross_validate(
        pairs,
        args.cv,
        config,
        progress=lambda m: print(m, flush=True),
        cache_dir=settings.teacher_cache_dir,
    ).summary()
    load_after = machine_load()
    row = {
        "budgets": budgets,
        "bi_encoder_budgets": config.bi_encoder_budgets,
        "ndcg10": result["ndcg10"],
        "qwk": result["qwk"],
        "accuracy": result["accuracy"],
        "tokens_per_pair": float(np.mean([len(x) for x in pair_ids])),
        "tokens_per_pin": float(np.mean([len(x) for x in pin_ids])),
        "seconds": round(time.monotonic() - started, 1),
        "load_before": load_before,
        "load_after": load_after,
    }
    print("| budgets (words) | nDCG@10 | QWK | accuracy | tokens/pair (cross) | tokens/pin (bi) |")
    print("| --- | --- | --- | --- | --- | --- |")
    shown = ", ".join(f"{k} {v}" for k, v in budgets.items())
    print(
        f"| {shown} | {row['ndcg10']:.4f} | {row['qwk']:.4f} | {row['accuracy']:.4f} "
        f"| {row['tokens_per_pair']:.1f} | {row['tokens_per_pin']:.1f} |"
    )
    print(json.dumps(row))


def bi_zero_shot(data: Path, columns: str, spec: str) -> None:
    """Print the zero-shot bi-encoder's nDCG@10 and tokens per pin for each budget in
    `spec` ("description=48,16,8,0"): what its view of the pin costs and ranks."""
    field, _, values = spec.partition("=")
    try:
        words = [int(v) for v in values.split(",")]
    except ValueError:
        raise SystemExit(f"--bi-zero-shot {spec!r}: give FIELD=W1,W2,... (whole numbers)") from None
    pairs = load_pairs(data, columns)
    load_before = machine_load()
    print(
        f"| {field} words | markers | bi-encoder nDCG@10 (zero-shot, {len(pairs.frame)} rows) "
        "| tokens/pin |"
    )
    print("| --- | --- | --- | --- |")
    rows = []
    bi = BiEncoder.load()
    for budget in words:
        for markers in (True, False):
            try:
                bi.pin_view = PinView({field: budget}, markers)
            except ValueError as exc:
                raise SystemExit(f"--bi-zero-shot {spec!r}: {exc}") from None
            texts = [bi.pin_view(t) for t in pairs.pin_texts]
            ids = bi.tokenizer(texts, truncation=True, max_length=bi.max_length)["input_ids"]
            cosine = bi.cosine(pairs.queries, pairs.pin_texts)
            row = {
                "budget": {field: budget},
                "markers": markers,
                "ndcg10": ndcg_at(pairs.labels, cosine, pairs.queries, 10),
                "tokens_per_pin": float(np.mean([len(x) for x in ids])),
            }
            rows.append(row)
            print(
                f"| {budget} | {'yes' if markers else 'no'} | {row['ndcg10']:.4f} "
                f"| {row['tokens_per_pin']:.1f} |",
                flush=True,
            )
    print(json.dumps({"rows": rows, "load_before": load_before, "load_after": machine_load()}))


if __name__ == "__main__":
    main()
