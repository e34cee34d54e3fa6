"""Offline distillation (issue 16): storage, step cost, quality and capture overhead of stored teacher top-k.

    python benchmarks/offline_kd.py --steps 20 --batch-size 4 --max-length 256 --ks 16,64,256

Teacher: SmolLM2-135M-Instruct (the offline default, float32); student: a copy pruned by `paser_hf.pruning.prune_model`
(magnitude, 50%), LoRA r=8 on all linear layers, kd_alpha=1 for the KD variants. Rows of
`../shared/data/instruct/mix_train.jsonl` long enough to fill `--max-length` tokens: the first
batch-size x steps train (one epoch), the next `--heldout-rows` are held out. Each part runs in its own process:
- capture: `capture_teacher_topk` of the training rows at each k (saved, then read by the offline variants);
  bytes per stored token (Arrow bytes of the stored columns over the stored tokens); scoring throughput of
  `JsdScorer` (original + pruned model) on the training rows without and with `teacher_topk=64`, best of 2 each;
- sft, online_kd, offline_kd_k<k>: `--steps` training steps; median step time (steps 2..n), peak RSS during
  training (process RSS sampled every 2 ms: total, and the rise over the RSS before `train()`), then the
  teacher-student forward KL (T=1, whole vocabulary) averaged over the completion tokens of the held-out rows.
Every figure goes to benchmarks/results/offline_kd.json with the ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness import RESULTS, PeakRss, emit, long_rows, run_child, step_timer

CAPTURE_K = 64  # the k whose capture overhead is measured


def models():
    """(teacher, pruned student, tokenizer)."""
    import copy

    from paser_hf.models import load_model_and_tokenizer
    from paser_hf.pruning import prune_model

    teacher, tokenizer = load_model_and_tokenizer(None)
    student = copy.deepcopy(teacher)
    prune_model(student, method="magnitude", sparsity=0.5)
    return teacher.eval(), student, tokenizer


def stored_bytes_per_token(data) -> float:
    from paser_hf.selection import schema

    stored = data.select_columns(list(schema.TEACHER_COLUMNS)).flatten_indices()
    return stored.data.nbytes / max(1, sum(stored[schema.TEACHER_COUNT]))


def run_capture(args) -> dict:
    """Capture at every k (saved under --work), bytes per stored token, scoring tokens/s without and with capture."""
    from paser_hf import PaserConfig
    from paser_hf.selection import schema
    from paser_hf.selection.divergence import JsdScorer
    from paser_hf.selection.prepare import prepare_dataset
    from paser_hf.selection.teacher import capture_teacher_topk

    teacher, student, tokenizer = models()
    train = long_rows(args.batch_size * args.steps, args.max_length)
    config = PaserConfig(max_length=args.max_length, show_progress=False)
    out = {"bytes_per_token": {}, "capture_seconds": {}}
    for k in args.ks:
        start = time.perf_counter()
        data = capture_teacher_topk(train, teacher, tokenizer, k=k, config=config)
        out["capture_seconds"][str(k)] = time.perf_counter() - start
        data.save_to_disk(str(Path(args.work) / f"topk{k}"))
        out["bytes_per_token"][str(k)] = stored_bytes_per_token(data)

    prepared = prepare_dataset(train, tokenizer, config, "alpaca", True)
    batch = prepared.select_columns([schema.INDEX, schema.INPUT_IDS, schema.RESPONSE_START])[:]
    tokens = sum(max(0, len(ids) - max(s, 1)) for ids, s in zip(batch[schema.INPUT_IDS], batch[schema.RESPONSE_START]))
    vocab = len(tokenizer)
    best = {0: float("inf"), CAPTURE_K: float("inf")}
    for _ in range(2):
        for k in best:
            scorer = JsdScorer(teacher, student, pad_token_id=tokenizer.pad_token_id or 0, vocab=vocab, teacher_topk=k)
            start = time.perf_counter()
            scorer(batch)
            best[k] = min(best[k], time.perf_counter() - start)
    out["scored_tokens"] = tokens
    out["scoring_tokens_per_s"] = tokens / best[0]
    out[f"scoring_with_capture_k{CAPTURE_K}_tokens_per_s"] = tokens / best[CAPTURE_K]
    return out


def heldout_kl(student, teacher, tokenizer, data, max_length: int) -> float:
    """Mean over the completion tokens of `data` of KL(teacher || student) at T=1 over the whole vocabulary."""
    import torch

    from paser_hf.formatting import to_prompt_completion, tokenize_prompt_completion
    from paser_hf.recovery.losses import divergence

    total, count = 0.0, 0
    student.eval()
    with torch.no_grad():
        for row in data:
            pc = to_prompt_completion(row, "alpaca", chat=True)
            tokens = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, max_length)
            ids, start = torch.tensor([tokens["input_ids"]]), max(tokens["response_start"], 1)
            z_s = student(input_ids=ids).logits[0, start - 1 : -1]
            z_t = teacher(input_ids=ids).logits[0, start - 1 : -1]
            total += float(divergence(z_s, z_t).sum())
            count += z_s.size(0)
    return total / max(count, 1)


def run_variant(args) -> dict:
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig

    from paser_hf import RecoveryConfig, RecoveryTrainer
    from paser_hf.models import load_model_and_tokenizer

    teacher, student, tokenizer = models()
    if args.variant.startswith("offline"):
        train = load_from_disk(str(Path(args.work) / f"topk{args.variant.rsplit('k', 1)[1]}"))
    else:
        train = long_rows(args.batch_size * args.steps, args.max_length)
    heldout = long_rows(args.heldout_rows, args.max_length, offset=args.batch_size * args.steps)
    training_teacher = teacher if args.variant == "online_kd" else None
    del teacher  # SFT and offline KD train with no teacher in memory; it is loaded again for the held-out KL

    config = RecoveryConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=not torch.cuda.is_available(), bf16=False, report_to="none",
        save_strategy="no", max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        max_length=args.max_length, learning_rate=1e-4, logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
        seed=0, kd_alpha=0.0 if args.variant == "sft" else 1.0,
    )
    timer = step_timer()
    trainer = RecoveryTrainer(
        model=student, teacher_model=training_teacher, args=config, train_dataset=train, processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"), callbacks=[timer],
    )
    with PeakRss() as rss:
        trainer.train()

    teacher = training_teacher if training_teacher is not None else load_model_and_tokenizer(None)[0].eval()
    return {
        "variant": args.variant,
        "step_time_s_median": statistics.median(timer.times[1:] or timer.times),
        "step_times_s": timer.times,
        "peak_rss_mb": rss.peak / 2**20,
        "peak_rss_delta_mb": (rss.peak - rss.baseline) / 2**20,
        "heldout_kl": heldout_kl(trainer.model, teacher, tokenizer, heldout, args.max_length),
        "torch_threads": torch.get_num_threads(),
    }


def child_args(args) -> list:
    return ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
            "--heldout-rows", str(args.heldout_rows), "--ks", ",".join(map(str, args.ks)), "--work", args.work]


def ratios(capture: dict, runs: dict, ks) -> dict:
    sft, online = runs["sft"], runs["online_kd"]
    offline = {k: runs[f"offline_kd_k{k}"] for k in ks}
    main = offline.get(64) or offline[ks[len(ks) // 2]]
    out = {
        "offline_kd_over_sft_step_time": main["step_time_s_median"] / sft["step_time_s_median"],
        "online_kd_over_sft_step_time": online["step_time_s_median"] / sft["step_time_s_median"],
        "offline_kd_over_sft_peak_rss": main["peak_rss_mb"] / sft["peak_rss_mb"],
        "online_kd_over_sft_peak_rss": online["peak_rss_mb"] / sft["peak_rss_mb"],
        "offline_kd_over_sft_peak_rss_delta": main["peak_rss_delta_mb"] / sft["peak_rss_delta_mb"],
        "capture_over_plain_scoring_tokens_per_s":
            capture[f"scoring_with_capture_k{CAPTURE_K}_tokens_per_s"] / capture["scoring_tokens_per_s"],
        "sft_over_online_heldout_kl": sft["heldout_kl"] / online["heldout_kl"],
    }
    for k in ks:
        out[f"offline_k{k}_over_online_heldout_kl"] = offline[k]["heldout_kl"] / online["heldout_kl"]
    out["targets_met"] = {
        "offline_step_time_le_1.05x_sft": out["offline_kd_over_sft_step_time"] <= 1.05,
        "offline_peak_rss_within_5pct_of_sft": abs(out["offline_kd_over_sft_peak_rss"] - 1) <= 0.05,
        "capture_slowdown_le_10pct": out["capture_over_plain_scoring_tokens_per_s"] >= 1 / 1.10,
    }
    if 64 in offline:
        out["targets_met"]["offline_k64_heldout_kl_within_2pct_of_online"] = \
            abs(out["offline_k64_over_online_heldout_kl"] - 1) <= 0.02
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per variant (one epoch of the rows)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--heldout-rows", type=int, default=16)
    parser.add_argument("--ks", type=lambda s: [int(k) for k in s.split(",")], default=[16, 64, 256])
    parser.add_argument("--output", default=str(RESULTS / "offline_kd.json"))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        emit(run_capture(args) if args.variant == "capture" else run_variant(args))
        return
    with tempfile.TemporaryDirectory(prefix="offline-kd-") as work:
        args.work = work
        capture = run_child(__file__, "--variant", "capture", *child_args(args))
        runs = {v: run_child(__file__, "--variant", v, *child_args(args))
                for v in ["sft", "online_kd", *[f"offline_kd_k{k}" for k in args.ks]]}
    report = {
        "command": f"python benchmarks/offline_kd.py --steps {args.steps} --batch-size {args.batch_size} "
                   f"--max-length {args.max_length} --heldout-rows {args.heldout_rows} "
                   f"--ks {','.join(map(str, args.ks))}",
        "ratios": ratios(capture, runs, args.ks),
        "capture": capture,
        "runs": runs,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"], indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
