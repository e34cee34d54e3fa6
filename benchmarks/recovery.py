"""Recovery benchmark: does a selection recover a pruned SmolLM2-135M-Instruct better than random rows at the same
training cost? Paired seeds, held-out per-capability NLL and KL, bootstrap intervals.

    python benchmarks/recovery.py --pilot --out benchmarks/results/recovery_pilot   # random vs PASER, 3 seeds
    python benchmarks/recovery.py --resume                                         # the grid, resumable

Data: ../shared/data/instruct/mix_train.jsonl, shuffled once with seed 0: the first ``--pool`` rows are the pool,
then a dev split and a report split of ``--eval-rows`` rows per capability each (general, math, code), disjoint from
the pool and from each other (rows whose instruction and input repeat a pool row are skipped). Settings are chosen on
dev; the figures reported come from report.

Prunings: structured (MLP channels removed until ~25% of the parameters are gone) and Wanda 2:4. Each method keeps a
budget of 20% of the pool's tokens (``_tokens`` methods) or 20% of its rows (``_rows``), then trains the same LoRA SFT
(r=8, no dropout, `RecoveryConfig`'s CPU defaults); PASER + KD distils offline (kd_alpha=1) from the original's
top-k captured while PASER scores. One seed sets both the selection and the training; method seed s is paired with
the random selection of the same unit and seed s.

Metrics per split and capability: the response NLL (per response token) and the KL(original || model) per response
token, from the original's top-k distributions cached once per split (k=64 and the rest of the mass as one outcome,
which measured 0.9998x the full KL in `offline_kd.py`); the fraction of the pruning damage recovered,
(pruned - method) / (pruned - original), on both; WikiText-2 perplexity; zero-shot MC accuracy. Paired differences
against random come with 95% bootstrap intervals over report rows (stratified by capability) and over seed pairs.

Every finished run is written to OUT/results.json at once, with its selected indices, tokens and seconds;
``--resume`` skips runs already there. The end writes OUT/table.md and OUT/recovery.png. OUT/work holds caches and is
not committed.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from harness import MC_DIR, MIX_TRAIN, RESULTS, calibration_texts, wikitext_prefix
from peft import LoraConfig

from paser_hf import (
    ClusterBalancedSelector,
    IfdSelector,
    LongestSelector,
    PaserConfig,
    PaserDatasetSelector,
    RandomSelector,
    RecoveryConfig,
)
from paser_hf.evaluation import load_mc_jsonl, multiple_choice_accuracy, perplexity
from paser_hf.formatting import has_chat_template, make_row_formatter, tokenize_prompt_completion
from paser_hf.models import fastest_dtype, load_model_and_tokenizer, load_tokenizer
from paser_hf.pruning import count_parameters, decoder_layers, prune_model
from paser_hf.recovery.offline import STORED_COLUMNS, has_stored_targets, stored_log_prob_divergence
from paser_hf.recovery.run import recover as run_recovery
from paser_hf.selection.teacher import topk_with_tail

CAPABILITIES = {
    "general": ("alpaca", "alpaca_gpt4", "lima", "gpteacher_roleplay", "self_instruct_seed"),
    "math": ("gsm8k",),
    "code": ("code_alpaca", "gpteacher_codegen", "mbpp"),
}
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
# (method, unit, seeds): the grid in the order it runs, the most informative runs first. 5 seeds, not 3: on the dev
# pilot the seed variance of the paired difference was 29x the row variance, which projected 95% half-widths of
# 1.97 points with 3 seeds (at the 2-point target) and 1.57 with 5.
GRID = [
    ("random_tokens", "tokens", 5), ("paser_tokens", "tokens", 5),
    ("random_rows", "rows", 5), ("paser_rows", "rows", 5),
    ("paser_size_cds", "tokens", 5),
    ("ifd", "tokens", 1), ("longest", "tokens", 1), ("cluster_balanced", "tokens", 1),
    *((name, "tokens", 1) for name in ABLATIONS),
    ("paser_kd", "tokens", 1), ("full_pool", None, 1),
]
PILOT = [("random_tokens", "tokens", 3), ("paser_tokens", "tokens", 3)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=int, default=2000, help="pool rows (the first of the seed-0 shuffle)")
    p.add_argument("--eval-rows", type=int, default=200, help="rows per capability in each of dev and report")
    p.add_argument("--splits", nargs="+", default=["report"], choices=["dev", "report"],
                   help="evaluation splits (choose settings on dev, report on report)")
    p.add_argument("--budget", type=float, default=0.2)
    p.add_argument("--prunings", nargs="+", default=["structured", "wanda_2_4"], choices=["structured", "wanda_2_4"])
    p.add_argument("--methods", nargs="+", default=None,
                   help="run only these methods of the grid (default: all of them, on every pruning)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per method, for every method run (default: the grid's own count, 1 to 5); seeds 0 to "
                   "N-1, so with --resume a larger N adds seeds to a method without rerunning the first")
    p.add_argument("--pilot", action="store_true", help="random vs PASER at a token budget, 3 seeds, structured, dev")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--topk", type=int, default=64, help="original top-k cached for the KL")
    p.add_argument("--ppl-tokens", type=int, default=16384)
    p.add_argument("--mc-per-task", type=int, default=200)
    p.add_argument("--eval-dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="dtype of evaluation and of PASER's JSD scoring; auto: bfloat16 where the CPU has it natively "
                   "(`paser_hf.models.fastest_dtype`), else float32. Each run records what it used.")
    p.add_argument("--check-dtype", action="store_true",
                   help="also evaluate each pruned model in float32 and record the relative difference")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--out", type=Path, default=RESULTS / "recovery_grid")
    p.add_argument("--resume", action="store_true", help="skip runs already in OUT/results.json")
    p.add_argument("--summarize", action="store_true", help="only rebuild the table, intervals and plot")
    args = p.parse_args()
    args.dtype = fastest_dtype("cpu") if args.eval_dtype == "auto" else args.eval_dtype
    if args.pilot:
        args.prunings, args.splits, args.mc_per_task, args.check_dtype = ["structured"], ["dev"], 0, True
    return args


def settings_of(args) -> dict:
    skip = ("out", "resume", "summarize", "methods", "seeds", "prunings", "bootstrap", "check_dtype", "dtype")
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}


def capability_of(source: str) -> str:
    return next(c for c, sources in CAPABILITIES.items() if source in sources)


def load_splits(pool_size: int, eval_rows: int) -> tuple[Dataset, dict]:
    """The pool, and the dev and report splits as lists of (row, capability), from one seed-0 shuffle."""
    with open(MIX_TRAIN, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    pool_ids = sorted(order[:pool_size])
    seen = {(rows[i]["instruction"], rows[i]["input"]) for i in pool_ids}
    rest = iter(order[pool_size:])
    splits = {}
    for split in ("dev", "report"):
        counts = dict.fromkeys(CAPABILITIES, 0)
        chosen = []
        while min(counts.values()) < eval_rows:
            row = rows[next(rest)]
            key, cap = (row["instruction"], row["input"]), capability_of(row["source"])
            if key in seen or counts[cap] >= eval_rows:
                continue
            seen.add(key)
            counts[cap] += 1
            chosen.append((row, cap))
        splits[split] = chosen
    return Dataset.from_list([rows[i] for i in pool_ids]), splits


def encode_rows(rows: list, tokenizer, max_length: int) -> list[dict]:
    formatter = make_row_formatter("alpaca", has_chat_template(tokenizer))
    out = []
    for row, cap in rows:
        pc = formatter(row)
        tokens = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, max_length)
        out.append({"ids": tokens["input_ids"], "start": tokens["response_start"], "capability": cap})
    return out


def response_batches(model, encoded: list[dict], batch_size: int = 8):
    """Yield (row index, response log-probs (n, V) in float32, response target ids (n,)) for every row, batched by
    length; the LM head runs on the response positions only."""
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["ids"]))
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    for b in range(0, len(order), batch_size):
        chunk = order[b:b + batch_size]
        width = max(len(encoded[i]["ids"]) for i in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, i in enumerate(chunk):
            ids[j, :len(encoded[i]["ids"])] = torch.tensor(encoded[i]["ids"])
            mask[j, :len(encoded[i]["ids"])] = 1
        with torch.no_grad():
            hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            for j, i in enumerate(chunk):
                start, end = encoded[i]["start"], len(encoded[i]["ids"])
                if end - start < 1 or start < 1:
                    yield i, None, None
                    continue
                logits = head(hidden[j, start - 1:end - 1]).float()
                yield i, torch.log_softmax(logits, dim=-1), ids[j, start:end].to(device)


def original_targets(model, encoded: list[dict], k: int) -> list:
    """Per row: the original's top-k log-probs, ids and rest mass on the response positions."""
    targets = [None] * len(encoded)
    for i, logp, _ in response_batches(model, encoded):
        if logp is not None:
            values, ids, tail = topk_with_tail(logp, k)
            targets[i] = (values.half().cpu(), ids.int().cpu(), tail.float().cpu())
    return targets


