"""PASER selection end to end on real data: SmolLM2-135M-Instruct against a pruned copy of itself.

    python benchmarks/select_mix.py --rows 2000 --budget 0.2                 # issue 2's check
    python benchmarks/select_mix.py --rows 0 --max-length 256                # all 23,592 rows (issue 4)

Reads `../shared/data/instruct/mix_train.jsonl` at run time (never copied into the repository), prunes a copy
of the model (50% magnitude, per output row, by default), runs `PaserDatasetSelector` and prints the report:
K, per-cluster sizes, CDS, allocation, rejections and the time of each stage. Saves the report as JSON.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import torch
from datasets import load_dataset
from harness import MIX_TRAIN, RESULTS, peak_rss_gib

from paser_hf import PaserConfig, PaserDatasetSelector
from paser_hf.caching import combine
from paser_hf.models import fastest_dtype, load_model_and_tokenizer
from paser_hf.pruning import prune_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(MIX_TRAIN))
    parser.add_argument("--rows", type=int, default=2000, help="seeded sample of this many rows; 0 = all")
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--budget-unit", default="rows", choices=["rows", "tokens"])
    parser.add_argument("--allocation", default="cds", choices=["cds", "size_cds"])
    parser.add_argument("--concept-similarity", type=float, default=None, help="None: exact concept matching")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--prune-method", default="magnitude")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="auto: bfloat16 where the device has native bfloat16, else float32")
    parser.add_argument("--tokens-per-batch", type=int, default=None, help="None: 4096 on CPU, 65536 on a GPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="embedding and JSD cache: a killed run resumes from it")
    parser.add_argument("--report-dir", default=None, help="also save the report bundle (JSON, figures) here")
    parser.add_argument("--out", default=str(RESULTS / "select_mix.json"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = load_dataset("json", data_files=args.data, split="train")
    # datasets keys a local file by its path and modification time; key it by content instead, so that the
    # --cache-dir of a run on one machine resumes on another that holds a fresh copy of the same file.
    with open(args.data, "rb") as handle:
        content = hashlib.file_digest(handle, "sha256").hexdigest()
    data = data.select(range(len(data)), new_fingerprint=combine("select_mix-data", content))
    if args.rows:
        data = data.shuffle(seed=args.seed).select(range(args.rows)).flatten_indices()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype == "auto":
        args.dtype = fastest_dtype(device)
    dtype = getattr(torch, args.dtype)
    original, tokenizer = load_model_and_tokenizer(None, dtype=dtype)
    original.to(device)
    pruned = copy.deepcopy(original)
    t0 = time.perf_counter()
    pruning = prune_model(pruned, method=args.prune_method, sparsity=args.sparsity)
    prune_seconds = time.perf_counter() - t0

    config = PaserConfig(
        budget=args.budget,
        budget_unit=args.budget_unit,
        allocation=args.allocation,
        concept_similarity=args.concept_similarity,
        max_length=args.max_length,
        scoring_tokens_per_batch=args.tokens_per_batch,
        seed=args.seed,
        cache_dir=args.cache_dir,
    )
    selector = PaserDatasetSelector(original, pruned, tokenizer, config=config)
    t0 = time.perf_counter()
    subset = selector(data)
    total = time.perf_counter() - t0
    report = selector.report_

    print(f"\n{len(data)} rows -> {len(subset)} selected (B = {report.budget}), K = {report.k}, "
          f"device {device}, {args.dtype}, {os.cpu_count()} CPU cores")
    print(f"pruned: {args.prune_method} {args.sparsity:.0%}, achieved sparsity {pruning.sparsity:.3f} "
          f"({prune_seconds:.1f} s)")
    print("K curve:", {k: round(v, 4) for k, v in report.k_curve.items()})
    print(report.cluster_table())
    print(f"tokens: {report.tokens}; concept rejection rate: {report.concept_rejection_rate}")
    print(f"concept graph: {report.concept_graph}; truncated rows: {report.num_truncated}; "
          f"skipped: {report.num_skipped_empty_response}")
    print("stage seconds:", report.timings, f"total {total:.1f} s")
    tokens_per_second = report.scored_tokens / max(report.timings["divergence"], 1e-9)
    print(f"JSD scoring: {report.scored_tokens} tokens, {tokens_per_second:.0f} tokens/s")
    shares = {k: round(v / total, 3) for k, v in report.timings.items()}
    print("stage shares:", shares)
    peak_gib = peak_rss_gib()
    print(f"peak RSS {peak_gib:.2f} GiB")

    scores = selector.scores_
    chosen = [status == "selected" for status in scores["paser_status"]]
    top_selected = {}
    for label, concepts, keep in zip(scores["paser_cluster"], scores["paser_concepts"], chosen):
        if keep:
            top_selected.setdefault(int(label), Counter()).update(set(concepts))
    top_selected = {c: counts.most_common(6) for c, counts in sorted(top_selected.items())}
    print("top concepts of the selected rows per cluster:", top_selected)

    result = {
        "rows": len(data),
        "selected": len(subset),
        "device": device,
        "dtype": args.dtype,
        "cpu_count": os.cpu_count(),
        "pruning": pruning.to_dict(),
        "total_seconds": round(total, 2),
        "peak_rss_gib": round(peak_gib, 2),
        "stage_shares": shares,
        "scoring_tokens_per_second": round(tokens_per_second, 1),
        "top_concepts_selected": top_selected,
        "report": report.to_dict(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.report_dir:
        report.save(args.report_dir)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
