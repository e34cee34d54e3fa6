"""Per-sample Jensen-Shannon divergence between the original and the pruned model (paper Eqs. 4-5).

For every response token t of a row, with teacher forcing and temperature tau,

    P_o = softmax(z_o / tau),  P_p = softmax(z_p / tau),  M = (P_o + P_p) / 2,
    JSD_t = 1/2 KL(P_o || M) + 1/2 KL(P_p || M)            (log base 2, so JSD_t lies in [0, 1])

and the row's score is the mean of JSD_t over its response tokens. The maths runs in float32 on log-softmax
values; log M = logaddexp(log P_o, log P_p) - log 2, so no probability is ever divided by an underflowed zero.

With ``teacher_topk = k`` the scorer also keeps the original model's top-k distribution at temperature 1 of every
scored position (`paser_hf.selection.teacher`), from the logits it already computed; with no pruned model it
only does that (`capture_teacher_topk`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from . import schema
from .scoring import BatchFitter, ResponseLogits, check_finite_logits, pad_batch, scoring_sizes, warn_if_emulated_bf16
from .teacher import TopkRecorder, capture_columns

LN2 = math.log(2.0)


def jensen_shannon(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """JSD in bits between the distributions whose log-probabilities are the last dimension of `logp`, `logq`."""
    logm = torch.logaddexp(logp, logq) - LN2
    kl_pm = (logp.exp() * (logp - logm)).sum(-1)
    kl_qm = (logq.exp() * (logq - logm)).sum(-1)
    return (0.5 * (kl_pm + kl_qm) / LN2).clamp_(0.0, 1.0)


class JsdScorer:
    """Scores batches of tokenised rows: mean response-token JSD per row (the `.map` function of the JSD stage).

    `tokens_per_batch` and `chunk_tokens` default to the device's (`scoring_sizes`); `progress`, if given, is
    called with the token count of each scored batch (e.g. a tqdm bar's `update`). With `teacher_topk` > 0 the
    original model's top-k distributions are kept too; with `pruned` None only they are computed (no JSD).
    """

    def __init__(
        self,
        original: nn.Module,
        pruned: Optional[nn.Module],
        pad_token_id: int,
        vocab: int,
        temperature: float = 1.0,
        tokens_per_batch: Optional[int] = None,
        chunk_tokens: Optional[int] = None,
        progress=None,
        teacher_topk: int = 0,
    ):
        if pruned is None and not teacher_topk:
            raise ValueError("JsdScorer without a pruned model only captures the top-k: give teacher_topk >= 1.")
        warn_if_emulated_bf16(original)
        self.original = ResponseLogits(original)
        self.pruned = ResponseLogits(pruned) if pruned is not None else None
        self.teacher_topk = teacher_topk
        self.pad_token_id = pad_token_id
        self.vocab = vocab
        self.temperature = temperature
        tokens, self.chunk_tokens = scoring_sizes(self.original.device, tokens_per_batch, chunk_tokens)
        self.batches = BatchFitter(tokens)
        self.progress = progress

    def __call__(self, batch: dict) -> dict:
        """`batch` has ``input_ids``, ``response_start``, ``paser_index``; gives ``paser_jsd`` (with a pruned
        model), ``paser_scored_tokens`` and, with `teacher_topk`, the stored teacher columns."""
        ids, starts, row_ids = batch[schema.INPUT_IDS], batch[schema.RESPONSE_START], batch[schema.INDEX]
        lengths = [len(seq) for seq in ids]
        jsd = [0.0] * len(lengths)
        counts = [0] * len(lengths)
        captured = [None] * len(lengths)

        def score(group):
            scores, n, kept = self.score_and_capture([ids[i] for i in group], [starts[i] for i in group],
                                                     [row_ids[i] for i in group], self.teacher_topk)
            for j, i in enumerate(group):
                jsd[i], counts[i] = scores[j], n[j]
                if kept is not None:
                    captured[i] = kept[j]
            if self.progress is not None:
                self.progress(sum(lengths[i] for i in group))

        self.batches.run(lengths, score, row_ids=row_ids)
        out = {schema.SCORED_TOKENS: counts}
        if self.pruned is not None:
            out[schema.JSD] = jsd
        if self.teacher_topk:
            out.update(capture_columns(ids, starts, counts, captured))
        return out

    def score_rows(self, input_ids: Sequence[Sequence[int]], starts: Sequence[int], row_ids: Sequence[int]):
        """Mean JSD over the response tokens of each row, and the number of tokens it averaged."""
        scores, counts, _ = self.score_and_capture(input_ids, starts, row_ids, 0)
        return scores, counts

    @torch.inference_mode()
    def score_and_capture(self, input_ids: Sequence[Sequence[int]], starts: Sequence[int], row_ids: Sequence[int],
                          k: int):
        """(mean JSD per row (0 without a pruned model), scored tokens per row, per row the teacher's top-k
        (`TopkRecorder.rows`) or None when `k` is 0)."""
        positions = [range(max(start, 1) - 1, len(seq) - 1) for seq, start in zip(input_ids, starts)]
        ids, mask, rows_t, cols_t = pad_batch(input_ids, positions, self.pad_token_id)
        counts = torch.bincount(rows_t, minlength=len(input_ids))
        device = self.original.device
        recorder = TopkRecorder(k, self.vocab, len(rows_t), device) if k else None
        if rows_t.numel() == 0:
            return [0.0] * len(input_ids), counts.tolist(), None if recorder is None else recorder.rows(counts.tolist())
        models = [m for m in (self.original, self.pruned) if m is not None]
        try:  # the hidden states held between prepare and chunk are dropped even when a batch fails
            for model in models:
                model.prepare(ids, mask, rows_t, cols_t)
            per_token = torch.zeros(len(rows_t), dtype=torch.float32, device=device)
            for start in range(0, len(rows_t), self.chunk_tokens):
                stop = min(start + self.chunk_tokens, len(rows_t))
                z_o = self.original.chunk(start, stop)[:, : self.vocab]
                check_finite_logits(z_o, "original", rows_t[start:stop], row_ids)
                logp = torch.log_softmax(z_o / self.temperature, dim=-1)
                if recorder is not None:
                    recorder.record(start, stop, logp if self.temperature == 1.0 else torch.log_softmax(z_o, -1))
                if self.pruned is not None:
                    z_p = self.pruned.chunk(start, stop).to(device)[:, : self.vocab]
                    check_finite_logits(z_p, "pruned", rows_t[start:stop], row_ids)
                    logq = torch.log_softmax(z_p / self.temperature, dim=-1)
                    per_token[start:stop] = jensen_shannon(logp, logq)
        finally:
            for model in models:
                model.selected = None
        sums = torch.zeros(len(input_ids), dtype=torch.float64, device=device)
        sums.index_add_(0, rows_t.to(device), per_token.double())
        means = sums.cpu() / counts.clamp(min=1)
        return means.tolist(), counts.tolist(), None if recorder is None else recorder.rows(counts.tolist())
