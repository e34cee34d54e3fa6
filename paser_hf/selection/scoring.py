"""Scoring rows with a causal LM, shared by the JSD of PASER and the losses of IFD.

Only the positions that predict a response token go through the LM head (`ResponseLogits`): the final hidden
states are gathered at those positions and projected a chunk of positions at a time, so memory holds at most
one chunk of vocabulary-sized rows whatever the batch. Rows are scored longest first, packed into batches of
at most a token budget (`BatchFitter`), in shards that are each cached (`scored_shards`), so a killed run
resumes at the first unfinished shard. Only `scored_shards` and `gather_scores` need `datasets` and `accelerate`; the rest runs
where only torch is installed (benchmarks/gpu_path.py).
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import native_bf16
from . import schema

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

CPU_TOKENS_PER_BATCH = 4096
GPU_TOKENS_PER_BATCH = 65536
CPU_CHUNK_TOKENS = 64
GPU_CHUNK_TOKENS = 256
#: Rows per `Dataset.map` batch inside a shard (each batch is then packed by `BatchFitter`).
MAP_BATCH_ROWS = 256


def default_tokens_per_batch(device) -> int:
    """Padded tokens per scoring batch when none is given: 4096 on CPU, where throughput is flat past a few
    thousand tokens, and 65536 on an accelerator, where bigger batches keep it busy (`BatchFitter` halves it
    until a batch fits)."""
    return CPU_TOKENS_PER_BATCH if torch.device(device).type == "cpu" else GPU_TOKENS_PER_BATCH


def default_chunk_tokens(device) -> int:
    """Response positions per chunk of LM-head maths when none is given: 64 on CPU, where the ~20 passes over
    each chunk's vocabulary-sized rows then stay in cache (on SmolLM2, 64 scored ~1.2x faster than 256 in
    bfloat16), and 256 on an accelerator."""
    return CPU_CHUNK_TOKENS if torch.device(device).type == "cpu" else GPU_CHUNK_TOKENS


def scoring_sizes(device, tokens_per_batch: Optional[int] = None,
                  chunk_tokens: Optional[int] = None) -> Tuple[int, int]:
    """(tokens per batch, positions per chunk): the given values, or the defaults of `device` for None."""
    return (
        default_tokens_per_batch(device) if tokens_per_batch is None else tokens_per_batch,
        default_chunk_tokens(device) if chunk_tokens is None else chunk_tokens,
    )


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def model_name(model) -> str:
    """The hub name or path a model was loaded from, else its class name (for reports)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def warn_if_emulated_bf16(model: nn.Module) -> None:
    """Warn when `model` is in bfloat16 on a device without native bfloat16, where float32 scores ~2x faster."""
    weight = next(model.parameters())
    if weight.dtype == torch.bfloat16 and not native_bf16(weight.device):
        warnings.warn(
            f"Scoring in bfloat16 on {weight.device}, which has no native bfloat16 matrix units: emulated "
            "bfloat16 is about 2x slower than float32 there. Load the models in float32 (or pass --dtype auto "
            "to `paser select`).",
            stacklevel=3,
        )


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padding is masked, so any id will do)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    return 0


def vocabulary_size(model: nn.Module) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def common_vocabulary(original: nn.Module, pruned: nn.Module, tokenizer) -> int:
    """The number of logit columns both models share; raises when the vocabularies really differ.

    Embedding matrices are often padded past the tokenizer (to a multiple of 64, say); a difference in those
    padding rows alone is fine and the comparison uses the common ids. Any other difference is an error.
    """
    v_o, v_p = vocabulary_size(original), vocabulary_size(pruned)
    if v_o == v_p:
        return v_o
    if len(tokenizer) <= min(v_o, v_p):
        return min(v_o, v_p)
    raise ValueError(
        f"The original model has {v_o} output tokens and the pruned model {v_p}, and the tokenizer has "
        f"{len(tokenizer)}: they do not share a vocabulary. Use the pruned model that was made from this original "
        "model, with the same tokenizer."
    )


