"""Domain-specific pruning (issue #18): SmolLM2-135M-Instruct pruned to 50% for the code domain with magnitude,
Wanda (calibrated on general rows, and on code rows) and D-Pruner (general rows as its open-domain set, code rows as
its domain set), then each recovered with a PASER subset of code rows.

    python benchmarks/prune_domain.py            # the configuration whose results are committed (~30 min, 2 cores)
    python benchmarks/prune_domain.py --short --out /tmp/b/prune_domain.json

For every model: WikiText-2 test perplexity (generality) and the mean NLL per response token of held-out code rows
(the domain); for every pruning, run in a fresh process: wall seconds, and the process's peak resident memory
against its memory once the model is loaded. The code rows
of ../shared/data/instruct/mix_train.jsonl (code_alpaca, gpteacher_codegen, mbpp) are split, seeded, into disjoint
parts: domain calibration, held-out evaluation and the recovery pool; the general rows (alpaca, alpaca_gpt4, lima,
self_instruct_seed, gpteacher_roleplay) give the open-domain calibration. Recovery: PASER (budget of the pool)
scored with the dense and the pruned model, then one LoRA SFT run (r=8) through paser_hf.recovery.run.recover, the
zeros kept. Each finished step is written to OUT at once (`--resume` skips those already there, same settings); the
end writes OUT with .md (the table) and .png (domain NLL against WikiText-2 perplexity) suffixes.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from harness import MIX_TRAIN, RESULTS, PeakRss, emit, peak_rss_gib, run_child, wikitext_prefix
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from paser_hf import PaserConfig, PaserDatasetSelector, RecoveryConfig
from paser_hf.evaluation import nonzero_parameters, perplexity
from paser_hf.formatting import has_chat_template, make_row_formatter, tokenize_prompt_completion
from paser_hf.models import fastest_dtype, load_model_and_tokenizer
from paser_hf.pruning import (
    D_PRUNER_GENERAL_SAMPLES,
    D_PRUNER_REGULARIZATION_WEIGHT,
    prune_model,
    sample_calibration_texts,
)
from paser_hf.recovery.run import recover

CODE_SOURCES = ("code_alpaca", "gpteacher_codegen", "mbpp")
GENERAL_SOURCES = ("alpaca", "alpaca_gpt4", "lima", "self_instruct_seed", "gpteacher_roleplay")
METHODS = {  # name: (prune_model method, calibration set)
    "magnitude": ("magnitude", None),
    "wanda_general": ("wanda", "general"),
    "wanda_code": ("wanda", "domain"),
    "d_pruner": ("d_pruner", "general"),
}
SHORT = {"general_calibration": 4, "domain_calibration": 4, "heldout": 4, "pool": 16, "budget": 0.5,
         "max_length": 64, "ppl_tokens": 1024, "epochs": 1.0, "batch_size": 4}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--general-calibration", type=int, default=D_PRUNER_GENERAL_SAMPLES,
                   help="general rows: Wanda's general calibration and D-Pruner's open-domain set")
    p.add_argument("--domain-calibration", type=int, default=128,
                   help="code rows: Wanda's code calibration and D-Pruner's domain set (the paper used ~1000)")
    p.add_argument("--regularization-weight", type=float, default=D_PRUNER_REGULARIZATION_WEIGHT)
    p.add_argument("--heldout", type=int, default=100, help="held-out code rows for the domain NLL")
    p.add_argument("--pool", type=int, default=400, help="code rows PASER selects from")
    p.add_argument("--budget", type=float, default=0.25, help="fraction of the pool PASER keeps")
    p.add_argument("--max-length", type=int, default=256, help="token limit: calibration, NLL, selection, training")
    p.add_argument("--ppl-tokens", type=int, default=16384, help="WikiText-2 test prefix, disjoint 1024-token windows")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--dtype", default=fastest_dtype("cpu"), choices=["bfloat16", "float32"],
                   help="dtype of pruning, selection and evaluation (recovery trains float32 weights, bf16 autocast "
                        "where the CPU has it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short", action="store_true", help="a smoke configuration: " + json.dumps(SHORT))
    p.add_argument("--out", type=Path, default=RESULTS / "prune_domain.json")
    p.add_argument("--resume", action="store_true", help="skip the steps already in OUT")
    p.add_argument("--prune-child", choices=list(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--save-to", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.short:
        for key, value in SHORT.items():
            setattr(args, key, value)
    return args


def split_rows(args) -> dict:
    """Seeded, disjoint row sets: general calibration; code calibration, held-out and pool."""
    with open(MIX_TRAIN, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rng = random.Random(args.seed)
    code = [r for r in rows if r["source"] in CODE_SOURCES]
    general = [r for r in rows if r["source"] in GENERAL_SOURCES]
    rng.shuffle(code)
    rng.shuffle(general)
    a, b = args.domain_calibration, args.domain_calibration + args.heldout
    return {"general": general[: args.general_calibration], "domain": code[:a], "heldout": code[a:b],
            "pool": code[b : b + args.pool]}


def response_nll(model, tokenizer, rows: list, max_length: int) -> float:
    """Mean NLL per response token of Alpaca rows, prompted as recovery training formats them."""
    formatter = make_row_formatter("alpaca", has_chat_template(tokenizer))
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for row in rows:
            pair = formatter(row)
            tokens = tokenize_prompt_completion(pair["prompt"], pair["completion"], tokenizer, max_length)
            start = tokens["response_start"]
            if tokens["num_response_tokens"] == 0 or start == 0:
                continue
            ids = torch.tensor([tokens["input_ids"]])
            logits = model(input_ids=ids).logits[0, start - 1 : -1].float()
            total += torch.nn.functional.cross_entropy(logits, ids[0, start:], reduction="sum").item()
            count += ids.shape[1] - start
    return total / count


def evaluate(model, tokenizer, text: str, heldout: list, max_length: int) -> dict:
    start = time.perf_counter()
    ppl = perplexity(model, tokenizer, text, max_length=1024, show_progress=False)["perplexity"]
    return {"wikitext2_ppl": ppl, "code_nll": response_nll(model, tokenizer, heldout, max_length),
            "nonzero_parameters": nonzero_parameters(model), "eval_seconds": round(time.perf_counter() - start, 1)}


def prune_child(args) -> None:
    """The child process of `prune`: load the dense model, prune it with `--prune-child`'s method, save it to
    `--save-to` and emit its seconds and memory: the resident memory once the model and the texts are loaded, its
    peak while pruning (sampled), and the process's peak (loading included)."""
    kind, calibration = METHODS[args.prune_child]
    model, tokenizer = load_model_and_tokenizer(None, dtype=getattr(torch, args.dtype))
    rows = split_rows(args)
    kwargs = {}
    if calibration:
        kwargs = {"calibration_texts": sample_calibration_texts(Dataset.from_list(rows[calibration])),
                  "tokenizer": tokenizer}
    if kind == "d_pruner":
        kwargs.update(domain_texts=sample_calibration_texts(Dataset.from_list(rows["domain"])),
                      regularization_weight=args.regularization_weight)
    start = time.perf_counter()
    with PeakRss() as memory:
        report = prune_model(model, method=kind, sparsity=args.sparsity, calibration_max_length=args.max_length,
                             **kwargs)
    seconds = time.perf_counter() - start
    model.save_pretrained(args.save_to)
    emit({"prune_seconds": round(seconds, 1), "rss_after_load_gib": round(memory.baseline / 2**30, 3),
          "pruning_peak_rss_gib": round(memory.peak / 2**30, 3), "process_peak_rss_gib": round(peak_rss_gib(), 3),
          "sparsity": report.sparsity, "details": report.details})


