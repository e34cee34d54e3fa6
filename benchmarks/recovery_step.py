"""Step time and peak memory of a recovery step (LoRA SFT, chunked KD, naive unchunked KD), as training tokens/s
against a plain forward pass of the same model on the same batches.

    python benchmarks/recovery_step.py --steps 8 --batch-size 4 --max-length 256

Teacher: SmolLM2-135M-Instruct (the offline default). Student: a copy with 50% of each row of every decoder Linear
weight zeroed by magnitude. LoRA r=8 on all projections; rows of `../shared/data/instruct/mix_train.jsonl` long
enough to fill `--max-length` tokens, so every batch is batch-size x max-length. Each variant runs in its own
subprocess (clean peak RSS), `--repeats` times interleaved (each variant reports its median process), and trains
`--steps` timed steps after one untimed warm-up step:
- forward: no training; the student's plain forward pass (no gradient) on the same batches in the fastest dtype
  of the device (`paser_hf.models.fastest_dtype`), the floor a training step is measured against (a step costs
  about three forwards);
- sft_trl_defaults: kd_alpha=0 with trl's defaults (float32, gradient checkpointing), what 0.2.0 trained with;
- sft: `RecoveryTrainer` with kd_alpha=0 and `RecoveryConfig`'s defaults (on CPU: bf16 autocast where native, no
  gradient checkpointing);
- sft_dropout: sft with LoRA dropout 0.05 (not run by default);
- kd: kd_alpha=1, the chunked path (hidden states, per-chunk LM heads; under checkpoint on an accelerator);
- offline_kd: kd_alpha=1 against the teacher's top-64 stored on the rows by `capture_teacher_topk` (untimed, in the
  same process, before training; its seconds are reported), no teacher in the step;
- naive_kd: the same loss from both models' full (B, L, V) logits and a float32 log-softmax over all of them (not
  run by default);
- sft_compiled, kd_compiled: sft and kd with ``torch_compile=True`` (the decoder blocks compiled in place); the
  compilation happens in the untimed warm-up step, whose seconds are reported as ``first_step_s``.
The teacher's and the student's forwards inside the steps are timed too (forward hooks), and the teacher's LM head on
the first batch's completion tokens after training: an SFT step plus the teacher's forward and head is the floor of
a KD step whatever its loss costs (``kd_floor_over_sft_step_time``).
Memory is the process's peak RSS during training (`harness.PeakRss`: the kernel's high-water mark, reset before
`train()`; on CUDA, `max_memory_allocated` too); "delta" is the peak minus the RSS just before `train()` (weights
already loaded), i.e. what the steps themselves cost.
Results print as a table and go to benchmarks/results/recovery_step.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness import RESULTS, PeakRss, emit, long_rows, run_child, step_timer

VARIANTS = ("forward", "sft_trl_defaults", "sft", "sft_dropout", "kd", "naive_kd", "offline_kd", "sft_compiled",
            "kd_compiled")
DEFAULT_VARIANTS = ("forward", "sft_trl_defaults", "sft", "kd", "offline_kd", "sft_compiled", "kd_compiled")
OFFLINE_TOPK = 64  # the k offline distillation stores by default (benchmarks/offline_kd.py)


def prune_rows_by_magnitude(model, sparsity: float = 0.5) -> None:
    """Zero the smallest-|w| fraction of every row of each decoder Linear weight (no structural change)."""
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                weight = module.weight
                k = int(weight.size(1) * sparsity)
                weight.scatter_(1, weight.abs().argsort(dim=1)[:, :k], 0.0)


def forward_timer(module):
    """The wall-clock seconds of each forward of `module`, recorded by forward hooks (a list that grows)."""
    times = []
    starts = []
    module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    module.register_forward_hook(lambda *_: times.append(time.perf_counter() - starts.pop()))
    return times


def teacher_head_times(trainer, tokens: int, repeats: int) -> list:
    """Wall-clock seconds of the teacher's LM head on `tokens` hidden states, under the trainer's autocast: the part
    of the teacher's work a KD step runs outside the teacher's forward (its head runs on the completion tokens
    only, in the loss's chunks)."""
    import torch
    import torch.nn.functional as F

    from paser_hf.recovery.frozen_casts import FrozenCasts

    weight = trainer.accelerator.unwrap_model(trainer.teacher_model).get_output_embeddings().weight
    hidden = torch.randn(tokens, weight.size(1), device=weight.device)
    times = []
    with torch.no_grad(), trainer.accelerator.autocast():
        weight = FrozenCasts()(weight)  # cast once per training, as the trainer does
        for _ in range(repeats):
            start = time.perf_counter()
            F.linear(hidden, weight)
            times.append(time.perf_counter() - start)
    return times


def naive_trainer_class():
    """`RecoveryTrainer` with the same loss computed the naive way, from full logits (imports deferred to the
    variant's subprocess)."""
    import torch
    import torch.nn.functional as F

    from paser_hf import RecoveryTrainer

    class NaiveKD(RecoveryTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            student = model(**model_inputs, use_cache=False).logits[:, :-1].float()
            with torch.no_grad():
                teacher = self.teacher_model(**model_inputs, use_cache=False).logits[:, :-1].float()
            targets = labels[:, 1:]
            mask = targets != -100
            count = mask.sum() if num_items_in_batch is None else num_items_in_batch
            t = self.args.kd_temperature
            log_q = F.log_softmax(student / t, dim=-1)
            log_p = F.log_softmax(teacher / t, dim=-1)
            kd = (log_p.exp() * (log_p - log_q)).sum(-1)[mask].sum() * t**2 / count
            ce = F.cross_entropy(student.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum") / count
            alpha = self.args.kd_alpha
            return (1 - alpha) * ce + alpha * kd

    return NaiveKD


def run_variant(args) -> dict:
    import torch
    from peft import LoraConfig

    from paser_hf import PaserConfig, RecoveryConfig, RecoveryTrainer
    from paser_hf.models import fastest_dtype, load_model_and_tokenizer
    from paser_hf.selection.teacher import capture_teacher_topk

    cuda = torch.cuda.is_available()
    teacher, tokenizer = load_model_and_tokenizer(None)
    student = copy.deepcopy(teacher)
    prune_rows_by_magnitude(student, 0.5)
    rows = long_rows(args.batch_size * (args.steps + 1), args.max_length)
    capture_seconds = None
    if args.variant == "offline_kd":
        start = time.perf_counter()
        rows = capture_teacher_topk(rows, teacher, tokenizer, k=OFFLINE_TOPK, config=PaserConfig(
            max_length=args.max_length, show_progress=False, cache_dir=tempfile.mkdtemp()))
        capture_seconds = time.perf_counter() - start
    online_teacher = args.variant in ("kd", "naive_kd", "kd_compiled")
    kd = online_teacher or args.variant == "offline_kd"
    if not online_teacher:
        teacher = None

    settings = dict(
        output_dir=tempfile.mkdtemp(), use_cpu=not cuda, report_to="none", save_strategy="no",
        max_steps=args.steps + 1, per_device_train_batch_size=args.batch_size, max_length=args.max_length,
        learning_rate=1e-4, logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=0,
        kd_alpha=1.0 if kd else 0.0, kd_chunk_size=args.chunk_size,
    )
    if args.variant == "sft_trl_defaults":
        settings.update(bf16=False, gradient_checkpointing=True)
    if args.variant.endswith("_compiled"):
        settings.update(torch_compile=True)
    config = RecoveryConfig(**settings)
    trainer_class = naive_trainer_class() if args.variant == "naive_kd" else RecoveryTrainer
    timer = step_timer()
    dropout = 0.05 if args.variant == "sft_dropout" else 0.0
    trainer = trainer_class(
        model=student, teacher_model=teacher, args=config, train_dataset=rows, processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules="all-linear"),
        callbacks=[timer],
    )
    batches = [batch for _, batch in zip(range(args.steps + 1), trainer.get_train_dataloader())]
    batch = batches[0]
    completion_tokens = int((batch["labels"][:, 1:] != -100).sum())
    tokens_per_step = int(batch["attention_mask"].sum())

    if args.variant == "forward":
        dtype = fastest_dtype("cuda" if cuda else "cpu")
        model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().to(getattr(torch, dtype)).eval()
        times = []
        with torch.inference_mode():
            for b in batches:
                start = time.perf_counter()
                model(input_ids=b["input_ids"].to(model.device), attention_mask=b["attention_mask"].to(model.device),
                      use_cache=False)
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times[1:])
        return {"variant": "forward", "dtype": dtype, "batch_shape": list(batch["input_ids"].shape),
                "forward_s_median": seconds, "forward_times_s": times,
                "tokens_per_s": tokens_per_step / seconds, "torch_threads": torch.get_num_threads()}

    forwards = {"student_forward": forward_timer(trainer.model)}
    if trainer.teacher_model is not None:
        forwards["teacher_forward"] = forward_timer(trainer.teacher_model)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        cuda_baseline = torch.cuda.memory_allocated()
    with PeakRss() as rss:
        trainer.train()

    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    step = statistics.median(timer.times[1:])
    if trainer.teacher_model is not None:
        forwards["teacher_head"] = teacher_head_times(trainer, completion_tokens, args.steps + 1)
    result = {
        "variant": args.variant,
        "bf16": config.bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "torch_compile": config.torch_compile,
        "first_step_s": timer.times[0],
        "lora_dropout": dropout,
        "batch_shape": list(batch["input_ids"].shape),
        "completion_tokens_first_batch": completion_tokens,
        "step_time_s_median": step,
        "step_times_s": timer.times,
        "tokens_per_s": tokens_per_step / step,
        "step_cpu_s_median": statistics.median(timer.cpu_times[1:]),
        "step_cpu_s": timer.cpu_times,
        **{f"{name}_s_median": statistics.median(times[1:]) for name, times in forwards.items()},
        "rss_before_train_mb": rss.baseline / 2**20,
        "peak_rss_mb": rss.peak / 2**20,
        "peak_rss_delta_mb": (rss.peak - rss.baseline) / 2**20,
        "first_loss": losses[0],
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if cuda else "cpu",
    }
    if capture_seconds is not None:
        result.update(teacher_topk=OFFLINE_TOPK, capture_s=capture_seconds,
                      capture_s_per_step=capture_seconds / (args.steps + 1))
    if cuda:
        result["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["cuda_peak_delta_mb"] = (torch.cuda.max_memory_allocated() - cuda_baseline) / 2**20
    return result


def median_run(runs: list) -> dict:
    """The run with the median step (or forward) time, odd counts assumed, with every run's median time beside it:
    step times moved by 10-40% between processes on the 2-core machine, within a process by less."""
    key = "forward_s_median" if "forward_s_median" in runs[0] else "step_time_s_median"
    ordered = sorted(runs, key=lambda r: r[key])
    median = {**ordered[(len(ordered) - 1) // 2], f"{key}_per_process": [r[key] for r in runs]}
    if "first_step_s" in runs[0]:  # the compile of a compiled variant, cold in the first process only
        median["first_step_s_per_process"] = [r["first_step_s"] for r in runs]
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3,
                        help="processes per variant, interleaved; each variant reports its median one")
    parser.add_argument("--chunk-size", type=int, default=256, help="kd_chunk_size of the chunked variant")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(RESULTS / "recovery_step.json"))
    args = parser.parse_args()

    if args.variant:
        emit(run_variant(args))
        return

    runs = {variant: [] for variant in args.variants}
    for _ in range(args.repeats):
        for variant in args.variants:
            runs[variant].append(run_child(__file__, "--variant", variant, "--steps", str(args.steps), "--batch-size",
                                           str(args.batch_size), "--max-length", str(args.max_length),
                                           "--chunk-size", str(args.chunk_size)))
    results = {variant: median_run(variant_runs) for variant, variant_runs in runs.items()}

    ratios = {}
    forward = results.get("forward")
    for name, r in results.items():
        if name != "forward" and forward:
            ratios[f"{name}_tokens_per_s_over_forward"] = r["tokens_per_s"] / forward["tokens_per_s"]
    for name in ("kd", "naive_kd", "offline_kd", "sft_trl_defaults", "sft_dropout", "sft_compiled"):
        if name in results and "sft" in results:
            ratios[f"{name}_over_sft_step_time"] = results[name]["step_time_s_median"] / results["sft"]["step_time_s_median"]
    if "kd_compiled" in results and "sft_compiled" in results:
        ratios["kd_compiled_over_sft_compiled_step_time"] = (
            results["kd_compiled"]["step_time_s_median"] / results["sft_compiled"]["step_time_s_median"])
    if "kd" in results and "sft" in results:
        # the teacher's forward and its LM head on the completion tokens, added to an SFT step: what a KD step
        # costs with a free distillation loss
        sft, kd = results["sft"]["step_time_s_median"], results["kd"]
        teacher = kd["teacher_forward_s_median"] + kd["teacher_head_s_median"]
        ratios["kd_floor_over_sft_step_time"] = (sft + teacher) / sft
    if "offline_kd" in results and "sft" in results:
        # offline distillation moves the teacher's work out of the step into one capture pass over the rows (free
        # when PASER's scoring captures the top-k, at no measurable extra scoring time): the step with that pass counted
        offline = results["offline_kd"]
        ratios["offline_kd_with_capture_over_sft_step_time"] = (
            (offline["step_time_s_median"] + offline["capture_s_per_step"]) / results["sft"]["step_time_s_median"])
    if "kd" in results and "naive_kd" in results:
        ratios["kd_first_loss_over_naive_first_loss"] = results["kd"]["first_loss"] / results["naive_kd"]["first_loss"]
    report = {
        "model": "SmolLM2-135M-Instruct (teacher) / 50% per-row magnitude-zeroed copy (student), LoRA r=8 all-linear",
        "batch_size": args.batch_size, "max_length": args.max_length, "timed_steps": args.steps,
        "processes_per_variant": args.repeats,
        "kd_chunk_size": args.chunk_size, "targets": {"sft_tokens_per_s_over_forward": ">= 0.25",
                                                      "kd_over_sft_step_time": "<= 1.3"},
        "variants": results, "ratios": ratios,
    }
    print(f"{'variant':18s} {'step s':>8s} {'tokens/s':>9s} {'CPU s':>8s} {'peak RSS MB':>12s} {'first loss':>11s}")
    for name, r in results.items():
        if name == "forward":
            print(f"{name:18s} {r['forward_s_median']:8.2f} {r['tokens_per_s']:9.1f}   ({r['dtype']})")
            continue
        print(f"{name:18s} {r['step_time_s_median']:8.2f} {r['tokens_per_s']:9.1f} {r['step_cpu_s_median']:8.2f} "
              f"{r['peak_rss_mb']:12.0f} {r['first_loss']:11.4f}")
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
