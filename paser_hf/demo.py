"""The offline demo (`paser demo`): prune the built-in model, select a recovery subset of the shipped instruction
set with PASER, recover with LoRA, and compare original / pruned / recovered on the shipped eval sets.

`run_demo(DemoConfig(...))` is the whole pipeline, a Python API like `prune_model` or `PaserDatasetSelector`;
`paser_hf.cli.demo` only prints its table.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .evaluation import format_table
from .pruning import METHODS

TABLE_COLUMNS = ["model", "nonzero_params", "perplexity", "mc_accuracy", "mc_acc_norm"]


@dataclass
class DemoConfig:
    """Sizes and settings of `paser demo`; the defaults are sized for a few minutes on 2 CPU cores."""

    output_dir: str = field(default="paser-demo", metadata={"help": "Folder for the subset, report and results."})
    original_model: Optional[str] = field(
        default=None, metadata={"help": "Model to prune. None uses the offline SmolLM2-135M-Instruct."}
    )
    embedding_model: Optional[str] = field(
        default=None, metadata={"help": "SentenceTransformer for PASER's clustering. None uses all-MiniLM-L6-v2."}
    )
    prune_method: str = field(
        default="wanda",
        metadata={"help": "Pruning method.", "choices": list(METHODS)},
    )
    sparsity: float = field(default=0.5, metadata={"help": "Pruning sparsity."})
    calibration_samples: int = field(default=8, metadata={"help": "Demo rows used as pruning calibration texts."})
    budget: float = field(default=0.25, metadata={"help": "PASER budget (fraction of the demo rows or a count)."})
    max_rows: Optional[int] = field(
        default=100, metadata={"help": "Select from a seeded sample of this many demo rows (None: all 365)."}
    )
    max_length: int = field(default=256, metadata={"help": "Token limit for scoring, training and perplexity windows."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of LoRA recovery over the subset."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0, train exactly this many steps (overrides epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Training batch size."})
    learning_rate: float = field(default=1e-3, metadata={"help": "LoRA learning rate."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (the paper uses 8)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    kd_alpha: float = field(
        default=0.0, metadata={"help": "Weight of logit distillation from the original model (0: plain LoRA SFT)."}
    )
    eval_max_words: Optional[int] = field(
        default=300, metadata={"help": "Score the perplexity of only the first N words of the eval text."}
    )
    mc_limit: Optional[int] = field(
        default=30, metadata={"help": "Score a seeded sample of N multiple-choice questions (None: all 100)."}
    )
    save_models: bool = field(default=False, metadata={"help": "Also save the pruned and recovered models."})
    seed: int = field(default=0, metadata={"help": "Seed of every random choice."})
    show_progress: bool = field(default=True, metadata={"help": "Show progress bars."})


@dataclass
class DemoResult:
    """The comparison table's rows, the time of each stage (seconds) and where the files went."""

    rows: list
    timings: dict
    selection: dict
    output_dir: str

    def table(self) -> str:
        """The comparison table and a line with the stage times."""
        t = self.timings
        times = (f"selection {t['selection']:.1f} s, training {t['training']:.1f} s (pruning {t['prune']:.1f} s, "
                 f"evaluation {t['evaluate']:.1f} s, total {t['total']:.1f} s)")
        return format_table(self.rows, TABLE_COLUMNS) + "\n\n" + times

    def to_dict(self) -> dict:
        return asdict(self)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _demo_data(cfg: DemoConfig) -> tuple:
    """(the seeded sample of the shipped instructions, the eval text, the seeded sample of the questions)."""
    from datasets import load_dataset

    from .evaluation import load_mc_jsonl, read_eval_text
    from .models import DEMO_MC, DEMO_TEXT, DEMO_TRAIN

    data = load_dataset("json", data_files=str(DEMO_TRAIN), split="train")
    if cfg.max_rows is not None and cfg.max_rows < len(data):
        data = data.shuffle(seed=cfg.seed).select(range(cfg.max_rows)).flatten_indices()
    text = read_eval_text(DEMO_TEXT, cfg.eval_max_words)
    mc_rows = load_mc_jsonl(DEMO_MC)
    if cfg.mc_limit is not None and cfg.mc_limit < len(mc_rows):
        mc_rows = random.Random(cfg.seed).sample(mc_rows, cfg.mc_limit)
    return data, text, mc_rows


def _recovery_settings(cfg: DemoConfig, output_dir: Path) -> tuple:
    """(`RecoveryConfig`, `LoraConfig`) of the demo's LoRA recovery: constant learning rate, nothing saved."""
    import torch
    from peft import LoraConfig

    from .recovery.config import RecoveryConfig

    args = RecoveryConfig(
        output_dir=str(output_dir), num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, lr_scheduler_type="constant",
        warmup_steps=0, max_length=cfg.max_length, kd_alpha=cfg.kd_alpha, logging_steps=5, save_strategy="no",
        report_to="none", bf16=False, use_cpu=not torch.cuda.is_available(), activation_checkpointing=False,
        dataloader_num_workers=0, seed=cfg.seed, disable_tqdm=not cfg.show_progress,
    )
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    return args, lora


