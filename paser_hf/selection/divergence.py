"""Per-sample Jensen-Shannon divergence between the original and the pruned model (spec section 2).

For every response token t of a row, with teacher forcing and temperature tau,

    P_o = softmax(z_o / tau),  P_p = softmax(z_p / tau),  M = (P_o + P_p) / 2,
    JSD_t = 1/2 KL(P_o || M) + 1/2 KL(P_p || M)            (log base 2, so JSD_t lies in [0, 1])

and the row's score is the mean of JSD_t over its response tokens. The maths runs in float32 on log-softmax
values; log M = logaddexp(log P_o, log P_p) - log 2, so no probability is ever divided by an underflowed zero.

Only the positions that predict a response token go through the LM head: both models' final hidden states
are gathered at those positions and projected a chunk at a time, so memory holds at most one chunk of
vocabulary-sized rows, whatever the batch and sequence size.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from ..models import native_bf16

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)
CPU_TOKENS_PER_BATCH = 4096
GPU_TOKENS_PER_BATCH = 65536
CPU_CHUNK_TOKENS = 64
GPU_CHUNK_TOKENS = 256


def jensen_shannon(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """JSD in bits between the distributions whose log-probabilities are the last dimension of `logp`, `logq`."""
    logm = torch.logaddexp(logp, logq) - LN2
    kl_pm = (logp.exp() * (logp - logm)).sum(-1)
    kl_qm = (logq.exp() * (logq - logm)).sum(-1)
    return (0.5 * (kl_pm + kl_qm) / LN2).clamp_(0.0, 1.0)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


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


def _has_plain_head(model: nn.Module) -> bool:
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


class _ResponseLogits:
    """Logits of one model at chosen positions of a padded batch, produced one chunk of positions at a time."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.device = model_device(model)
        self.plain_head = _has_plain_head(model)

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


class JsdScorer:
    """Scores batches of tokenised rows: mean response-token JSD per row (the `.map` function of the selector).

    `progress`, if given, is called with the token count of each scored batch (e.g. a tqdm bar's `update`).
    """

    def __init__(
        self,
        original: nn.Module,
        pruned: nn.Module,
        pad_token_id: int,
        vocab: int,
        temperature: float = 1.0,
        tokens_per_batch: Optional[int] = None,
        chunk_tokens: Optional[int] = None,
        progress=None,
    ):
        warn_if_emulated_bf16(original)
        self.original = _ResponseLogits(original)
        self.pruned = _ResponseLogits(pruned)
        self.pad_token_id = pad_token_id
        self.vocab = vocab
        self.temperature = temperature
        self.batches = BatchFitter(tokens_per_batch, self.original.device)
        self.chunk_tokens = default_chunk_tokens(self.original.device) if chunk_tokens is None else chunk_tokens
        self.progress = progress

    def __call__(self, batch: dict) -> dict:
        """`batch` has ``input_ids``, ``response_start``, ``paser_index``; gives ``paser_jsd``, ``paser_scored_tokens``."""
        lengths = [len(ids) for ids in batch["input_ids"]]
        jsd = [0.0] * len(lengths)
        counts = [0] * len(lengths)

        def score(group):
            scores, n = self.score_rows(
                [batch["input_ids"][i] for i in group],
                [batch["response_start"][i] for i in group],
                [batch["paser_index"][i] for i in group],
            )
            for i, s, c in zip(group, scores, n):
                jsd[i], counts[i] = s, c
            if self.progress is not None:
                self.progress(sum(lengths[i] for i in group))

        self.batches.run(lengths, score, row_ids=batch["paser_index"])
        return {"paser_jsd": jsd, "paser_scored_tokens": counts}

    @torch.inference_mode()
    def score_rows(self, input_ids: Sequence[Sequence[int]], starts: Sequence[int], row_ids: Sequence[int]):
        """Mean JSD over the response tokens of each row, and the number of tokens it averaged."""
        positions = [range(max(start, 1) - 1, len(seq) - 1) for seq, start in zip(input_ids, starts)]
        ids, mask, rows_t, cols_t = pad_batch(input_ids, positions, self.pad_token_id)
        counts = torch.bincount(rows_t, minlength=len(input_ids))
        if rows_t.numel() == 0:
            return [0.0] * len(input_ids), counts.tolist()
        device = self.original.device
        try:  # the hidden states held between prepare and chunk are dropped even when a batch fails
            self.original.prepare(ids, mask, rows_t, cols_t)
            self.pruned.prepare(ids, mask, rows_t, cols_t)
            per_token = torch.empty(len(rows_t), dtype=torch.float32, device=device)
            for start in range(0, len(rows_t), self.chunk_tokens):
                stop = min(start + self.chunk_tokens, len(rows_t))
                z_o = self.original.chunk(start, stop)[:, : self.vocab]
                z_p = self.pruned.chunk(start, stop).to(device)[:, : self.vocab]
                self._check_finite(z_o, "original", rows_t[start:stop], row_ids)
                self._check_finite(z_p, "pruned", rows_t[start:stop], row_ids)
                logp = torch.log_softmax(z_o / self.temperature, dim=-1)
                logq = torch.log_softmax(z_p / self.temperature, dim=-1)
                per_token[start:stop] = jensen_shannon(logp, logq)
        finally:
            self.original.selected = self.pruned.selected = None
        sums = torch.zeros(len(input_ids), dtype=torch.float64, device=device)
        sums.index_add_(0, rows_t.to(device), per_token.double())
        means = sums.cpu() / counts.clamp(min=1)
        return means.tolist(), counts.tolist()

    @staticmethod
    def _check_finite(logits: torch.Tensor, which: str, rows: torch.Tensor, row_ids: Sequence[int]) -> None:
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


def default_tokens_per_batch(device) -> int:
    """Padded tokens per scoring batch when none is given: 4096 on CPU, where throughput is flat past a few
    thousand tokens, and 65536 on an accelerator, where bigger batches keep it busy (`BatchFitter` halves it
    until a batch fits)."""
    return CPU_TOKENS_PER_BATCH if torch.device(device).type == "cpu" else GPU_TOKENS_PER_BATCH


def default_chunk_tokens(device) -> int:
    """Response positions per chunk of divergence maths when none is given: 64 on CPU, where the ~20 passes
    over each chunk's vocabulary-sized rows then stay in cache (on SmolLM2, 64 scored ~1.2x faster than 256
    in bfloat16), and 256 on an accelerator."""
    return CPU_CHUNK_TOKENS if torch.device(device).type == "cpu" else GPU_CHUNK_TOKENS


class BatchFitter:
    """Packs length-sorted rows into batches of at most `tokens` padded tokens (`pack_by_tokens`) and, when a
    batch runs out of accelerator memory, halves `tokens` and re-packs the rows not yet scored. The halved size
    is kept for every later batch, so a run settles on the largest batch that fits."""

    def __init__(self, tokens: Optional[int], device):
        self.tokens = default_tokens_per_batch(device) if tokens is None else tokens

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
