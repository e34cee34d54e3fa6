"""The GPU path, measured in one run (< 10 minutes on one H100/H200): JSD scoring in bf16 against its floor at chunk
sizes 64/256/1024, the automatic batch fitter, and one KD and one SFT training step; one JSON out.

On the CPU machine (registry reachable), fill the wheel folder, then run on the GPU machine with that folder:

    python benchmarks/gpu_path.py --fill-wheels            # pip wheel of paser-hf into benchmarks/gpu_wheels/
    python benchmarks/gpu_path.py --out gpu_path.json      # on the GPU: installs from benchmarks/gpu_wheels/, runs
    python benchmarks/gpu_path.py --dry-run --out x.json   # tiny models on CPU in seconds (CI runs this)

The GPU machine has torch and transformers but no trl, datasets, peft or faiss and reaches no registry, so this
script needs only torch, transformers and paser-hf (installed with --no-deps from the wheel folder: the scorer,
batch fitter and KD losses import nothing else). Models are built from configs with random weights (throughput
does not depend on the weights): SmolLM2-135M's and Llama-3.2-1B's; the "pruned" model is a copy with half of
every decoder weight row zeroed by magnitude. Rows are synthetic token ids, the second half of each the response.
- scoring: `JsdScorer` over every row at each chunk size, against the floor: two plain forward passes (original
  and pruned, full logits) over the same batches; tokens/s, and whether the default 65536 tokens per batch fit.
- batch fitter: `JsdScorer` started at 16 x 65536 tokens per batch; where `BatchFitter` settles and what it cost.
- steps: full-parameter AdamW steps of the pruned model on batch x length tokens: SFT (cross-entropy of the
  response tokens) and KD (the `RecoveryTrainer` path: hidden states, `chunked_head_losses`, forward KL).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "benchmarks" / "gpu_wheels"
CHUNKS = (64, 256, 1024)
#: Llama configs of the models measured (from their Hub config.json), and a tiny one for --dry-run.
CONFIGS = {
    "SmolLM2-135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                         tie_word_embeddings=True, rms_norm_eps=1e-5),
    "Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, max_position_embeddings=1024, tie_word_embeddings=True)


def fill_wheels() -> None:
    """Build the paser-hf wheel into `WHEELS` (run where a registry is reachable)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(WHEELS), str(ROOT)], check=True)
    print(f"wheels in {WHEELS}: {sorted(p.name for p in WHEELS.glob('*.whl'))}")


