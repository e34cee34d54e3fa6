"""`paser evaluate`: perplexity and zero-shot multiple-choice accuracy of one or more models, one table row each,
and with ``--lm_eval_tasks`` the scores of lm-evaluation-harness tasks in the same rows."""

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
    lm_eval_tasks: Optional[str] = field(
        default=None,
        metadata={"help": "Comma-separated lm-evaluation-harness tasks, e.g. arc_easy,hellaswag, scored on each model "
                          "beside perplexity and accuracy (needs paser-hf[lm-eval]; its Hub tasks need the network "
                          "or a filled datasets cache)."},
    )
    lm_eval_include_path: Optional[str] = field(
        default=None,
        metadata={"help": "Folder of your own lm-eval task YAMLs (offline: dataset_path: json with a local "
                          "dataset_kwargs.data_files)."},
    )
    lm_eval_limit: Optional[int] = field(default=None, metadata={"help": "Score the first N documents per lm-eval "
                                                                         "task."})
    lm_eval_num_fewshot: Optional[int] = field(default=None, metadata={"help": "Few-shot examples per lm-eval "
                                                                               "question (None: each task's own)."})


def run_evaluate(args: EvaluateArguments) -> None:
    from ..evaluation import evaluate_model, format_table, load_mc_jsonl, nonzero_parameters, read_eval_text
    from ..lm_eval_tasks import lm_eval_scores, load_tasks
    from ..models import DEMO_MC, DEMO_TEXT

    names = [name.strip() for name in (args.lm_eval_tasks or "").split(",") if name.strip()]
    tasks = load_tasks(names, args.lm_eval_include_path) if args.lm_eval_tasks is not None else []
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
        if tasks:
            row.update(lm_eval_scores(model, tokenizer, tasks, batch_size=args.batch_size, limit=args.lm_eval_limit,
                                      num_fewshot=args.lm_eval_num_fewshot))
        rows.append(row)
        del model
    lm_eval_columns = [key for key in rows[0] if "/" in key]
    print(format_table(rows, TABLE_COLUMNS + lm_eval_columns))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


COMMAND = Command("evaluate", "perplexity and multiple-choice accuracy of one or more models, in one table",
                  (EvaluateArguments,), run_evaluate)