def row_metrics(model, encoded: list[dict], targets: list) -> dict:
    """Per row: the response NLL summed over tokens, KL(original || model) summed over tokens, and the token count."""
    nll, kl, count = (np.zeros(len(encoded)) for _ in range(3))
    for i, logp, target in response_batches(model, encoded):
        if logp is None:
            continue
        nll[i] = float(-logp.gather(1, target[:, None]).sum())
        values, ids, tail = targets[i]
        kl[i] = float(stored_log_prob_divergence(logp, ids.long(), values.float(), tail).sum())
        count[i] = len(target)
    return {"nll": nll.round(5).tolist(), "kl": kl.round(6).tolist(), "tokens": count.astype(int).tolist()}


def load_mc(per_task: int, seed: int = 0) -> dict:
    tasks = {}
    for task, name in MC_TASKS.items():
        rows = load_mc_jsonl(MC_DIR / name)
        tasks[task] = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), min(per_task, len(rows))))]
    return tasks


class Evaluation:
    """Everything a model is evaluated on, with the original's cached targets."""

    def __init__(self, args, tokenizer, splits: dict, original):
        self.args, self.tokenizer = args, tokenizer
        self.encoded = {s: encode_rows(splits[s], tokenizer, args.max_length) for s in args.splits}
        self.capabilities = {s: [e["capability"] for e in self.encoded[s]] for s in args.splits}
        self.text = wikitext_prefix(tokenizer, args.ppl_tokens) if args.ppl_tokens else None
        self.mc = load_mc(args.mc_per_task) if args.mc_per_task else {}
        model = self.in_eval_dtype(original)
        self.targets = {s: original_targets(model, self.encoded[s], args.topk) for s in args.splits}

    def in_eval_dtype(self, model):
        dtype = getattr(torch, self.args.dtype)
        if next(model.parameters()).dtype != dtype:
            model = copy.deepcopy(model).to(dtype)
        return model.eval()

    def dtype_check(self, model) -> dict:
        """Relative difference of the per-capability NLL and KL in the evaluation dtype against float32."""
        split = self.args.splits[0]
        caps = self.capabilities[split]
        fast = {"rows": {split: row_metrics(self.in_eval_dtype(model), self.encoded[split], self.targets[split])}}
        exact = {"rows": {split: row_metrics(copy.deepcopy(model).float().eval(), self.encoded[split],
                                             self.targets[split])}}
        fast, exact = split_means(fast, caps, split), split_means(exact, caps, split)
        return {f"{cap}_{name}": round(fast[cap][j] / exact[cap][j] - 1, 5) for cap in CAPABILITIES
                for j, name in enumerate(("nll", "kl"))}

    def __call__(self, model) -> dict:
        model = self.in_eval_dtype(model)
        start = time.perf_counter()
        out = {"rows": {s: row_metrics(model, self.encoded[s], self.targets[s]) for s in self.args.splits}}
        if self.text:
            out["wikitext2_ppl"] = perplexity(model, self.tokenizer, self.text, show_progress=False)["perplexity"]
        for task, rows in self.mc.items():
            out[task] = multiple_choice_accuracy(model, self.tokenizer, rows, batch_size=16,
                                                 show_progress=False)["accuracy"]
        if self.mc:
            out["mc_mean"] = statistics.mean(out[t] for t in self.mc)
        out["eval_seconds"] = round(time.perf_counter() - start, 1)
        out["eval_dtype"] = self.args.dtype
        return out


