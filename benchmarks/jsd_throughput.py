"""JSD scoring against its cost floor: two plain forward passes (original and pruned) over the same batches.

    python benchmarks/jsd_throughput.py --rows 256 --max-length 256

Rows of `../shared/data/instruct/mix_train.jsonl` (read at run time) are formatted and tokenised as the
selector does, sorted by length and packed by `--tokens-per-batch`. Each variant runs in its own subprocess
(clean peak RSS), alternating floor / scorer `--repeats` times; the best time of each is reported:
- floor: `model(input_ids, attention_mask).logits` for both models, nothing else;
- paser: `JsdScorer.score_rows` (response-only LM head, chunked float32 divergence maths).
On CPU the bound is the matrix work of the two forward passes; the scorer skips the LM head on prompt
positions, which can make it faster than the floor.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from harness import MIX_TRAIN, RESULTS, emit, peak_rss_gib, run_child


def batches(rows: int, max_length: int, tokens_per_batch: int, tokenizer):
    from datasets import load_dataset

    from paser_hf.formatting import to_prompt_completion, tokenize_prompt_completion
    from paser_hf.selection.scoring import pack_by_tokens

    data = load_dataset("json", data_files=str(MIX_TRAIN), split="train").shuffle(seed=0).select(range(rows))
    encoded = []
    for row in data:
        pc = to_prompt_completion(row, "alpaca", chat=True)
        out = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, max_length)
        if out["num_response_tokens"]:
            encoded.append((out["input_ids"], out["response_start"]))
    encoded.sort(key=lambda item: -len(item[0]))
    groups = pack_by_tokens([len(ids) for ids, _ in encoded], tokens_per_batch)
    return [[encoded[i] for i in group] for group in groups]


def run_variant(args) -> dict:
    import torch

    from paser_hf.models import load_model_and_tokenizer
    from paser_hf.pruning import prune_model
    from paser_hf.selection.divergence import JsdScorer

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    original, tokenizer = load_model_and_tokenizer(None, dtype=dtype)
    original.to(device)
    pruned = copy.deepcopy(original)
    prune_model(pruned, method="magnitude", sparsity=0.5)
    groups = batches(args.rows, args.max_length, args.tokens_per_batch, tokenizer)
    tokens = sum(len(ids) for group in groups for ids, _ in group)
    scorer = JsdScorer(original, pruned, pad_token_id=tokenizer.pad_token_id or 0, vocab=len(tokenizer),
                       tokens_per_batch=args.tokens_per_batch, chunk_tokens=args.chunk_tokens)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.inference_mode():
        for group in groups:
            if args.variant == "paser":
                scorer.score_rows([ids for ids, _ in group], [s for _, s in group], range(len(group)))
                continue
            width = max(len(ids) for ids, _ in group)
            ids = torch.full((len(group), width), tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (seq, _) in enumerate(group):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            for model in (original, pruned):
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "variant": args.variant,
        "device": device,
        "dtype": args.dtype,
        "tokens": tokens,
        "batches": len(groups),
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "peak_rss_gib": peak_rss_gib(),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--tokens-per-batch", type=int, default=4096)
    parser.add_argument("--chunk-tokens", type=int, default=None, help="None: the scorer's default for the device")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", choices=["floor", "paser"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "jsd_throughput.json"))
    args = parser.parse_args()
    if args.variant:
        emit(run_variant(args))
        return
    results = {"floor": [], "paser": []}
    for _ in range(args.repeats):
        for variant in ("floor", "paser"):
            options = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                       if k not in ("variant", "out") and v is not None]
            results[variant].append(run_child(__file__, "--variant", variant, *options))
            print(variant, results[variant][-1])
    best = {v: max(runs, key=lambda r: r["tokens_per_second"]) for v, runs in results.items()}
    ratio = best["paser"]["tokens_per_second"] / best["floor"]["tokens_per_second"]
    summary = {"settings": {k: v for k, v in vars(args).items() if k != "variant"}, "best": best,
               "throughput_ratio_paser_over_floor": ratio, "runs": results}
    print(f"PASER scoring {best['paser']['tokens_per_second']:.0f} tok/s vs two plain forwards "
          f"{best['floor']['tokens_per_second']:.0f} tok/s: ratio {ratio:.2f}; peak RSS "
          f"{best['paser']['peak_rss_gib']:.2f} vs {best['floor']['peak_rss_gib']:.2f} GiB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
