"""`paser select`: a recovery subset of an instruction dataset, by PASER (`PaserDatasetSelector`) or one of the
baselines, written as JSON lines or a `save_to_disk` folder with its report; a PASER subset can be pushed to the
Hub with its dataset card."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..selection.config import PaserConfig
from .common import DTYPES, Command, load_model

METHODS = ("paser", "random", "ifd", "longest", "cluster_balanced")


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
    method: str = field(
        default="paser",
        metadata={"help": "paser (PASER, arXiv 2502.12594); random; ifd (instruction-following difficulty, Li et al. "
                          "2024, scored by the pruned model); longest (longest responses first, Zhao et al. 2024); "
                          "cluster_balanced (random rows, an equal share from each of PASER's clusters). All take "
                          "--budget in --budget_unit.",
                  "choices": list(METHODS)},
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


def make_selector(args: SelectArguments, config: PaserConfig):
    """The selector `args.method` names, with the models it needs loaded (tokenizer only for the model-free ones)."""
    from ..selection import baselines
    from ..selection.selector import PaserDatasetSelector

    if args.method not in METHODS:
        raise ValueError(f"--method {args.method!r}; use one of {', '.join(METHODS)}.")
    if args.method == "paser":
        original, tokenizer = load_model(args.original_model, args.dtype, "original model")
        pruned, _ = load_model(args.pruned_model, args.dtype, "pruned model")
        return PaserDatasetSelector(original, pruned, tokenizer, config=config)
    if args.method == "ifd":
        pruned, tokenizer = load_model(args.pruned_model, args.dtype, "pruned model (IFD scoring)")
        return baselines.IfdSelector(pruned, tokenizer, config)
    from ..models import load_tokenizer

    tokenizer = load_tokenizer(args.pruned_model)
    if args.method == "random":
        return baselines.RandomSelector(config, tokenizer=tokenizer)
    if args.method == "longest":
        return baselines.LongestSelector(tokenizer, config)
    return baselines.ClusterBalancedSelector(tokenizer, config)


def run_select(args: SelectArguments, config: PaserConfig) -> None:
    from ..models import load_data
    from ..reporting import card as hub

    if args.push_to_hub and args.method != "paser":
        raise ValueError(f"--push_to_hub publishes PASER selections with their dataset card; --method {args.method} "
                         "subsets are written locally: push the folder with `Dataset.push_to_hub` if you need to.")
    data = load_data(args.dataset, args.dataset_split, args.dataset_config, max_rows=args.max_rows)
    if config.budget_unit == "rows":
        config.budget_rows(len(data))
    selector = make_selector(args, config)
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
    elif args.method == "paser":
        hub.save_selection(subset, output, report=report, scores=selector.scores_, source_dataset=args.dataset)
        report_path = output / hub.REPORT_DIR / "report.json"
    else:
        subset.save_to_disk(str(output))
        selector.scores_.save_to_disk(str(output / hub.SCORES_CONFIG))
        report_path = report.save(output / hub.REPORT_DIR)
    if args.report_dir:
        report.save(args.report_dir)
    if args.push_to_hub:
        hub.push_selection_to_hub(subset, args.push_to_hub, report=report, scores=selector.scores_,
                                  private=args.private, source_dataset=args.dataset)

    tokens = f", {report.tokens['selected']:,} tokens" if report.tokens else ""
    print(f"{args.method}: {len(data)} rows -> {len(subset)} selected{tokens} (budget {report.budget} "
          f"{report.budget_unit}), {seconds:.1f} s")
    if args.method == "paser":
        print(f"K = {report.k}, allocation {report.allocation}")
        print(report.cluster_table())
    print(f"subset: {output}\nreport: {report_path}")
    if args.report_dir:
        print(f"report figures: {args.report_dir}")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")


COMMAND = Command("select", "select a recovery subset of an instruction dataset with PASER (or a baseline)",
                  (SelectArguments, PaserConfig), run_select)
