"""`paser evaluate`: perplexity and zero-shot multiple-choice accuracy of one or more models, one table row each."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .common import DTYPES, Command, load_model

TABLE_COLUMNS = ["model", "nonzero_params", "perplexity", "mc_accuracy", "mc_acc_norm", "mc_n"]


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


def run_evaluate(args: EvaluateArguments) -> None:
    from ..evaluation import evaluate_model, format_table, load_mc_jsonl, nonzero_parameters, read_eval_text
    from ..models import DEMO_MC, DEMO_TEXT

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
        model, tokenizer = load_model(spec, args.dtype, "model")
        row = {"model": spec or "SmolLM2-135M-Instruct", "nonzero_params": nonzero_parameters(model)}
        row.update(evaluate_model(model, tokenizer, text, mc_rows, max_length=args.max_length, stride=args.stride,
                                  batch_size=args.batch_size))
        rows.append(row)
        del model
    print(format_table(rows, TABLE_COLUMNS))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


COMMAND = Command("evaluate", "perplexity and multiple-choice accuracy of one or more models, in one table",
                  (EvaluateArguments,), run_evaluate)