def ensure_paser_hf() -> None:
    """Install paser-hf from `WHEELS` (no index, no dependencies) unless it is importable already."""
    if importlib.util.find_spec("paser_hf") is not None:
        return
    if not list(WHEELS.glob("paser_hf-*.whl")):
        sys.exit(f"paser-hf is not installed and {WHEELS} has no wheel: run `python benchmarks/gpu_path.py "
                 "--fill-wheels` on a machine with a registry and carry that folder along.")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links",
                    str(WHEELS), "paser-hf"], check=True)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, function):
    """(result, seconds) of `function()`, the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - start


def peak_memory_gib(device):
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build_models(config: dict, dtype, device):
    """(original, pruned): a random Llama of `config` and a copy with half of each decoder weight row zeroed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 1B model's random init on CPU takes a while
        original = LlamaForCausalLM(LlamaConfig(**config, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    original.to(dtype=dtype).eval()
    pruned = copy.deepcopy(original)
    with torch.no_grad():
        for name, module in pruned.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                weight = module.weight
                threshold = weight.abs().float().kthvalue(weight.shape[1] // 2, dim=1, keepdim=True).values
                weight.masked_fill_(weight.abs().float() <= threshold, 0)
    return original, pruned


def synthetic_rows(count: int, min_length: int, max_length: int, vocab: int, seed: int = 0):
    """(input_ids, response_start) rows of random ids (never the pad id 0), lengths uniform in the range."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, max_length + 1, (count,), generator=generator).tolist()
    rows = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]
    return rows, [n // 2 for n in lengths]


def jsd_pass(original, pruned, rows, starts, vocab, tokens_per_batch, chunk):
    """Score every row with `JsdScorer`; (tokens scored, the tokens per batch the fitter settled on)."""
    from paser_hf.selection.divergence import JsdScorer

    scorer = JsdScorer(original, pruned, pad_token_id=0, vocab=vocab, tokens_per_batch=tokens_per_batch,
                       chunk_tokens=chunk)
    out = scorer({"input_ids": rows, "response_start": starts, "paser_index": list(range(len(rows)))})
    return sum(out["paser_scored_tokens"]), scorer.batches.tokens


def floor_pass(original, pruned, rows, tokens_per_batch, device):
    """Two plain forward passes (full logits) over the batches the scorer packs: the cost floor of scoring."""
    import torch

    from paser_hf.selection.scoring import pack_by_tokens

    with torch.inference_mode():
        for group in pack_by_tokens([len(row) for row in rows], tokens_per_batch):
            width = max(len(rows[i]) for i in group)
            ids = torch.zeros((len(group), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(group):
                ids[r, : len(rows[i])] = torch.tensor(rows[i])
                mask[r, : len(rows[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            for model in (original, pruned):
                model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def measure_scoring(original, pruned, rows, starts, vocab, tokens_per_batch, device) -> dict:
    import torch

    tokens = sum(len(row) for row in rows)
    jsd_pass(original, pruned, rows[:8], starts[:8], vocab, tokens_per_batch, CHUNKS[0])  # warm-up
    reset_peak(device)
    try:
        _, seconds = timed(device, lambda: floor_pass(original, pruned, rows, tokens_per_batch, device))
        result = {"rows": len(rows), "tokens": tokens, "tokens_per_batch": tokens_per_batch,
                  "floor_tok_s": round(tokens / seconds), "floor_peak_gib": peak_memory_gib(device)}
    except torch.OutOfMemoryError as exc:  # the floor's full logits may not fit where the chunked scorer does
        result = {"rows": len(rows), "tokens": tokens, "tokens_per_batch": tokens_per_batch,
                  "floor_error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    for chunk in CHUNKS:
        reset_peak(device)
        (_, settled), seconds = timed(
            device, lambda: jsd_pass(original, pruned, rows, starts, vocab, tokens_per_batch, chunk))
        entry = {"tok_s": round(tokens / seconds), "seconds": round(seconds, 3), "peak_gib": peak_memory_gib(device),
                 "settled_tokens_per_batch": settled}
        if "floor_tok_s" in result:
            entry["vs_floor"] = round(entry["tok_s"] / result["floor_tok_s"], 3)
        result[f"chunk_{chunk}"] = entry
    return result


def measure_fitter(original, pruned, rows, starts, vocab, start_tokens, device) -> dict:
    reset_peak(device)
    (_, settled), seconds = timed(device, lambda: jsd_pass(original, pruned, rows, starts, vocab, start_tokens, 256))
    return {"start_tokens_per_batch": start_tokens, "settled_tokens_per_batch": settled,
            "halvings": (start_tokens // settled).bit_length() - 1, "seconds": round(seconds, 3),
            "tok_s": round(sum(len(row) for row in rows) / seconds), "peak_gib": peak_memory_gib(device)}


def training_batch(rows, starts, batch, length, device):
    """(input_ids, attention_mask, labels) of `batch` rows cut or padded to `length`; prompt and padding -100."""
    import torch

    ids = torch.zeros((batch, length), dtype=torch.long)
    labels = torch.full((batch, length), -100, dtype=torch.long)
    for r in range(batch):
        row = rows[r % len(rows)][:length]
        ids[r, : len(row)] = torch.tensor(row)
        labels[r, starts[r % len(rows)] : len(row)] = ids[r, starts[r % len(rows)] : len(row)]
    return ids.to(device), (ids != 0).long().to(device), labels.to(device)


def measure_step(kind, teacher, student, batch_tensors, steps, device) -> dict:
    """Seconds per full-parameter AdamW step of `student` (after one warm-up step) and the peak memory."""
    import torch

    from paser_hf.recovery.losses import LogitHead, chunked_head_losses, completion_positions

    ids, mask, labels = batch_tensors
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def step():
        if kind == "sft":
            loss = student(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        else:
            inputs = dict(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True,
                          logits_to_keep=1)
            student_hidden = student(**inputs).hidden_states[-1]
            with torch.no_grad():
                teacher_hidden = teacher(**inputs).hidden_states[-1]
            positions, targets = completion_positions(labels)
            losses = chunked_head_losses(
                student_hidden[:, :-1][positions], teacher_hidden[:, :-1][positions], targets,
                LogitHead(student.get_output_embeddings().weight), LogitHead(teacher.get_output_embeddings().weight))
            loss = losses.kd_sum / positions.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    step()
    reset_peak(device)
    losses, seconds = timed(device, lambda: [step() for _ in range(steps)])
    student.eval()
    del optimizer
    return {"batch": list(ids.shape), "steps": steps, "s_per_step": round(seconds / steps, 4),
            "tok_s": round(ids.numel() * steps / seconds), "peak_gib": peak_memory_gib(device),
            "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)]}


def run(args) -> dict:
    import torch
    import transformers

    import paser_hf
    from paser_hf.models import native_bf16

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    configs = {"tiny": TINY} if args.dry_run else CONFIGS
    started = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "dtype": str(dtype).removeprefix("torch."), "native_bf16": native_bf16(device),
              "torch": torch.__version__, "transformers": transformers.__version__,
              "paser_hf": paser_hf.__version__, "dry_run": args.dry_run, "models": {}}
    for name, config in configs.items():
        model_started = time.perf_counter()
        original, pruned = build_models(config, dtype, device)
        rows, starts = synthetic_rows(args.rows, args.min_length, args.max_length, config["vocab_size"])
        vocab = config["vocab_size"]
        entry = {"parameters": sum(p.numel() for p in original.parameters())}
        entry["scoring"] = measure_scoring(original, pruned, rows, starts, vocab, args.tokens_per_batch, device)
        entry["batch_fitter"] = measure_fitter(original, pruned, rows, starts, vocab, 16 * args.tokens_per_batch,
                                               device)
        batch_tensors = training_batch(rows, starts, args.train_batch, args.max_length, device)
        for kind in ("sft", "kd"):
            entry[f"{kind}_step"] = measure_step(kind, original, pruned, batch_tensors, args.steps, device)
        entry["seconds"] = round(time.perf_counter() - model_started, 1)
        result["models"][name] = entry
        print(json.dumps({name: entry}), flush=True)
        del original, pruned
        reset_peak(device)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_path.json", help="The JSON written.")
    parser.add_argument("--dry-run", action="store_true", help="Tiny random model on CPU: checks the path in seconds.")
    parser.add_argument("--fill-wheels", action="store_true", help=f"Build the paser-hf wheel into {WHEELS} and stop.")
    parser.add_argument("--rows", type=int, default=None, help="Synthetic rows scored (default 2048; dry run 16).")
    parser.add_argument("--min-length", type=int, default=None, help="Shortest row in tokens (64; dry run 16).")
    parser.add_argument("--max-length", type=int, default=None, help="Longest row in tokens (512; dry run 64).")
    parser.add_argument("--tokens-per-batch", type=int, default=None,
                        help="Scoring batch in padded tokens (65536, the GPU default; dry run 1024).")
    parser.add_argument("--train-batch", type=int, default=8, help="Rows per training step.")
    parser.add_argument("--steps", type=int, default=None, help="Timed training steps after a warm-up (3; dry 1).")
    args = parser.parse_args(argv)
    if args.fill_wheels:
        fill_wheels()
        return
    for option, full, dry in (("rows", 2048, 16), ("min_length", 64, 16), ("max_length", 512, 64),
                              ("tokens_per_batch", 65536, 1024), ("steps", 3, 1)):
        if getattr(args, option) is None:
            setattr(args, option, dry if args.dry_run else full)
    ensure_paser_hf()
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