def run_demo(config: Optional[DemoConfig] = None) -> DemoResult:
    """Run the demo pipeline and write `demo_results.json`, `demo_table.md`, the subset and the report."""
    import torch

    from .evaluation import evaluate_model, nonzero_parameters
    from .models import DEFAULT_MODEL_NAME, load_model_and_tokenizer
    from .pruning import prune_model, sample_calibration_texts
    from .recovery.run import recover
    from .selection.config import PaserConfig
    from .selection.selector import PaserDatasetSelector

    cfg = config if config is not None else DemoConfig()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict = {}
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)

    name = cfg.original_model or f"{DEFAULT_MODEL_NAME} (built-in offline default)"
    _say(f"[1/5] loading the original model: {name}")
    t0 = time.perf_counter()
    original, tokenizer = load_model_and_tokenizer(cfg.original_model)
    timings["load"] = time.perf_counter() - t0

    data, text, mc_rows = _demo_data(cfg)

    def evaluate(model) -> dict:
        return evaluate_model(model, tokenizer, text, mc_rows, max_length=cfg.max_length,
                              show_progress=cfg.show_progress)

    _say(f"[2/5] pruning a copy: {cfg.prune_method}, sparsity {cfg.sparsity}")
    t0 = time.perf_counter()
    pruned = copy.deepcopy(original)
    calibration = sample_calibration_texts(data, cfg.calibration_samples, seed=cfg.seed)
    pruning = prune_model(pruned, method=cfg.prune_method, sparsity=cfg.sparsity, calibration_texts=calibration,
                          tokenizer=tokenizer, calibration_max_length=cfg.max_length)
    timings["prune"] = time.perf_counter() - t0
    _say(f"      achieved sparsity {pruning.sparsity:.3f} of the decoder Linear weights")
    if cfg.save_models:
        pruned.save_pretrained(str(out / "pruned"))
        tokenizer.save_pretrained(str(out / "pruned"))

    _say("      evaluating the original and the pruned model")
    t0 = time.perf_counter()
    rows = [{"model": "original", "nonzero_params": nonzero_parameters(original), **evaluate(original)},
            {"model": "pruned", "nonzero_params": nonzero_parameters(pruned), **evaluate(pruned)}]
    timings["evaluate"] = time.perf_counter() - t0

    _say(f"[3/5] PASER selection from {len(data)} demo rows, budget {cfg.budget}")
    t0 = time.perf_counter()
    paser_config = PaserConfig(budget=cfg.budget, max_length=cfg.max_length, embedding_model=cfg.embedding_model,
                               seed=cfg.seed, show_progress=cfg.show_progress)
    selector = PaserDatasetSelector(original, pruned, tokenizer, config=paser_config)
    subset = selector(data)
    timings["selection"] = time.perf_counter() - t0
    report = selector.report_
    subset.to_json(str(out / "subset.jsonl"), lines=True, force_ascii=False)
    (out / "report.json").write_text(report.to_json() + "\n", encoding="utf-8")
    mix = {cap: subset["capability"].count(cap) for cap in sorted(set(data["capability"]))}
    _say(f"      selected {len(subset)} rows in {report.k} clusters; capabilities {mix}")

    _say(f"[4/5] LoRA recovery on the {len(subset)} selected rows")
    t0 = time.perf_counter()
    args, lora = _recovery_settings(cfg, out / "trainer")
    recovery = recover(pruned, args, subset.remove_columns(["capability"]), tokenizer, peft_config=lora,
                       teacher_model=original if cfg.kd_alpha > 0 else None, save=False)
    recovered, train = recovery.model, recovery.train_output
    timings["training"] = time.perf_counter() - t0

    _say("[5/5] evaluating the recovered model")
    t0 = time.perf_counter()
    rows.append({"model": "recovered", "nonzero_params": nonzero_parameters(recovered), **evaluate(recovered)})
    timings["evaluate"] += time.perf_counter() - t0
    if cfg.save_models:
        recovered.save_pretrained(str(out / "recovered"))
        tokenizer.save_pretrained(str(out / "recovered"))
    timings["total"] = time.perf_counter() - start

    result = DemoResult(
        rows=rows,
        timings={k: round(v, 1) for k, v in timings.items()},
        selection={"rows": len(data), "selected": len(subset), "k": report.k, "capabilities": mix,
                   "train_steps": train.global_step, "train_loss": train.training_loss,
                   "pruning": pruning.to_dict(), "config": asdict(cfg)},
        output_dir=str(out),
    )
    (out / "demo_results.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    (out / "demo_table.md").write_text(result.table() + "\n", encoding="utf-8")
    return result