def prune(method: str, args, workdir: Path) -> tuple:
    """The model pruned with `method`, pruned in a fresh process so that its peak memory is the pruning's own."""
    folder = workdir / method
    info = run_child(Path(__file__), *sys.argv[1:], "--prune-child", method, "--save-to", str(folder))
    return AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).eval(), info


def paser_recover(original, pruned, tokenizer, pool: Dataset, args, workdir: Path) -> tuple:
    start = time.perf_counter()
    config = PaserConfig(budget=args.budget, max_length=args.max_length, show_progress=False, seed=args.seed)
    selector = PaserDatasetSelector(original, pruned, tokenizer, config)
    subset = selector(pool)
    select_seconds = time.perf_counter() - start
    student = copy.deepcopy(pruned).float().train()
    recovery = RecoveryConfig(
        output_dir=str(workdir), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.03, max_length=args.max_length,
        logging_steps=10, save_strategy="no", report_to="none", dataloader_num_workers=0, seed=args.seed,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    start = time.perf_counter()
    result = recover(student, recovery, subset.select_columns(["instruction", "input", "output"]), tokenizer,
                     peft_config=lora, save=False)
    info = {"rows": len(subset), "select_seconds": round(select_seconds, 1),
            "train_seconds": round(time.perf_counter() - start, 1), "train_steps": result.train_output.global_step,
            "train_loss": result.train_output.training_loss}
    return result.model.to(next(pruned.parameters()).dtype).eval(), info


def run(args) -> dict:
    skip = ("out", "resume", "prune_child", "save_to")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}
    results = {"settings": settings, "runs": {}}
    if args.resume and args.out.is_file():
        results = json.loads(args.out.read_text())
        if results.get("settings") != settings:
            raise SystemExit(f"{args.out} was made with other settings; drop --resume or use another --out.")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(key: str, entry: dict) -> None:
        results["runs"][key] = entry
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(key, json.dumps(entry), flush=True)

    torch.manual_seed(args.seed)
    original, tokenizer = load_model_and_tokenizer(None, dtype=getattr(torch, args.dtype))
    rows = split_rows(args)
    text = wikitext_prefix(tokenizer, args.ppl_tokens)
    results["data"] = {name: len(part) for name, part in rows.items()}
    if "dense" not in results["runs"]:
        save("dense", evaluate(original, tokenizer, text, rows["heldout"], args.max_length))
    pool = Dataset.from_list(rows["pool"])
    workdir = args.out.parent / "prune_domain" / "work"
    for method in args.methods:
        if f"{method}/recovered" in results["runs"]:
            continue
        pruned, pruning = prune(method, args, workdir)
        save(f"{method}/pruned", {**pruning, **evaluate(pruned, tokenizer, text, rows["heldout"], args.max_length)})
        recovered, info = paser_recover(original, pruned, tokenizer, pool, args, workdir / "trainer")
        save(f"{method}/recovered", {**info, **evaluate(recovered, tokenizer, text, rows["heldout"], args.max_length)})
        del pruned, recovered
    return results


