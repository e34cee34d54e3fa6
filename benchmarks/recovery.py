"""Recovery benchmark (paper Tables 1 and 4 in small): does a PASER subset recover a pruned SmolLM2-135M-Instruct
better than a random subset, the full pool and IFD, and which of PASER's components matters?

    python benchmarks/recovery.py                       # the CPU configuration whose results are committed
    python benchmarks/recovery.py --pool 4000 --mc-per-task 500 --ppl-tokens 65536 --out benchmarks/results/recovery_gpu

Pruned models: structured (MLP channels removed until ~25% of the parameters are gone) and Wanda 2:4. Pool: a
seeded sample of ../shared/data/instruct/mix_train.jsonl; budget 20% of it. Methods, each recovered with the same
LoRA SFT settings (r=8, 2 epochs): no recovery, full pool, random, IFD (scored with the pruned model), PASER,
PASER without clustering / degradation-aware allocation / concept graph (PaserConfig switches), and PASER + KD
(kd_alpha=1). Metrics: WikiText-2 test perplexity on a fixed prefix, zero-shot accuracy on a seeded subset of
ARC-Easy, BoolQ, PIQA and OpenBookQA (../shared/data/mc), selection and training wall time.

Every finished run is written to OUT/results.json at once; `--resume` skips the runs already there (same settings),
so a long benchmark can be run in parts. The end writes OUT/table.md and OUT/recovery.png; OUT/work holds
scratch files (score caches, trainer output) and is not committed.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from pathlib import Path

import torch
from datasets import Dataset
from harness import MC_DIR, MIX_TRAIN, RESULTS, calibration_texts, wikitext_prefix
from peft import LoraConfig

from paser_hf import (
    IfdSelector,
    PaserConfig,
    PaserDatasetSelector,
    RandomSelector,
    RecoveryConfig,
)
from paser_hf.evaluation import load_mc_jsonl, multiple_choice_accuracy, perplexity
from paser_hf.formatting import has_chat_template, make_row_formatter, tokenize_prompt_completion
from paser_hf.models import load_model_and_tokenizer
from paser_hf.pruning import count_parameters, decoder_layers, prune_model
from paser_hf.recovery.run import recover as run_recovery

MC_TASKS = {
    "arc_easy": "arc_easy_test.jsonl",
    "boolq": "boolq_val.jsonl",
    "piqa": "piqa_val.jsonl",
    "openbookqa": "openbookqa_test.jsonl",
}
ABLATIONS = {
    "paser_no_clustering": {"use_clustering": False},
    "paser_no_degradation": {"use_degradation_allocation": False},
    "paser_no_concepts": {"use_concept_graph": False},
}
METHOD_ORDER = ["no_recovery", "full_pool", "random", "ifd", "paser", "paser_kd", *ABLATIONS]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original-model", default=None,
                   help="model to prune and recover (name or path); default: the offline SmolLM2-135M-Instruct")
    p.add_argument("--data", type=Path, default=MIX_TRAIN,
                   help="JSONL pool in Alpaca form (instruction, input, output; other columns are kept)")
    p.add_argument("--pool", type=int, default=200, help="rows sampled from --data (seeded)")
    p.add_argument("--budget", type=float, default=0.2, help="fraction of the pool each selector keeps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the random and PASER rows")
    p.add_argument("--prunings", nargs="+", default=["structured", "wanda_2_4"], choices=["structured", "wanda_2_4"])
    p.add_argument("--max-length", type=int, default=256, help="token limit for selection and training")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ppl-tokens", type=int, default=8192, help="WikiText-2 test prefix, disjoint 1024-token windows")
    p.add_argument("--mc-per-task", type=int, default=30, help="seeded questions per multiple-choice task")
    p.add_argument("--eval-dtype", default="float32", choices=["bfloat16", "float32"],
                   help="evaluation dtype (on this CPU, bfloat16 evaluation is 2.5x slower than float32)")
    p.add_argument("--scoring-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="dtype of the model copies that PASER and IFD score with (training stays float32)")
    p.add_argument("--out", type=Path, default=RESULTS / "recovery")
    p.add_argument("--resume", action="store_true", help="skip runs already in OUT/results.json")
    return p.parse_args()


def settings_of(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "resume")}


def load_pool(path: Path, size: int, seed: int = 0) -> Dataset:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    picked = random.Random(seed).sample(range(len(rows)), size)
    return Dataset.from_list([rows[i] for i in sorted(picked)])


def load_mc(per_task: int, seed: int = 0) -> dict:
    tasks = {}
    for task, name in MC_TASKS.items():
        rows = load_mc_jsonl(MC_DIR / name)
        tasks[task] = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), min(per_task, len(rows))))]
    return tasks


def evaluate(model, tokenizer, text: str, mc: dict, dtype: str) -> dict:
    """WikiText-2 perplexity and zero-shot accuracy per task (and their mean), in `dtype` (a copy if it differs)."""
    if next(model.parameters()).dtype != getattr(torch, dtype):
        model = copy.deepcopy(model).to(getattr(torch, dtype))
    model.eval()
    start = time.perf_counter()
    out = {"wikitext2_ppl": perplexity(model, tokenizer, text, max_length=1024, show_progress=False)["perplexity"]}
    for task, rows in mc.items():
        out[task] = multiple_choice_accuracy(model, tokenizer, rows, batch_size=16, show_progress=False)["accuracy"]
    out["mc_mean"] = statistics.mean(out[t] for t in mc)
    out["eval_seconds"] = round(time.perf_counter() - start, 1)
    return out


def make_pruned(original, tokenizer, kind: str) -> tuple:
    model = copy.deepcopy(original)
    calibration = calibration_texts(32)
    if kind == "structured":
        mlp = decoder_layers(model)[0].mlp
        mlp_params = len(decoder_layers(model)) * 3 * mlp.gate_proj.in_features * mlp.gate_proj.out_features
        kwargs = {"method": "structured_mlp", "sparsity": 0.25 * count_parameters(model) / mlp_params}
    else:
        kwargs = {"method": "wanda", "sparsity": None, "n_m": (2, 4)}
    report = prune_model(model, calibration_texts=calibration, tokenizer=tokenizer, **kwargs)
    return model.eval(), report.to_dict()


def recover(pruned, original, tokenizer, subset: Dataset, args, kd_alpha: float, seed: int, workdir: Path):
    """LoRA SFT (or SFT + KD) of a copy of `pruned` on `subset`; returns (merged model, wall seconds, steps)."""
    student = copy.deepcopy(pruned).train()
    config = RecoveryConfig(
        output_dir=str(workdir), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.03, max_length=args.max_length,
        kd_alpha=kd_alpha, logging_steps=10, save_strategy="no", report_to="none", bf16=False,
        use_cpu=not torch.cuda.is_available(), activation_checkpointing=False, dataloader_num_workers=0, seed=seed,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    start = time.perf_counter()
    result = run_recovery(student, config, subset.select_columns(["instruction", "input", "output"]), tokenizer,
                          peft_config=lora, teacher_model=original if kd_alpha > 0 else None, save=False)
    state = result.train_output
    return result.model, time.perf_counter() - start, state.global_step, state.training_loss


def composition(subset: Dataset) -> dict:
    if "source" not in subset.column_names:
        return {}
    sources = subset["source"]
    return {s: sources.count(s) for s in sorted(set(sources))}


def training_tokens(pool: Dataset, indices: list, tokenizer, max_length: int) -> tuple:
    """(all tokens, completion tokens) per epoch of the rows at `indices`, as the trainer tokenises them."""
    formatter = make_row_formatter("alpaca", has_chat_template(tokenizer))
    total = completion = 0
    for row in pool.select(indices):
        pc = formatter(row)
        tokens = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, max_length)
        total += len(tokens["input_ids"])
        completion += tokens["num_response_tokens"]
    return total, completion


def selections(original, pruned, tokenizer, args, cache_dir: Path):
    """(method, seed, kd_alpha, selector or None) for every trained row, the full pool (the longest) last; the
    selector is built lazily and scores with `--scoring-dtype` copies of the models."""
    dtype = getattr(torch, args.scoring_dtype)
    original, pruned = copy.deepcopy(original).to(dtype), copy.deepcopy(pruned).to(dtype)
    base = {"budget": args.budget, "max_length": args.max_length, "show_progress": False}
    for seed in args.seeds:
        yield "random", seed, 0.0, lambda s=seed: RandomSelector(PaserConfig(**base, seed=s))
    yield "ifd", 0, 0.0, lambda: IfdSelector(pruned, tokenizer, PaserConfig(**base))
    for seed in args.seeds:
        yield "paser", seed, 0.0, lambda s=seed: PaserDatasetSelector(
            original, pruned, tokenizer, PaserConfig(**base, seed=s, cache_dir=str(cache_dir)))
    yield "paser_kd", args.seeds[0], 1.0, lambda: PaserDatasetSelector(
        original, pruned, tokenizer, PaserConfig(**base, seed=args.seeds[0], cache_dir=str(cache_dir)))
    for name, switch in ABLATIONS.items():
        yield name, args.seeds[0], 0.0, lambda sw=switch: PaserDatasetSelector(
            original, pruned, tokenizer, PaserConfig(**base, seed=args.seeds[0], cache_dir=str(cache_dir), **sw))
    yield "full_pool", 0, 0.0, None


def run(args) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = {"settings": settings_of(args), "runs": {}}
    if args.resume and path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") != results["settings"]:
            raise SystemExit(f"{path} was made with other settings; drop --resume or use another --out.")
        results = saved

    def save() -> None:
        path.write_text(json.dumps(results, indent=1) + "\n")

    torch.manual_seed(0)
    original, tokenizer = load_model_and_tokenizer(args.original_model)
    original.eval()
    text = wikitext_prefix(tokenizer, args.ppl_tokens)
    mc = load_mc(args.mc_per_task)
    pool = load_pool(args.data, args.pool)
    results["pool"] = {"rows": len(pool), "sources": composition(pool)}
    if "original" not in results["runs"]:
        results["runs"]["original"] = {"pruning": "none", "method": "original", **evaluate(
            original, tokenizer, text, mc, args.eval_dtype)}
        save()
    print("original", json.dumps(results["runs"]["original"]), flush=True)

    for kind in args.prunings:
        t0 = time.perf_counter()
        pruned, pruning = make_pruned(original, tokenizer, kind)
        results.setdefault("pruning", {})[kind] = {**pruning, "seconds": round(time.perf_counter() - t0, 1)}
        key = f"{kind}/no_recovery"
        if key not in results["runs"]:
            results["runs"][key] = {"pruning": kind, "method": "no_recovery", **evaluate(
                pruned, tokenizer, text, mc, args.eval_dtype)}
            save()
        print(key, json.dumps(results["runs"][key]), flush=True)
        cache_dir = args.out / "work" / "cache" / kind
        for method, seed, kd_alpha, make in selections(original, pruned, tokenizer, args, cache_dir):
            key = f"{kind}/{method}/seed{seed}"
            if key in results["runs"]:
                continue
            t0 = time.perf_counter()
            if make is None:
                subset, indices, report = pool, list(range(len(pool))), {}
            else:
                selector = make()
                subset = selector(pool)
                indices = [int(i) for i in selector.selected_indices_]
                report = {"timings": selector.report_.to_dict()["timings"]}
                if isinstance(selector, PaserDatasetSelector):
                    report.update(k=selector.report_.k, clusters=[
                        {"size": c.size, "cds": round(c.cds, 4), "selected": c.selected, "rejected": c.rejected}
                        for c in selector.report_.clusters])
            select_seconds = time.perf_counter() - t0
            model, train_seconds, steps, loss = recover(
                pruned, original, tokenizer, subset, args, kd_alpha, seed, args.out / "work" / "trainer")
            entry = {
                "pruning": kind, "method": method, "seed": seed, "kd_alpha": kd_alpha, "rows": len(subset),
                "select_seconds": round(select_seconds, 1), "train_seconds": round(train_seconds, 1),
                "train_steps": steps, "train_loss": loss, "sources": composition(subset), "selection": report,
                "indices": indices, **evaluate(model, tokenizer, text, mc, args.eval_dtype),
            }
            del model
            results["runs"][key] = entry
            save()
            print(key, json.dumps({k: v for k, v in entry.items() if k != "indices"}), flush=True)
    for entry in results["runs"].values():
        if "indices" in entry and "train_tokens" not in entry:
            entry["train_tokens"], entry["train_completion_tokens"] = training_tokens(
                pool, entry["indices"], tokenizer, args.max_length)
    save()
    return results


def aggregate(results: dict) -> list:
    """One row per (pruning, method): mean and sample standard deviation over seeds of every metric."""
    groups: dict = {}
    for entry in results["runs"].values():
        groups.setdefault((entry["pruning"], entry["method"]), []).append(entry)
    metrics = ["wikitext2_ppl", *MC_TASKS, "mc_mean", "train_tokens", "train_seconds", "select_seconds"]
    rows = []
    present = {e["pruning"] for e in results["runs"].values()}
    order = ["none", *(k for k in ("structured", "wanda_2_4") if k in present)]
    for pruning in order:
        for method in ["original", *METHOD_ORDER]:
            runs = groups.get((pruning, method))
            if not runs:
                continue
            row = {"pruning": pruning, "method": method, "n": len(runs)}
            for m in metrics:
                values = [r[m] for r in runs if m in r]
                if values:
                    row[m] = statistics.mean(values)
                    row[m + "_std"] = statistics.stdev(values) if len(values) > 1 else None
            rows.append(row)
    return rows


def markdown(rows: list, results: dict) -> str:
    def cell(row, m, fmt):
        if m not in row:
            return "-"
        text = fmt.format(row[m])
        return text + (" ± " + fmt.format(row[m + "_std"]) if row.get(m + "_std") is not None else "")

    head = ["pruning", "method", "n", "WikiText-2 ppl", "ARC-e", "BoolQ", "PIQA", "OBQA", "MC mean",
            "tokens/epoch", "train s", "select s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["pruning"], r["method"], str(r["n"]), cell(r, "wikitext2_ppl", "{:.2f}"),
            *(cell(r, t, "{:.3f}") for t in MC_TASKS), cell(r, "mc_mean", "{:.3f}"),
            cell(r, "train_tokens", "{:.0f}"), cell(r, "train_seconds", "{:.0f}"),
            cell(r, "select_seconds", "{:.0f}")]) + " |")
    s = results["settings"]
    lines.append("")
    lines.append(
        f"Pool {s['pool']} rows of {Path(s['data']).name}, budget {s['budget']}, max length {s['max_length']}, "
        f"LoRA r=8, {s['epochs']:g} epochs, lr {s['learning_rate']:g}, batch {s['batch_size']}; WikiText-2 first "
        f"{s['ppl_tokens']} test tokens; {s['mc_per_task']} seeded questions per MC task; evaluation in "
        f"{s['eval_dtype']}. Mean ± sample std over seeds {s['seeds']} where n > 1. tokens/epoch: prompt + "
        "completion tokens the trainer sees per epoch. select s: PASER runs after the first of a pruning reuse "
        "its cached embeddings and JSD (same models and pool), so only the first pays for scoring."
    )
    return "\n".join(lines) + "\n"


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prunings = [p for p in ("structured", "wanda_2_4") if any(r["pruning"] == p for r in rows)]
    fig, axes = plt.subplots(len(prunings), 2, figsize=(11, 4.2 * len(prunings)), squeeze=False)
    colors = dict(zip(METHOD_ORDER, plt.get_cmap("tab10").colors))
    for i, pruning in enumerate(prunings):
        for j, (metric, label) in enumerate((("mc_mean", "mean zero-shot accuracy"),
                                             ("wikitext2_ppl", "WikiText-2 perplexity"))):
            ax = axes[i][j]
            for r in rows:
                if r["pruning"] != pruning or metric not in r:
                    continue
                x = r.get("train_seconds", 0.0)
                ax.errorbar(x, r[metric], yerr=r.get(metric + "_std") or 0.0, fmt="o", color=colors[r["method"]],
                            label=r["method"], capsize=3)
            original = next(r for r in rows if r["method"] == "original")
            ax.axhline(original[metric], color="grey", linestyle="--", linewidth=1, label="original (dense)")
            ax.set_xlabel("recovery training wall time (s)")
            ax.set_ylabel(label)
            ax.set_title(f"{pruning}: {label}")
            if metric == "wikitext2_ppl":
                ax.set_yscale("log")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    results = run(args)
    rows = aggregate(results)
    results["table"] = rows
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(rows, results)
    (args.out / "table.md").write_text(table)
    plot(rows, args.out / "recovery.png")
    print(table)


if __name__ == "__main__":
    main()
