"""Column and status names shared by the selection stages, and the checks on an input dataset (a stream is first
written to disk: `materialize`). `datasets` is imported by the functions that need it, so the scoring code that
uses these names runs where only torch is installed (benchmarks/gpu_path.py)."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

# Columns of the prepared dataset (one row per input row) and of the cached stage outputs.
INDEX = "paser_index"
TEXT = "paser_text"
CONCEPT_TEXT = "paser_concept_text"
INPUT_IDS = "input_ids"
RESPONSE_START = "response_start"
LENGTH = "paser_length"
RESPONSE_TOKENS = "paser_response_tokens"
TRUNCATED = "paser_truncated"
EMPTY = "paser_empty"
EMBEDDING = "paser_embedding"
SCORED_TOKENS = "paser_scored_tokens"

# Columns of `selector.scores_`; the first three are added to the subset by `keep_scores`.
CLUSTER = "paser_cluster"
JSD = "paser_jsd"
IES = "paser_ies"
CONCEPTS = "paser_concepts"
STATUS = "paser_status"
SCORE_COLUMNS = (CLUSTER, JSD, IES)
RESERVED_COLUMNS = (INDEX, *SCORE_COLUMNS)

# Columns of the teacher's stored top-k distributions (`PaserConfig.teacher_topk`, `capture_teacher_topk`), one
# row per dataset row: P = TEACHER_COUNT scored positions predicting tokens TEACHER_START .. TEACHER_START + P - 1 of
# the tokenised row (whose `sequence_hash` is TEACHER_HASH); ids and log-probabilities are flat, P x k row-major.
TEACHER_IDS = "teacher_topk_ids"
TEACHER_LOGPROBS = "teacher_topk_logprobs"
TEACHER_TAIL = "teacher_tail_logmass"
TEACHER_START = "teacher_topk_start"
TEACHER_COUNT = "teacher_topk_count"
TEACHER_HASH = "teacher_topk_input_hash"
TEACHER_COLUMNS = (TEACHER_IDS, TEACHER_LOGPROBS, TEACHER_TAIL, TEACHER_START, TEACHER_COUNT, TEACHER_HASH)

# Columns of `IfdSelector.scores_` (and of its cached loss shards).
LOSS_CONDITIONED = "loss_conditioned"
LOSS_RESPONSE = "loss_response"

# Row statuses.
SELECTED = "selected"
REJECTED = "rejected_inconsistent"
NOT_REACHED = "not_reached"
NOT_SELECTED = "not_selected"
SKIPPED_EMPTY = "skipped_empty_response"
SKIPPED_TRUNCATED = "skipped_truncated_response"
SKIPPED_SHORT = "skipped_short_response"


STREAMED_NOTE = ("The input was an IterableDataset: its rows were written to a disk-backed Dataset first, since the "
                 "selection needs every row.")


def materialize(dataset, cache_dir: Optional[str] = None, show_progress: bool = True):
    """Every row of an `IterableDataset` (e.g. ``load_dataset(..., streaming=True)``) written to a disk-backed
    `Dataset` under `cache_dir` (None: the datasets cache), with a progress bar; any other input is returned as it
    is. The selectors call it first: they need every row, since clustering is global. Each call reads the stream
    again into a new cache folder (a stream has no fingerprint that would tell a changed source apart)."""
    from accelerate import PartialState
    from datasets import Dataset, IterableDataset

    from ..caching import progress_bars

    if not isinstance(dataset, IterableDataset):
        return dataset
    if PartialState().num_processes > 1:
        raise TypeError("Got an IterableDataset under several processes; write it to disk once before launching, "
                        "e.g. paser_hf.materialize(stream).save_to_disk(folder), and pass load_from_disk(folder).")
    logger.info("Writing the streamed dataset to disk: the selection needs every row.")
    with progress_bars(show_progress):
        return Dataset.from_generator(dataset.__iter__, features=dataset.features, cache_dir=cache_dir,
                                      fingerprint=f"paser-stream-{uuid.uuid4().hex}")


def check_dataset(dataset) -> None:
    """Raise, naming the fix, unless `dataset` is one non-empty `datasets.Dataset` split."""
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, DatasetDict):
        raise TypeError(
            f"Got a DatasetDict with splits {list(dataset)}; pass one split, e.g. selector(dataset['train'])."
        )
    if not isinstance(dataset, Dataset):
        raise TypeError(f"Expected a datasets.Dataset, got {type(dataset).__name__}; use Dataset.from_list(...).")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: there is nothing to select from.")


def check_reserved_columns(dataset: Dataset) -> None:
    """Raise when `dataset` already has a column the selector writes (`RESERVED_COLUMNS`)."""
    for reserved in RESERVED_COLUMNS:
        if reserved in dataset.column_names:
            raise ValueError(
                f"The dataset already has a column {reserved!r}, which the selector writes; remove or rename it "
                "(e.g. dataset.remove_columns([...]))."
            )
