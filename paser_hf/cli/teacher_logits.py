"""`paser teacher-logits`: the teacher's top-k next-token distributions of every response token of a dataset, stored
as columns for offline distillation (`paser_hf.selection.teacher.capture_teacher_topk`)::

    paser teacher-logits --dataset rows.jsonl --output rows-topk --k 64
    accelerate launch --num_processes 2 -m paser_hf.cli.teacher_logits --dataset rows.jsonl --output rows-topk

Rows are formatted, tokenised and truncated as `paser recover` trains on them (give it the same --max_length).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .common import DTYPES, Command, load_model, run_command


@dataclass
class TeacherLogitsArguments:
    """What `paser teacher-logits` reads, keeps and writes."""

    dataset: str = field(
        metadata={"help": "Instruction data: a .json/.jsonl/.parquet/.csv file, a folder written by save_to_disk, a "
                          "folder of data files, or a Hub id."}
    )
    output: str = field(
        metadata={"help": "Folder the dataset with the teacher columns is written to (save_to_disk; load it with "
                          "datasets.load_from_disk or pass it to `paser recover --dataset`)."}
    )
    model: Optional[str] = field(
        default=None,
        metadata={"help": "Folder (or Hub id) of the teacher (the unpruned model). None uses the built-in offline "
                          "SmolLM2-135M-Instruct."},
    )
    k: int = field(default=64, metadata={"help": "Teacher ids kept per token (their log-probabilities at temperature "
                                                 "1, plus the log of the remaining mass)."})
    max_length: int = field(default=1024, metadata={"help": "Maximum tokens of a formatted row, as in training."})
    dataset_format: Optional[str] = field(
        default=None, metadata={"help": "alpaca, prompt_completion or conversational; None detects it."}
    )
    use_chat_template: Optional[bool] = field(
        default=None, metadata={"help": "Format rows with the tokenizer's chat template; None: when it has one."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to read from a Hub dataset or DatasetDict."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    max_rows: Optional[int] = field(default=None, metadata={"help": "Capture only the first N rows."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Dtype the teacher is loaded in; auto: bfloat16 where the device has native bfloat16, else "
                          "float32.", "choices": ["auto", *DTYPES]},
    )
    scoring_tokens_per_batch: Optional[int] = field(
        default=None, metadata={"help": "Padded tokens per batch (None: 4096 on CPU, 65536 on an accelerator)."}
    )
    scoring_shard_rows: int = field(default=2048, metadata={"help": "Rows per cached shard (resume granularity)."})
    cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder of the cached shards; a killed run resumes from it."}
    )


def run_teacher_logits(args: TeacherLogitsArguments) -> None:
    from accelerate import PartialState

    from ..models import load_data
    from ..selection.config import PaserConfig
    from ..selection.teacher import capture_teacher_topk

    config = PaserConfig(max_length=args.max_length, dataset_format=args.dataset_format,
                         use_chat_template=args.use_chat_template, scoring_tokens_per_batch=args.scoring_tokens_per_batch,
                         scoring_shard_rows=args.scoring_shard_rows, cache_dir=args.cache_dir)
    data = load_data(args.dataset, args.dataset_split, args.dataset_config, max_rows=args.max_rows)
    model, tokenizer = load_model(args.model, args.dtype, "teacher")
    t0 = time.perf_counter()
    captured = capture_teacher_topk(data, model, tokenizer, k=args.k, config=config)
    seconds = time.perf_counter() - t0
    if PartialState().is_main_process:
        captured.save_to_disk(str(Path(args.output)))
        tokens = sum(captured["teacher_topk_count"])
        print(f"teacher top-{args.k}: {len(captured)} rows, {tokens:,} tokens in {seconds:.1f} s; saved to "
              f"{args.output}")


COMMAND = Command("teacher-logits", "store the teacher's top-k distributions of a dataset for offline distillation",
                  (TeacherLogitsArguments,), run_teacher_logits)


def main(argv=None) -> int:
    """`python -m paser_hf.cli.teacher_logits` (e.g. under `accelerate launch`): the same as `paser teacher-logits`."""
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