def has_plain_head(model: nn.Module) -> bool:
    """True when logits = lm_head(last_hidden_state) exactly (no soft-capping or logit scaling)."""
    config = getattr(model, "config", None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(base, nn.Module) or not isinstance(head, nn.Linear) or config is None:
        return False
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale"):
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            return False
    return True


class ResponseLogits:
    """Logits of one model at chosen positions of a padded batch, produced one chunk of positions at a time:
    `prepare` runs the model body and keeps the hidden states at (`rows`, `cols`) in ``selected``; `chunk`
    projects positions start:stop through the LM head, in float32. Set ``selected = None`` when done."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.device = model_device(model)
        self.plain_head = has_plain_head(model)
        self.selected = None

    def prepare(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows, cols) -> None:
        ids = input_ids.to(self.device)
        mask = attention_mask.to(self.device)
        rows, cols = rows.to(self.device), cols.to(self.device)
        if self.plain_head:
            base = getattr(self.model, self.model.base_model_prefix)
            hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            self.selected = hidden[rows, cols]
        else:
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            self.selected = logits[rows, cols]

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        part = self.selected[start:stop]
        if self.plain_head:
            part = self.model.get_output_embeddings()(part)
        return part.float()


def check_finite_logits(logits: torch.Tensor, which: str, rows: torch.Tensor, row_ids: Sequence[int]) -> None:
    """Raise, naming the dataset row, when a row of `logits` holds NaN or inf; `rows[j]` is the position in
    `row_ids` of logit row j."""
    bad = ~torch.isfinite(logits).all(dim=-1)
    if bool(bad.any()):
        row = row_ids[int(rows[bad.nonzero()[0, 0].cpu()])]
        raise FloatingPointError(
            f"The {which} model produced NaN or infinite logits on dataset row {row}. Check the model's weights "
            "(a broken pruning step?) and its dtype (float16 overflows; use bfloat16 or float32)."
        )


def pad_batch(sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]], pad_id: int):
    """Right-padded ``ids`` and attention ``mask`` of `sequences`, and the (``rows``, ``cols``) of every position
    in `positions` (one list per sequence), sequence after sequence."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    rows, cols = [], []
    for r, (seq, pos) in enumerate(zip(sequences, positions)):
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[r, : len(seq)] = 1
        cols.extend(pos)
        rows.extend([r] * len(pos))
    return ids, mask, torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def pack_by_tokens(lengths: List[int], tokens_per_batch: int) -> List[List[int]]:
    """Consecutive groups of row positions whose padded size (rows x longest row) stays within the token budget."""
    groups, current, longest = [], [], 0
    for i, n in enumerate(lengths):
        wider = max(longest, n)
        if current and wider * (len(current) + 1) > tokens_per_batch:
            groups.append(current)
            current, wider = [], n
        current.append(i)
        longest = wider
    if current:
        groups.append(current)
    return groups


class BatchFitter:
    """Packs length-sorted rows into batches of at most `tokens` padded tokens (`pack_by_tokens`) and, when a
    batch runs out of accelerator memory, halves `tokens` and re-packs the rows not yet scored. The halved size
    is kept for every later batch, so a run settles on the largest batch that fits."""

    def __init__(self, tokens: int):
        self.tokens = tokens

    def run(self, lengths: Sequence[int], score: Callable[[List[int]], None], row_ids: Sequence[int]) -> None:
        """Call `score(group)` on consecutive groups of positions into `lengths` until every row is scored."""
        pending = list(range(len(lengths)))
        while pending:
            groups = [[pending[j] for j in g] for g in pack_by_tokens([lengths[i] for i in pending], self.tokens)]
            done = 0
            try:
                for group in groups:
                    score(group)
                    done += 1
            except torch.OutOfMemoryError:
                pass
            else:
                return
            if len(groups[done]) == 1:
                row = groups[done][0]
                raise torch.OutOfMemoryError(
                    f"Dataset row {row_ids[row]} ({lengths[row]} tokens) does not fit in memory even alone. Lower "
                    "PaserConfig.max_length, or score on a device with more memory."
                )
            pending = [i for group in groups[done:] for i in group]
            self.tokens = max(1, self.tokens // 2)
            logger.warning("A scoring batch ran out of memory; retrying with at most %d tokens per batch.", self.tokens)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def longest_first(rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`rows` by descending length, ties in their given order (padding then wastes least)."""
    return rows[np.argsort(-lengths[rows], kind="stable")]


def scored_shards(
    prepared: Dataset,
    rows: np.ndarray,
    make_scorer: Callable[[Callable[[int], None]], Callable[[dict], dict]],
    name: str,
    fingerprint: str,
    cache_dir: Optional[str],
    shard_rows: int,
    desc: str,
    show_progress: bool,
    state=None,
    features=None,
) -> List[Dataset]:
    """This process's scored shards of the `rows` of `prepared`: Datasets with ``paser_index`` and the scorer's
    columns (stored as `features` when given).

    The rows are scored longest first in shards of `shard_rows` rows; a shard is one `cached_map` of the batched
    function ``make_scorer(progress)`` (which reads ``paser_index``, ``input_ids`` and ``response_start`` and
    calls ``progress(tokens)`` per scored batch) under ``combine(fingerprint, hash of the shard's row ids)``. The
    key depends on the rows and on `fingerprint` only, so a killed run resumes at the first unfinished shard,
    whatever the number of processes. Under an accelerate `state` of P processes, process p scores shards p,
    p + P, p + 2P, ...
    """
    from datasets.fingerprint import Hasher

    from ..caching import cached_map, combine, progress_bars

    process_index, num_processes = (0, 1) if state is None else (state.process_index, state.num_processes)
    if len(rows) == 0:
        return []
    lengths = np.asarray(prepared[schema.LENGTH], dtype=np.int64)
    order = longest_first(rows, lengths)
    shards = [order[start : start + shard_rows] for start in range(0, len(order), shard_rows)]
    mine = shards[process_index::num_processes]
    bar = tqdm(total=int(sum(lengths[shard].sum() for shard in mine)), unit="tok", unit_scale=True, desc=desc,
               disable=not show_progress)
    scorer = make_scorer(bar.update)
    columns = prepared.select_columns([schema.INDEX, schema.INPUT_IDS, schema.RESPONSE_START])
    done = []
    with progress_bars(False):
        for shard in mine:
            before = bar.n
            done.append(cached_map(
                columns.select(shard),
                scorer,
                name,
                combine(fingerprint, Hasher.hash(shard.tobytes())),
                cache_dir,
                batched=True,
                batch_size=MAP_BATCH_ROWS,
                remove_columns=[schema.INPUT_IDS, schema.RESPONSE_START],
                features=features,
            ))
            bar.update(int(lengths[shard].sum()) - (bar.n - before))  # a shard read from the cache
    bar.close()
    return done


def gather_scores(shards: Sequence[Dataset], outputs: Sequence[str], num_rows: int,
                  state=None) -> Dict[str, np.ndarray]:
    """Each of `outputs` of every process's `shards` (`scored_shards`), as an (N,) float64 array over the
    `num_rows` prepared rows (NaN for the rows no shard holds)."""
    from accelerate.utils import gather_object

    values = {column: np.full(num_rows, np.nan) for column in outputs}
    done = [(np.asarray(shard[schema.INDEX]), {c: np.asarray(shard[c], dtype=np.float64) for c in outputs})
            for shard in shards]
    if state is not None and state.num_processes > 1:
        done = gather_object(done)
    for index, scored in done:
        for column in outputs:
            values[column][index] = scored[column]
    return values

