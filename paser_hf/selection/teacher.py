"""The teacher's top-k next-token distributions, kept for offline distillation (`PaserConfig.teacher_topk`).

For each scored response position (the positions whose logits PASER compares) the original model's distribution
at temperature 1, p = softmax(z), is stored as

- ``teacher_topk_ids``: the k most likely ids, most likely first (uint16 when the vocabulary has at most 65,536
  ids, else int32);
- ``teacher_topk_logprobs``: their log-probabilities log p_i (float16);
- ``teacher_tail_logmass``: log r, the log of the mass outside the top k, r = 1 - sum_i p_i, computed as the
  logsumexp of the other ids' log-probabilities (so it stays exact when r is tiny; -inf when k covers the whole
  vocabulary), float16.

Ids and log-probabilities are flat lists of P x k values (row-major by position). ``teacher_topk_start`` and
``teacher_topk_count`` say which tokens the P positions predict (start .. start + P - 1) and
``teacher_topk_input_hash`` (`sequence_hash`) which token sequence they were computed on, so the trainer can
check that its tokenisation is the same. Bytes per stored token: k x (2 + 2) + 2 for a vocabulary of at most
65,536 ids, plus Arrow's 4-byte list offsets per row and column.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import torch

from . import schema

if TYPE_CHECKING:
    from datasets import Dataset

    from .config import PaserConfig

#: Vocabularies up to this size store their ids as uint16.
UINT16_IDS = 2**16


def sequence_hash(input_ids: Sequence[int]) -> int:
    """CRC-32 of a token sequence (as int64 bytes): what `teacher_topk_input_hash` holds."""
    return zlib.crc32(np.asarray(input_ids, dtype=np.int64).tobytes())


def ids_dtype(vocab: int) -> np.dtype:
    """The narrowest id dtype for a vocabulary of `vocab` ids: uint16 up to 65,536 ids, else int32."""
    return np.dtype(np.uint16) if vocab <= UINT16_IDS else np.dtype(np.int32)


def topk_with_tail(logp: torch.Tensor, k: int):
    """(top-k log-probabilities (N, k), their ids (N, k), log of the remaining mass (N,)) of the normalised
    log-probabilities `logp` (N, V); the remaining mass is logsumexp over the ids outside the top k."""
    values, ids = logp.topk(k, dim=-1)
    tail = torch.logsumexp(logp.scatter(-1, ids, float("-inf")), dim=-1)
    return values, ids, tail


def topk_features(vocab: int, with_jsd: bool):
    """The Arrow features of a scored shard that keeps the top-k: ``paser_index``, ``paser_jsd`` (`with_jsd`),
    ``paser_scored_tokens`` and the stored columns."""
    from datasets import Features, List, Value

    return Features({
        schema.INDEX: Value("int64"),
        **({schema.JSD: Value("float64")} if with_jsd else {}),
        schema.SCORED_TOKENS: Value("int64"),
        schema.TEACHER_IDS: List(Value(ids_dtype(vocab).name)),
        schema.TEACHER_LOGPROBS: List(Value("float16")),
        schema.TEACHER_TAIL: List(Value("float16")),
        schema.TEACHER_START: Value("int32"),
        schema.TEACHER_COUNT: Value("int32"),
        schema.TEACHER_HASH: Value("int64"),
    })


class TopkRecorder:
    """Collects the top-k of every scored position of one batch and splits it into per-row column values."""

    def __init__(self, k: int, vocab: int, num_positions: int, device):
        self.k = min(k, vocab)
        self.ids_dtype = ids_dtype(vocab)
        self.values = torch.empty((num_positions, self.k), dtype=torch.float16, device=device)
        self.ids = torch.empty((num_positions, self.k), dtype=torch.int32, device=device)
        self.tail = torch.empty(num_positions, dtype=torch.float16, device=device)

    def record(self, start: int, stop: int, logp: torch.Tensor) -> None:
        """Keep the top-k of positions start:stop, whose temperature-1 log-probabilities are `logp`."""
        values, ids, tail = topk_with_tail(logp, self.k)
        self.values[start:stop], self.ids[start:stop], self.tail[start:stop] = values, ids, tail

    def rows(self, counts: Sequence[int]):
        """Per row, (flat ids, flat log-probabilities, tail log-masses), for rows of `counts` positions in order."""
        values = self.values.cpu().numpy().reshape(-1)
        ids = self.ids.cpu().numpy().astype(self.ids_dtype).reshape(-1)
        tail = self.tail.cpu().numpy()
        out, at = [], 0
        for n in counts:
            out.append((ids[at * self.k : (at + n) * self.k], values[at * self.k : (at + n) * self.k], tail[at : at + n]))
            at += n
        return out


def capture_columns(input_ids: Sequence[Sequence[int]], starts: Sequence[int], counts: Sequence[int],
                    captured: Sequence[tuple]) -> dict:
    """The stored columns of a batch of rows from their ids, response starts, scored counts and `TopkRecorder.rows`."""
    return {
        schema.TEACHER_IDS: [c[0] for c in captured],
        schema.TEACHER_LOGPROBS: [c[1] for c in captured],
        schema.TEACHER_TAIL: [c[2] for c in captured],
        schema.TEACHER_START: [max(int(s), 1) for s in starts],
        schema.TEACHER_COUNT: list(counts),
        schema.TEACHER_HASH: [sequence_hash(ids) for ids in input_ids],
    }


def stored_rows(shards: Sequence[Dataset], wanted: Sequence[int], state=None) -> Dataset:
    """The stored columns of the prepared rows `wanted`, in that order, from every process's scored `shards`
    (only those rows are read and sent between processes)."""
    import pyarrow as pa
    from accelerate.utils import gather_object
    from datasets import Dataset

    wanted = np.asarray(wanted, dtype=np.int64)
    tables = []
    for shard in shards:
        hits = np.flatnonzero(np.isin(np.asarray(shard[schema.INDEX]), wanted))
        if len(hits):
            tables.append(shard.select(hits).select_columns([schema.INDEX, *schema.TEACHER_COLUMNS])
                          .with_format("arrow")[:])
    if state is not None and state.num_processes > 1:
        tables = gather_object(tables)
    found = Dataset(pa.concat_tables(tables)) if tables else None
    index = np.asarray(found[schema.INDEX]) if found is not None else np.zeros(0, dtype=np.int64)
    position = {int(i): j for j, i in enumerate(index)}
    missing = [int(i) for i in wanted if int(i) not in position]
    if missing:
        raise RuntimeError(f"No stored teacher distributions for rows {missing[:5]}: their shards were not scored.")
    return found.select([position[int(i)] for i in wanted]).remove_columns(schema.INDEX).flatten_indices()


def attach_stored(dataset: Dataset, stored: Dataset) -> Dataset:
    """`dataset` with the stored columns of `stored` (one row each, same order) added."""
    from datasets import concatenate_datasets

    return concatenate_datasets([dataset.flatten_indices(), stored], axis=1)


def check_no_stored_columns(dataset: Dataset) -> None:
    """Raise when `dataset` already carries stored teacher columns (capturing again would overwrite them)."""
    present = [c for c in schema.TEACHER_COLUMNS if c in dataset.column_names]
    if present:
        raise ValueError(f"The dataset already has the teacher columns {present}; drop them first "
                         "(dataset.remove_columns([...])) or set teacher_topk=0 to keep them as they are.")


def capture_teacher_topk(dataset: Dataset, model, tokenizer, k: int = 64, config: Optional[PaserConfig] = None,
                         formatting_func: Optional[Callable[[dict], dict]] = None) -> Dataset:
    """`dataset` with the stored top-k columns of `model` (the teacher) added to every row, for offline
    distillation with `RecoveryTrainer` (kd_alpha > 0, no teacher).

    Rows are formatted, tokenised and truncated as the selector and `trl.SFTTrainer` do (`config`: max_length,
    dataset_format, use_chat_template, scoring sizes, cache_dir; `formatting_func` as for the selector), and
    scored longest first in cached shards: a killed run resumes, and under `accelerate launch` every process
    scores its share. Every process returns the whole dataset.
    """
    from accelerate import PartialState

    from ..caching import combine, model_fingerprint, progress_bars
    from ..formatting import resolve_chat_template
    from .config import PaserConfig
    from .divergence import JsdScorer
    from .prepare import prepare_dataset, resolve_format
    from .scoring import pad_token_id, scored_shards, vocabulary_size

    config = PaserConfig(show_progress=False) if config is None else config
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}; it must be an integer >= 1 (the number of teacher ids kept per token).")
    dataset = schema.materialize(dataset, config.cache_dir, config.show_progress)
    schema.check_dataset(dataset)
    check_no_stored_columns(dataset)
    state = PartialState(cpu=not torch.cuda.is_available())
    dataset_format = resolve_format(dataset, config, formatting_func)
    chat = resolve_chat_template(tokenizer, config.use_chat_template)
    vocab = vocabulary_size(model)
    show_progress = config.show_progress and state.is_main_process
    with progress_bars(show_progress):
        with state.main_process_first():
            prepared = prepare_dataset(dataset, tokenizer, config, dataset_format, chat, formatting_func)

        def make_scorer(progress):
            return JsdScorer(model, None, pad_token_id=pad_token_id(tokenizer), vocab=vocab,
                             tokens_per_batch=config.scoring_tokens_per_batch, chunk_tokens=config.jsd_chunk_tokens,
                             progress=progress, teacher_topk=k)

        was_training = model.training
        model.eval()
        try:
            shards = scored_shards(
                prepared, np.arange(len(prepared)), make_scorer, "teacher-topk",
                combine("teacher-topk-v1", prepared._fingerprint, model_fingerprint(model), vocab, k),
                config.cache_dir, config.scoring_shard_rows, "Teacher top-k", show_progress, state,
                features=topk_features(vocab, with_jsd=False),
            )
        finally:
            model.train(was_training)
        return attach_stored(dataset, stored_rows(shards, np.arange(len(prepared)), state))

