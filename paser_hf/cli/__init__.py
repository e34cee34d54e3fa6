"""The `paser` command line: select, recover, prune, evaluate and demo.

Each sub-command's options are the fields of the dataclasses the Python API uses (`PaserConfig`, `RecoveryConfig`,
trl's `ModelConfig`, and the small argument classes below), parsed by `trl.TrlParser`, so ``--config file.yaml``
sets any of them (the command line wins). Mistakes in the input end in one line on stderr,
``paser: error: ...``, and exit status 2; set ``PASER_HF_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from trl import TrlParser

from .. import __version__

DTYPES = ["float32", "bfloat16", "float16"]
_DATA_FILES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_SAVED_DATASET = ("state.json", "dataset_dict.json")


@dataclass
class SelectArguments:
    """What `paser select` reads and writes; the selection itself is configured by `PaserConfig`."""

    dataset: str = field(
        metadata={"help": "Instruction data: a .json/.jsonl/.parquet/.csv file, a folder written by save_to_disk, a "
                          "folder of data files, or a Hub dataset id."}
    )
    pruned_model: str = field(metadata={"help": "Folder (or Hub id) of the pruned model."})
    output: str = field(
        metadata={"help": "Where the subset goes: a path ending in .jsonl is written as JSON lines with the report "
                          "beside it (<name>.report.json); any other path is a folder written with save_to_disk, "
                          "with the per-row scores, dataset card, config and report inside."}
    )
    original_model: Optional[str] = field(
        default=None,
        metadata={"help": "Folder (or Hub id) of the unpruned model. None uses the built-in offline "
                          "SmolLM2-135M-Instruct."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to read from a Hub dataset or DatasetDict."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    max_rows: Optional[int] = field(default=None, metadata={"help": "Select from only the first N rows."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Dtype both models are loaded in; auto is bfloat16 where the device has native bfloat16 "
                          "(CUDA compute capability >= 8.0, CPUs with AVX512-BF16 or AMX) and float32 elsewhere.",
                  "choices": ["auto", *DTYPES]},
    )
    report_dir: Optional[str] = field(
        default=None, metadata={"help": "Also write the report here: report.json, report.md and the figures."}
    )
    push_to_hub: Optional[str] = field(
        default=None, metadata={"help": "Hub dataset repository to push the subset, card and report to."}
    )
    private: bool = field(default=False, metadata={"help": "Make the pushed Hub repository private."})


@dataclass
class RecoverArguments:
    """The data of `paser recover`; the model is `--model_name_or_path` (the pruned model) and training is
    configured by `RecoveryConfig` (trl's SFTConfig plus distillation) and LoRA by trl's `ModelConfig`."""

    dataset: str = field(
        metadata={"help": "Training rows (e.g. the output of `paser select`): a data file, a saved dataset folder or "
                          "a Hub id; Alpaca, prompt/completion or messages columns."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to read from a Hub dataset or DatasetDict."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    merge_adapters: bool = field(
        default=True,
        metadata={"help": "Merge the LoRA adapters into the weights and save a plain model, keeping the pruned "
                          "zeros; with --merge_adapters false only the adapter is saved."},
    )


@dataclass
class PruneArguments:
    """Settings of `paser prune` (see `paser_hf.pruning.prune_model`)."""

    output_dir: str = field(metadata={"help": "Folder to save the pruned model and its tokenizer in."})
    model: Optional[str] = field(
        default=None, metadata={"help": "Model to prune. None uses the built-in offline SmolLM2-135M-Instruct."}
    )
    method: str = field(
        default="wanda",
        metadata={"help": "magnitude, wanda (|W| x input norm), structured_mlp (removes MLP channels) or layer_drop "
                          "(removes decoder layers).",
                  "choices": ["magnitude", "wanda", "structured_mlp", "layer_drop"]},
    )
    sparsity: Optional[float] = field(
        default=None,
        metadata={"help": "Fraction of weights, MLP channels or layers to remove; None means 0.5 (or 1 - N/M with "
                          "--n_m)."},
    )
    n_m: Optional[str] = field(default=None, metadata={"help": "N:M semi-structured sparsity, e.g. 2:4."})
    per_row: bool = field(default=False, metadata={"help": "magnitude only: compare weights within each output row."})
    calibration_dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Calibration texts for wanda, layer_drop and structured_mlp: a data file, saved dataset or "
                          "Hub id (a 'text' column, or instruction data). None uses the shipped demo set."},
    )
    calibration_split: str = field(default="train", metadata={"help": "Split of the calibration dataset."})
    calibration_samples: int = field(default=64, metadata={"help": "Calibration rows to use (a seeded sample)."})
    calibration_max_length: int = field(default=256, metadata={"help": "Tokens kept of each calibration text."})
    dtype: str = field(default="float32", metadata={"help": "Dtype the model is loaded and saved in.",
                                                    "choices": DTYPES})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration sample."})


@dataclass
class EvaluateArguments:
    """Settings of `paser evaluate`: one table row per model."""

    model: list[str] = field(
        default_factory=list,
        metadata={"help": "One or more model folders (or Hub ids), e.g. --model original pruned recovered. None "
                          "evaluates the built-in offline SmolLM2-135M-Instruct."},
    )
    text_file: Optional[str] = field(
        default=None,
        metadata={"help": "Perplexity text: plain text (e.g. WikiText-2 wiki.test.raw) or JSONL rows with 'text' "
                          "(joined with blank lines). None uses the shipped demo text unless --mc_file is given."},
    )
    mc_file: Optional[str] = field(
        default=None,
        metadata={"help": "Multiple-choice JSONL rows {query, choices, gold}. None uses the shipped demo questions "
                          "unless --text_file is given."},
    )
    max_length: int = field(default=1024, metadata={"help": "Perplexity window in tokens."})
    stride: Optional[int] = field(default=None, metadata={"help": "Perplexity window stride (None: max_length)."})
    max_words: Optional[int] = field(default=None, metadata={"help": "Score only the first N words of the text."})
    mc_limit: Optional[int] = field(default=None, metadata={"help": "Score a seeded sample of N questions."})
    batch_size: int = field(default=8, metadata={"help": "Multiple-choice batch size."})
    dtype: str = field(default="float32", metadata={"help": "Dtype the models are loaded in.", "choices": DTYPES})
    output_json: Optional[str] = field(default=None, metadata={"help": "Also write the results to this JSON file."})
    seed: int = field(default=0, metadata={"help": "Seed of the --mc_limit sample."})


class _OneLineErrors(argparse.ArgumentParser):
    """Parse errors are one line on stderr, `paser: error: ...`, and exit status 2."""

    def error(self, message):
        self.exit(2, f"paser: error: {message} (see `{self.prog} --help`)\n")


class _Parser(_OneLineErrors, TrlParser):
    """The parser of one sub-command: its dataclasses' fields, and `--config FILE.yaml` listed in the help."""

    def __init__(self, dataclass_types=(), **kwargs):
        super().__init__(dataclass_types=dataclass_types, **kwargs)
        self.add_argument("--config", metavar="FILE.yaml", help="Read these options from a YAML file; options "
                          "given on the command line override it. An `env:` mapping sets environment variables.")

    def parse(self, argv):
        """The dataclass instances, `--config` applied."""
        return self.parse_args_and_config(argv)[: len(self.dataclass_types)]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in _DATA_FILES


def load_data(spec: str, split: str = "train", config: Optional[str] = None):
    """A `Dataset` from a data file, a save_to_disk folder, a folder of data files or a Hub id."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(spec).expanduser()
    if path.is_file():
        builder = _DATA_FILES.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{spec}: unsupported file type {path.suffix!r}; use .json, .jsonl, .parquet or .csv")
        return load_dataset(builder, data_files=str(path), split="train")
    if path.is_dir():
        if any((path / name).is_file() for name in _SAVED_DATASET):
            data = load_from_disk(str(path))
            if isinstance(data, DatasetDict):
                if split not in data:
                    raise ValueError(f"{spec} has the splits {list(data)}, not {split!r}; pick one with --dataset_split")
                data = data[split]
            return data
        return load_dataset(str(path), config, split=split)
    if _looks_like_path(spec):
        raise FileNotFoundError(f"{spec}: no such file or folder")
    try:
        return load_dataset(spec, config, split=split)
    except Exception as exc:  # offline, unknown repo, bad split: all user-facing
        raise ValueError(f"could not load the dataset {spec!r} from the Hub ({type(exc).__name__}: {exc})") from exc


def _load_model(spec: Optional[str], dtype: str, what: str):
    from ..models import DEFAULT_MODEL_NAME, fastest_dtype, load_model_and_tokenizer

    if spec is None:
        print(f"{what}: {DEFAULT_MODEL_NAME} (built-in offline default)", file=sys.stderr)
    elif _looks_like_path(spec) and not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"{what} {spec}: no such folder")
    else:
        print(f"{what}: {spec}", file=sys.stderr)
    device = _device()
    if dtype == "auto":
        dtype = fastest_dtype(device)
        print(f"{what}: dtype auto -> {dtype} on {device}", file=sys.stderr)
    model, tokenizer = load_model_and_tokenizer(spec, dtype=dtype)
    return model.to(device), tokenizer


def _take(data, n: Optional[int]):
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise ValueError(f"max_rows={n}; it must be >= 1")
    return data.select(range(n))


# ------------------------------------------------------------------ select
def run_select(args: SelectArguments, config) -> None:
    from ..reporting import card as hub
    from ..selection.selector import PaserDatasetSelector

    data = _take(load_data(args.dataset, args.dataset_split, args.dataset_config), args.max_rows)
    config.budget_rows(len(data))
    original, tokenizer = _load_model(args.original_model, args.dtype, "original model")
    pruned, _ = _load_model(args.pruned_model, args.dtype, "pruned model")
    selector = PaserDatasetSelector(original, pruned, tokenizer, config=config)
    t0 = time.perf_counter()
    subset = selector(data)
    seconds = time.perf_counter() - t0
    report = selector.report_

    output = Path(args.output)
    if output.suffix in (".jsonl", ".json"):
        output.parent.mkdir(parents=True, exist_ok=True)
        subset.to_json(str(output), lines=True, force_ascii=False)
        report_path = output.with_name(output.stem + ".report.json")
        report_path.write_text(report.to_json() + "\n", encoding="utf-8")
    else:
        hub.save_selection(subset, output, report=report, scores=selector.scores_, source_dataset=args.dataset)
        report_path = output / hub.REPORT_DIR / "report.json"
    if args.report_dir:
        report.save(args.report_dir)
    if args.push_to_hub:
        hub.push_selection_to_hub(subset, args.push_to_hub, report=report, scores=selector.scores_,
                                  private=args.private, source_dataset=args.dataset)

    print(f"{len(data)} rows -> {len(subset)} selected (budget {report.budget}), K = {report.k}, {seconds:.1f} s")
    print(report.cluster_table())
    print(f"subset: {output}\nreport: {report_path}")
    if args.report_dir:
        print(f"report figures: {args.report_dir}")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")


# ------------------------------------------------------------------ recover
def run_recover(args: RecoverArguments, training, model_args) -> None:
    from peft import PeftModel
    from trl import get_peft_config

    from ..recovery.merge import merge_adapters_keep_sparsity
    from ..recovery.trainer import RecoveryTrainer

    if not model_args.model_name_or_path:
        raise ValueError("give the pruned model to recover with --model_name_or_path")
    data = load_data(args.dataset, args.dataset_split, args.dataset_config)
    model, tokenizer = _load_model(model_args.model_name_or_path, model_args.dtype or "float32", "pruned model")
    peft_config = get_peft_config(model_args)
    trainer = RecoveryTrainer(model=model, args=training, train_dataset=data, processing_class=tokenizer,
                              peft_config=peft_config)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    final = trainer.model
    if isinstance(final, PeftModel) and args.merge_adapters:
        final = merge_adapters_keep_sparsity(final)
    final.save_pretrained(training.output_dir)
    tokenizer.save_pretrained(training.output_dir)
    kind = "adapter" if isinstance(final, PeftModel) else "model"
    print(f"trained {result.global_step} steps on {len(data)} rows in {seconds:.1f} s, "
          f"mean loss {result.training_loss:.4f}; {kind} saved to {training.output_dir}")


# ------------------------------------------------------------------ prune
def _calibration_texts(args: PruneArguments) -> list:
    from ..demo import DEMO_TRAIN
    from ..formatting import detect_format, instruction_text, response_text

    data = load_data(args.calibration_dataset or str(DEMO_TRAIN), args.calibration_split)
    if args.calibration_samples < 1:
        raise ValueError(f"calibration_samples={args.calibration_samples}; it must be >= 1")
    data = data.shuffle(seed=args.seed).select(range(min(args.calibration_samples, len(data))))
    if "text" in data.column_names:
        return [t for t in data["text"] if t and t.strip()]
    fmt = detect_format(data.column_names)
    return [f"{instruction_text(row, fmt)}\n{response_text(row, fmt)}" for row in data]


def _n_m(spec: Optional[str]):
    if spec is None:
        return None
    try:
        n, m = (int(v) for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"n_m={spec!r}; write it as N:M, e.g. 2:4") from None
    return n, m


def run_prune(args: PruneArguments) -> None:
    from ..pruning import prune_model

    n_m = _n_m(args.n_m)
    sparsity = args.sparsity if args.sparsity is not None or n_m else 0.5
    model, tokenizer = _load_model(args.model, args.dtype, "model")
    texts = _calibration_texts(args) if args.method != "magnitude" else None
    t0 = time.perf_counter()
    report = prune_model(model, method=args.method, sparsity=sparsity, n_m=n_m, calibration_texts=texts,
                         tokenizer=tokenizer, per_row=args.per_row, calibration_max_length=args.calibration_max_length)
    seconds = time.perf_counter() - t0
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    Path(args.output_dir, "pruning_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"{args.method}: sparsity {report.sparsity:.4f} of the decoder Linear weights (target "
          f"{report.target_sparsity:g}), {seconds:.1f} s")
    print(f"parameters: {report.num_parameters_before:,} -> {report.num_parameters_after:,} stored, "
          f"{report.nonzero_parameters_after:,} non-zero")
    print(f"saved to {args.output_dir}")


# ------------------------------------------------------------------ evaluate
def run_evaluate(args: EvaluateArguments) -> None:
    import random

    from ..demo import DEMO_MC, DEMO_TEXT, evaluate_model, format_table, nonzero_parameters, read_eval_text
    from ..evaluation import load_mc_jsonl

    text_file, mc_file = args.text_file, args.mc_file
    if text_file is None and mc_file is None:
        text_file, mc_file = str(DEMO_TEXT), str(DEMO_MC)
        print("eval data: the shipped demo text and questions", file=sys.stderr)
    text = read_eval_text(text_file, args.max_words) if text_file else None
    if mc_file and not Path(mc_file).is_file():
        raise FileNotFoundError(f"{mc_file}: no such file")
    mc_rows = load_mc_jsonl(mc_file) if mc_file else None
    if mc_rows and args.mc_limit is not None and args.mc_limit < len(mc_rows):
        mc_rows = random.Random(args.seed).sample(mc_rows, args.mc_limit)
    rows = []
    for spec in args.model or [None]:
        model, tokenizer = _load_model(spec, args.dtype, "model")
        row = {"model": spec or "SmolLM2-135M-Instruct", "nonzero_params": nonzero_parameters(model)}
        row.update(evaluate_model(model, tokenizer, text, mc_rows, max_length=args.max_length, stride=args.stride,
                                  batch_size=args.batch_size))
        rows.append(row)
        del model
    print(format_table(rows, ["model", "nonzero_params", "perplexity", "mc_accuracy", "mc_acc_norm", "mc_n"]))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ demo
def run_demo_command(config) -> None:
    from ..demo import run_demo

    result = run_demo(config)
    print(result.table())
    print(f"results: {result.output_dir}/demo_results.json")


# ------------------------------------------------------------------ wiring
def _recovery_defaults() -> dict:
    """Defaults of `paser recover` that differ from SFTConfig's: CPU-safe precision, the paper's LoRA rank."""
    import torch

    defaults = {"output_dir": "paser-recovered", "use_peft": True, "lora_r": 8, "lora_alpha": 16}
    if not torch.cuda.is_available():
        defaults.update(bf16=False, use_cpu=True)
    return defaults


def _commands() -> dict:
    """name -> (dataclasses, runner, function giving the parser defaults that differ from the dataclasses')."""
    from trl import ModelConfig

    from ..demo import DemoConfig
    from ..recovery.config import RecoveryConfig
    from ..selection.config import PaserConfig

    return {
        "select": ([SelectArguments, PaserConfig], run_select, dict),
        "recover": ([RecoverArguments, RecoveryConfig, ModelConfig], run_recover, _recovery_defaults),
        "prune": ([PruneArguments], run_prune, dict),
        "evaluate": ([EvaluateArguments], run_evaluate, dict),
        "demo": ([DemoConfig], run_demo_command, dict),
    }


_COMMAND_HELP = {
    "select": "select a recovery subset of an instruction dataset with PASER",
    "recover": "recovery training (LoRA SFT and/or distillation) of a pruned model on a subset",
    "prune": "prune a model and save it",
    "evaluate": "perplexity and multiple-choice accuracy of one or more models, in one table",
    "demo": "prune -> PASER select -> LoRA recover -> evaluate, offline on built-in defaults",
}


def _top_parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<10}{text}" for name, text in _COMMAND_HELP.items())
    parser = _OneLineErrors(
        prog="paser",
        description="PASER (arXiv 2502.12594): post-training data selection for pruned-LLM recovery.",
        epilog=f"commands:\n{listing}\n\nRun `paser COMMAND --help` for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(_COMMAND_HELP), metavar="COMMAND", help="one of: "
                        + ", ".join(_COMMAND_HELP))
    parser.add_argument("--version", action="version", version=f"paser-hf {__version__}")
    return parser


def _command_parser(name: str, dataclass_types, defaults: dict) -> _Parser:
    parser = _Parser(dataclass_types, prog=f"paser {name}", description=_COMMAND_HELP[name],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.set_defaults(**defaults)
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False
    return parser


def main(argv=None) -> int:
    """Entry point of the `paser` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        _top_parser().parse_args(argv or ["--help"])
    name = argv[0]
    if name not in _COMMAND_HELP:
        _top_parser().error(f"unknown command {name!r}; choose from {', '.join(_COMMAND_HELP)}")
    try:
        dataclass_types, runner, defaults = _commands()[name]
        parser = _command_parser(name, dataclass_types, defaults())
        runner(*parser.parse(argv[1:]))
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("PASER_HF_TRACEBACK"):
            raise
        print(f"paser: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paser: interrupted", file=sys.stderr)
        return 130
    return 0