def make_pruned(original, tokenizer, kind: str) -> tuple:
    model = copy.deepcopy(original)
    if kind == "structured":
        mlp = decoder_layers(model)[0].mlp
        mlp_params = len(decoder_layers(model)) * 3 * mlp.gate_proj.in_features * mlp.gate_proj.out_features
        kwargs = {"method": "structured_mlp", "sparsity": 0.25 * count_parameters(model) / mlp_params}
    else:
        kwargs = {"method": "wanda", "sparsity": None, "n_m": (2, 4)}
    report = prune_model(model, calibration_texts=calibration_texts(32), tokenizer=tokenizer, **kwargs)
    return model.eval(), report.to_dict()


def make_selector(method: str, unit: str, seed: int, original, pruned, tokenizer, args, cache_dir: Path):
    base = {"budget": args.budget, "budget_unit": unit, "max_length": args.max_length, "show_progress": False,
            "seed": seed}
    paser = {**base, "cache_dir": str(cache_dir)}
    if method.startswith("random"):
        return RandomSelector(PaserConfig(**base), tokenizer=tokenizer)
    if method == "ifd":
        return IfdSelector(pruned, tokenizer, PaserConfig(**base))
    if method == "longest":
        return LongestSelector(tokenizer, PaserConfig(**base))
    if method == "cluster_balanced":
        return ClusterBalancedSelector(tokenizer, PaserConfig(**paser))
    if method == "paser_size_cds":
        return PaserDatasetSelector(original, pruned, tokenizer, PaserConfig(**paser, allocation="size_cds"))
    if method in ABLATIONS:
        return PaserDatasetSelector(original, pruned, tokenizer, PaserConfig(**paser, **ABLATIONS[method]))
    if method == "paser_kd":
        return PaserDatasetSelector(original, pruned, tokenizer, PaserConfig(**paser, teacher_topk=args.topk))
    return PaserDatasetSelector(original, pruned, tokenizer, PaserConfig(**paser))