def table(results: dict) -> str:
    runs = results["runs"]
    head = ["method", "prune s", "peak RSS while pruning, GiB (before)", "WikiText-2 ppl", "code NLL", "recovered ppl",
            "recovered code NLL"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dense = runs["dense"]
    lines.append(f"| dense | - | - | {dense['wikitext2_ppl']:.2f} | {dense['code_nll']:.3f} | - | - |")
    for method in METHODS:
        pruned, recovered = runs.get(f"{method}/pruned"), runs.get(f"{method}/recovered")
        if pruned is None:
            continue
        after = f"{recovered['wikitext2_ppl']:.2f} | {recovered['code_nll']:.3f}" if recovered else "- | -"
        memory = f"{pruned['pruning_peak_rss_gib']:.2f} ({pruned['rss_after_load_gib']:.2f})"
        lines.append(f"| {method} | {pruned['prune_seconds']:.1f} | {memory} | "
                     f"{pruned['wikitext2_ppl']:.2f} | {pruned['code_nll']:.3f} | {after} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter([runs["dense"]["wikitext2_ppl"]], [runs["dense"]["code_nll"]], marker="*", s=160, color="black",
               label="dense")
    for color, method in zip(plt.get_cmap("tab10").colors, METHODS):
        pruned, recovered = runs.get(f"{method}/pruned"), runs.get(f"{method}/recovered")
        if pruned is None:
            continue
        ax.scatter([pruned["wikitext2_ppl"]], [pruned["code_nll"]], facecolors="none", edgecolors=[color], s=60,
                   label=f"{method} (pruned)")
        if recovered:
            ax.scatter([recovered["wikitext2_ppl"]], [recovered["code_nll"]], color=color, s=60,
                       label=f"{method} (+ PASER recovery)")
            ax.annotate("", (recovered["wikitext2_ppl"], recovered["code_nll"]),
                        (pruned["wikitext2_ppl"], pruned["code_nll"]), arrowprops={"arrowstyle": "->", "color": color})
    ax.set_xscale("log")
    ax.set_xticks([20, 30, 50, 100, 200, 500, 1000, 2000])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.0f"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.autoscale()
    ax.set_xlabel("WikiText-2 perplexity (generality, log scale)")
    ax.set_ylabel("held-out code NLL per response token (domain)")
    ax.set_title(f"SmolLM2-135M at {results['settings']['sparsity']:.0%} sparsity, code domain")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.prune_child:
        prune_child(args)
        return
    results = run(args)
    markdown = table(results)
    args.out.with_suffix(".md").write_text(markdown)
    plot(results, args.out.with_suffix(".png"))
    print(markdown)


if __name__ == "__main__":
    main()