def training_tokens(pool: Dataset, indices: list, tokenizer, max_length: int) -> tuple:
    """(all tokens, completion tokens) per epoch of the rows at `indices`, as the trainer tokenises them."""
    encoded = encode_rows([(row, None) for row in pool.select(indices)], tokenizer, max_length)
    return sum(len(e["ids"]) for e in encoded), sum(len(e["ids"]) - e["start"] for e in encoded)


def train(pruned, original, tokenizer, subset: Dataset, args, kd_alpha: float, seed: int, workdir: Path):
    """LoRA SFT (or KD, offline from the original's top-k stored on `subset` when it has them) of a copy of `pruned`
    on `subset`: (merged model, train seconds, steps, loss, whether it trained under bf16 autocast)."""
    config = RecoveryConfig(
        output_dir=str(workdir), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.03, max_length=args.max_length,
        kd_alpha=kd_alpha, logging_steps=10, save_strategy="no", report_to="none", seed=seed, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    stored = has_stored_targets(subset)
    columns = ["instruction", "input", "output", *(STORED_COLUMNS if stored else ())]
    result = run_recovery(copy.deepcopy(pruned).train(), config, subset.select_columns(columns), tokenizer,
                          peft_config=lora, teacher_model=original if kd_alpha and not stored else None, save=False)
    state = result.train_output
    return result.model, result.seconds, state.global_step, state.training_loss, config.bf16


def planned_runs(args) -> list:
    grid = PILOT if args.pilot else GRID
    runs = []
    for pruning in args.prunings:
        for method, unit, seeds in grid:
            if args.methods and method not in args.methods:
                continue
            for seed in range(args.seeds or seeds):
                runs.append((pruning, method, unit, seed))
    first = {method for method, _, _ in PILOT}
    order = [method for method, _, _ in grid]
    return sorted(runs, key=lambda r: (args.prunings.index(r[0]), r[1] not in first, r[3], order.index(r[1])))


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
        path.write_text(json.dumps(results) + "\n")

    torch.manual_seed(0)
    original, tokenizer = load_model_and_tokenizer(None)
    original.eval()
    pool, splits = load_splits(args.pool, args.eval_rows)
    results["pool"] = {"rows": len(pool), "tokens": training_tokens(pool, list(range(len(pool))), tokenizer,
                                                                     args.max_length)[0]}
    results["capabilities"] = {s: [cap for _, cap in splits[s]] for s in args.splits}
    t0 = time.perf_counter()
    evaluate = Evaluation(args, tokenizer, splits, original)
    print(f"original targets cached in {time.perf_counter() - t0:.0f} s", flush=True)
    if "original" not in results["runs"]:
        results["runs"]["original"] = {"pruning": "none", "method": "original", **evaluate(original)}
        save()
    plan = planned_runs(args)
    for pruning in args.prunings:
        todo = [r for r in plan if r[0] == pruning and f"{pruning}/{r[1]}/seed{r[3]}" not in results["runs"]]
        if not todo and f"{pruning}/no_recovery" in results["runs"]:
            continue
        t0 = time.perf_counter()
        pruned, report = make_pruned(original, tokenizer, pruning)
        results.setdefault("pruning", {})[pruning] = {**report, "seconds": round(time.perf_counter() - t0, 1)}
        if f"{pruning}/no_recovery" not in results["runs"]:
            results["runs"][f"{pruning}/no_recovery"] = {"pruning": pruning, "method": "no_recovery",
                                                          **evaluate(pruned)}
            save()
        if args.check_dtype and pruning not in results.setdefault("dtype_check", {}):
            results["dtype_check"][pruning] = evaluate.dtype_check(pruned)
            save()
            print("dtype check", json.dumps(results["dtype_check"][pruning]), flush=True)
        # PASER scores in the evaluation dtype: no copy where that is the models' own float32
        original_s, pruned_s = evaluate.in_eval_dtype(original), evaluate.in_eval_dtype(pruned)
        for _, method, unit, seed in todo:
            key = f"{pruning}/{method}/seed{seed}"
            t0 = time.perf_counter()
            if method == "full_pool":
                subset, indices, selection = pool, list(range(len(pool))), {}
            else:
                selector = make_selector(method, unit, seed, original_s, pruned_s, tokenizer, args,
                                         args.out / "work" / "cache" / pruning)
                subset = selector(pool)
                indices = [int(i) for i in selector.selected_indices_]
                selection = {"timings": selector.report_.to_dict().get("timings")}
                if hasattr(selector, "clustering_"):
                    selection["k"] = int(selector.clustering_.k)
            select_seconds = time.perf_counter() - t0
            tokens, completion = training_tokens(pool, indices, tokenizer, args.max_length)
            kd_alpha = 1.0 if method == "paser_kd" else 0.0
            model, seconds, steps, loss, bf16 = train(pruned, original, tokenizer, subset, args, kd_alpha, seed,
                                                      args.out / "work" / "trainer")
            entry = {"pruning": pruning, "method": method, "unit": unit, "seed": seed, "rows": len(indices),
                     "train_tokens": tokens, "train_completion_tokens": completion,
                     "select_seconds": round(select_seconds, 1), "train_seconds": round(seconds, 1),
                     "train_steps": steps, "train_loss": loss, "train_bf16": bf16, "selection": selection,
                     "indices": indices,
                     **evaluate(model)}
            results["runs"][key] = entry
            save()
            brief = summarize_run(results, entry)
            print(key, json.dumps({k: v for k, v in entry.items() if k not in ("indices", "rows")} | brief,
                                  default=str)[:600], flush=True)
    return results


def split_means(entry: dict, caps: list, split: str, rows=None) -> dict:
    """Token-weighted NLL and KL per capability (and over all rows), optionally on resampled `rows`."""
    data = entry["rows"][split]
    nll, kl, tokens = (np.asarray(data[k], dtype=float) for k in ("nll", "kl", "tokens"))
    caps = np.asarray(caps)
    idx = np.arange(len(caps)) if rows is None else rows
    out = {}
    for cap in CAPABILITIES:
        sel = idx[caps[idx] == cap]
        out[cap] = (nll[sel].sum() / tokens[sel].sum(), kl[sel].sum() / tokens[sel].sum())
    return out


def damage_recovered(method: dict, pruned: dict, original: dict) -> dict:
    """Per capability and on their mean: (pruned - method) / (pruned - original), for NLL and for KL (original 0)."""
    out = {}
    for cap in CAPABILITIES:
        out[f"{cap}_nll"] = (pruned[cap][0] - method[cap][0]) / (pruned[cap][0] - original[cap][0])
        out[f"{cap}_kl"] = (pruned[cap][1] - method[cap][1]) / pruned[cap][1]
    for metric in ("nll", "kl"):
        out[metric] = statistics.mean(out[f"{cap}_{metric}"] for cap in CAPABILITIES)
    return out


def summarize_run(results: dict, entry: dict) -> dict:
    out = {}
    for split, caps in results["capabilities"].items():
        base = results["runs"].get(f"{entry['pruning']}/no_recovery")
        if base is None:
            continue
        recovered = damage_recovered(split_means(entry, caps, split), split_means(base, caps, split),
                                     split_means(results["runs"]["original"], caps, split))
        out[f"{split}_recovered"] = {k: round(v, 4) for k, v in recovered.items()}
    return out


def resamples(caps: np.ndarray, draws: int, rng) -> list:
    """Bootstrap row indices, resampled within each capability."""
    strata = [np.flatnonzero(caps == cap) for cap in CAPABILITIES]
    return [np.concatenate([rng.choice(s, len(s)) for s in strata]) for _ in range(draws)]


def interval(point: dict, boot: list) -> dict:
    """The point estimate and the 2.5 and 97.5 percentiles of its bootstrap draws, per key."""
    out = {}
    for k in point:
        lo, hi = np.percentile([b[k] for b in boot], [2.5, 97.5])
        out[k] = (round(point[k], 2), round(float(lo), 2), round(float(hi), 2))
    return out


def stream(seed: int, *names: str):
    """A random generator of its own for one comparison (seeded by `seed` and the names), so that adding runs of
    one method leaves every other method's interval as it was."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def bootstrap(groups: list, value, samples: list, rng) -> dict:
    """Mean of ``value(group, rows)`` over `groups` (seeds), with its interval from resampling rows and seeds."""
    point_values = [value(g, None) for g in groups]
    point = {k: statistics.mean(v[k] for v in point_values) for k in point_values[0]}
    boot = []
    for sample in samples:
        chosen = rng.choice(len(groups), len(groups)) if len(groups) > 1 else [0]
        values = [value(groups[c], sample) for c in chosen]
        boot.append({k: statistics.mean(v[k] for v in values) for k in point})
    return interval(point, boot)


def method_intervals(results: dict, split: str, draws: int, seed: int = 0) -> tuple[list, list]:
    """Per method: damage recovered (points) with its interval; and for every method against random of the same
    unit and seed, the paired difference with its interval. 95% bootstrap over rows within capability and seeds."""
    caps = np.asarray(results["capabilities"][split])
    runs = results["runs"]
    samples = resamples(caps, draws, np.random.default_rng(seed))
    original = runs["original"]
    levels, differences = [], []
    for pruning in results.get("pruning", {}):
        pruned = runs[f"{pruning}/no_recovery"]

        def recovered(entry, sample):
            means = (split_means(e, caps, split, sample) for e in (entry, pruned, original))
            return {k: 100 * v for k, v in damage_recovered(*means).items()}

        groups: dict = {}
        for e in runs.values():
            if e["pruning"] == pruning and "train_tokens" in e:
                groups.setdefault(e["method"], []).append(e)
        for method, entries in groups.items():
            levels.append({"pruning": pruning, "method": method, "unit": entries[0].get("unit"),
                           "seeds": len(entries), "train_tokens": statistics.mean(e["train_tokens"] for e in entries),
                           "train_seconds": statistics.mean(e["train_seconds"] for e in entries),
                           "float32_train_runs": sum(e.get("train_bf16") is False for e in entries),
                           **bootstrap(entries, recovered, samples, stream(seed, pruning, method))})
            if method.startswith("random"):
                continue
            reference = "random_rows" if entries[0].get("unit") == "rows" else "random_tokens"
            pairs = [(e, runs[f"{pruning}/{reference}/seed{e['seed']}"]) for e in entries
                     if f"{pruning}/{reference}/seed{e['seed']}" in runs]
            if not pairs:
                continue

            def difference(pair, sample):
                first, second = (recovered(e, sample) for e in pair)
                return {k: first[k] - second[k] for k in first}

            differences.append({"pruning": pruning, "method": method, "reference": reference, "seeds": len(pairs),
                                "tokens_ratio": round(statistics.mean(a["train_tokens"] / b["train_tokens"]
                                                                      for a, b in pairs), 4),
                                **bootstrap(pairs, difference, samples, stream(seed, pruning, method, reference))})
    return levels, differences


def power(results: dict, split: str, draws: int, seed: int = 0) -> list:
    """For every method paired with random over several seeds, the two parts of the variance of the mean paired
    difference in NLL damage recovered (points^2): across seeds (training and selection noise; every seed is scored
    on the same rows, so their sampling error is shared and does not show here) and over rows (the row bootstrap of
    one seed's difference, averaged over seeds; it does not shrink with more seeds). The projected 95% half-width for
    S seeds and R rows per capability is 1.96 sqrt(var_seeds / S + var_rows * R0 / R)."""
    caps = np.asarray(results["capabilities"][split])
    rows_now = int(min(np.sum(caps == cap) for cap in CAPABILITIES))
    runs = results["runs"]
    rng = np.random.default_rng(seed)
    samples = resamples(caps, draws, rng)
    out = []
    for pruning in results.get("pruning", {}):
        pruned, original = runs[f"{pruning}/no_recovery"], runs["original"]

        def recovered(entry, sample):
            means = (split_means(e, caps, split, sample) for e in (entry, pruned, original))
            return 100 * damage_recovered(*means)["nll"]

        methods = {e["method"] for e in runs.values() if e["pruning"] == pruning and "train_tokens" in e
                   and not e["method"].startswith("random")}
        for method in sorted(methods):
            pairs = []
            for e in runs.values():
                if e["pruning"] != pruning or e["method"] != method:
                    continue
                reference = runs.get(f"{pruning}/{'random_rows' if e.get('unit') == 'rows' else 'random_tokens'}"
                                     f"/seed{e['seed']}")
                if reference is not None:
                    pairs.append((e, reference))
            if len(pairs) < 2:
                continue
            differences = [recovered(a, None) - recovered(b, None) for a, b in pairs]
            row_var = statistics.mean(float(np.var([recovered(a, s) - recovered(b, s) for s in samples], ddof=1))
                                      for a, b in pairs)
            seed_var = statistics.variance(differences)

            def half_width(seeds: int, rows: int) -> float:
                return round(1.96 * (seed_var / seeds + row_var * rows_now / rows) ** 0.5, 2)

            out.append({"pruning": pruning, "method": method, "seeds": len(pairs), "rows_per_capability": rows_now,
                        "differences": [round(d, 2) for d in differences],
                        "var_seeds": round(seed_var, 3), "var_rows": round(row_var, 3),
                        "half_width": {f"{s} seeds, {r} rows": half_width(s, r) for s in (3, 5, 10)
                                       for r in (rows_now, 2 * rows_now, 4 * rows_now)}})
    return out


def token_shares(indices, encoded: list[dict]) -> dict:
    """The % of the training tokens of the rows at `indices` (`encode_rows` output) from each capability."""
    tokens = dict.fromkeys(CAPABILITIES, 0)
    for i in indices:
        tokens[encoded[i]["capability"]] += len(encoded[i]["ids"])
    return {cap: 100 * n / sum(tokens.values()) for cap, n in tokens.items()}


def capability_shares(results: dict) -> dict:
    """`token_shares` of every run with selected indices, and of the whole pool ("pool")."""
    settings = results["settings"]
    pool, _ = load_splits(settings["pool"], settings["eval_rows"])
    encoded = encode_rows([(row, capability_of(row["source"])) for row in pool], load_tokenizer(None),
                          settings["max_length"])
    shares = {"pool": token_shares(range(len(encoded)), encoded)}
    shares.update({key: token_shares(e["indices"], encoded) for key, e in results["runs"].items() if "indices" in e})
    return shares


def table(results: dict, split: str, intervals: list, shares: dict) -> str:
    runs = results["runs"]
    lines = [f"Split: {split}. Damage recovered = (pruned - method) / (pruned - original), in %, mean over seeds. "
             "Token shares: % of the training tokens from general / math / code rows (the pool: "
             f"{' / '.join(f'{v:.0f}' for v in shares['pool'].values())}).",
             "", "| pruning | method | seeds | tokens/epoch | token shares % | train s | select s | NLL general "
             "| NLL math | NLL code | recovered NLL % | recovered KL % | WikiText-2 ppl | MC mean |", "|" + "---|" * 14]
    groups: dict = {}
    for key, e in runs.items():
        groups.setdefault((e["pruning"], e["method"]), []).append(key)
    caps = results["capabilities"][split]

    def share_cell(rows: list) -> str:
        return " / ".join(f"{statistics.mean(r[cap] for r in rows):.0f}" for cap in CAPABILITIES) if rows else "-"

    for (pruning, method), keys in groups.items():
        entries = [runs[k] for k in keys]
        means = [split_means(e, caps, split) for e in entries]
        rec = [summarize_run(results, e).get(f"{split}_recovered", {}) for e in entries]

        def avg(values, fmt):
            values = [v for v in values if v is not None]
            if not values:
                return "-"
            text = fmt.format(statistics.mean(values))
            return text + (" ± " + fmt.format(statistics.stdev(values)) if len(values) > 1 else "")

        lines.append("| " + " | ".join([
            pruning, method, str(len(entries)), avg([e.get("train_tokens") for e in entries], "{:.0f}"),
            share_cell([shares[k] for k in keys if k in shares]),
            avg([e.get("train_seconds") for e in entries], "{:.0f}"),
            avg([e.get("select_seconds") for e in entries], "{:.0f}"),
            *(avg([m[cap][0] for m in means], "{:.4f}") for cap in CAPABILITIES),
            avg([100 * r["nll"] if r else None for r in rec], "{:.1f}"),
            avg([100 * r["kl"] if r else None for r in rec], "{:.1f}"),
            avg([e.get("wikitext2_ppl") for e in entries], "{:.2f}"),
            avg([e.get("mc_mean") for e in entries], "{:.3f}")]) + " |")
    lines += ["", "Paired difference against random at the same unit and seed, points of damage recovered, "
              "95% bootstrap interval (rows within capability, and seed pairs):", "",
              "| pruning | method | vs | seeds | tokens ratio | NLL (mean of capabilities) | general | math | code "
              "| KL (mean) |", "|" + "---|" * 10]
    for r in intervals:
        cell = lambda v: f"{v[0]:+.1f} [{v[1]:+.1f}, {v[2]:+.1f}]"  # noqa: E731
        lines.append("| " + " | ".join([r["pruning"], r["method"], r["reference"], str(r["seeds"]),
                                        f"{r['tokens_ratio']:.3f}", cell(r["nll"]), cell(r["general_nll"]),
                                        cell(r["math_nll"]), cell(r["code_nll"]), cell(r["kl"])]) + " |")
    # the machines differ from session to session; `--eval-dtype auto` and RecoveryConfig follow their bf16 support
    off_bf16 = {
        "evaluated (and PASER-scored) in float32 rather than bfloat16":
            [key for key, e in runs.items() if e.get("eval_dtype") == "float32"],
        "trained in float32 rather than under bf16 autocast":
            [key for key, e in runs.items() if e.get("train_bf16") is False],
    }
    for what, keys in off_bf16.items():
        if keys:
            lines += ["", f"Runs {what}: {', '.join(keys)}."]
    return "\n".join(lines) + "\n"


def plot(levels: list, path: Path) -> None:
    """Damage recovered against training tokens per capability, and per training minute, with 95% intervals.
    Per minute, a hollow marker is a method with runs trained in float32 (a CPU without native bf16: ~2x slower)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    thousands = FuncFormatter(lambda x, _: f"{x / 1000:g}k")

    prunings = sorted({r["pruning"] for r in levels})
    if not prunings:
        return
    panels = [*(f"{cap}_nll" for cap in CAPABILITIES), "nll", "kl"]
    fig, axes = plt.subplots(len(prunings), len(panels) + 1, figsize=(3.9 * (len(panels) + 1), 3.6 * len(prunings)),
                             squeeze=False)
    methods = sorted({r["method"] for r in levels})
    colors = dict(zip(methods, plt.get_cmap("tab20").colors))
    for i, pruning in enumerate(prunings):
        for r in (r for r in levels if r["pruning"] == pruning):
            style = {"color": colors[r["method"]], "fmt": "s" if r["unit"] == "rows" else "o", "capsize": 3,
                     "label": r["method"]}
            for j, panel in enumerate(panels):
                point, lo, hi = r[panel]
                axes[i][j].errorbar(r["train_tokens"], point, yerr=[[point - lo], [hi - point]], **style)
            point, lo, hi = (v * 60 / r["train_seconds"] for v in r["nll"])
            hollow = {"markerfacecolor": "none"} if r.get("float32_train_runs") else {}
            axes[i][-1].errorbar(r["train_seconds"], point, yerr=[[point - lo], [hi - point]], **style, **hollow)
        for j, panel in enumerate(panels):
            name = {"nll": "NLL, mean of capabilities", "kl": "KL to original, mean"}.get(panel, panel.replace(
                "_nll", " NLL"))
            axes[i][j].set_title(f"{pruning}: {name}", fontsize=10)
            axes[i][j].set_xlabel("training tokens per epoch")
            axes[i][j].xaxis.set_major_formatter(thousands)
            axes[i][j].set_ylabel("damage recovered (%)")
        axes[i][-1].set_title(f"{pruning}: NLL recovered per training minute", fontsize=10)
        axes[i][-1].set_xlabel("train seconds (hollow: some runs in float32)")
        axes[i][-1].set_ylabel("% per minute")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1 if len(prunings) == 1 else 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.summarize:
        results = json.loads((args.out / "results.json").read_text())
    else:
        results = run(args)
    split = "report" if "report" in results["capabilities"] else "dev"
    levels, differences = method_intervals(results, split, args.bootstrap)
    (args.out / "intervals.json").write_text(json.dumps({"split": split, "methods": levels,
                                                         "against_random": differences,
                                                         "power": power(results, split, args.bootstrap)},
                                                        indent=1) + "\n")
    text = table(results, split, differences, capability_shares(results))
    (args.out / "table.md").write_text(text)
    plot(levels, args.out / "recovery.png")
    print(text)


if __name__ == "__main__":
    main()
