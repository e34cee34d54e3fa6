"""Per-sample Jensen-Shannon divergence between the original and the pruned model (paper Eqs. 4-5).

For every response token t of a row, with teacher forcing and temperature tau,

    P_o = softmax(z_o / tau),  P_p = softmax(z_p / tau),  M = (P_o + P_p) / 2,
    JSD_t = 1/2 KL(P_o || M) + 1/2 KL(P_p || M)            (log base 2, so JSD_t lies in [0, 1])

and the row's score is the mean of JSD_t over its response tokens. The maths runs in float32 on log-softmax
values; log M = logaddexp(log P_o, log P_p) - log 2, so no probability is ever divided by an underflowed zero.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from . import schema
from .scoring import BatchFitter, ResponseLogits, check_finite_logits, pad_batch, scoring_sizes, warn_if_emulated_bf16

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
    called with the token count of each scored batch (e.g. a tqdm bar's `update`).
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
        self.original = ResponseLogits(original)
        self.pruned = ResponseLogits(pruned)
        self.pad_token_id = pad_token_id
        self.vocab = vocab
        self.temperature = temperature
        tokens, self.chunk_tokens = scoring_sizes(self.original.device, tokens_per_batch, chunk_tokens)
        self.batches = BatchFitter(tokens)
        self.progress = progress

    def __call__(self, batch: dict) -> dict:
        """`batch` has ``input_ids``, ``response_start``, ``paser_index``; gives ``paser_jsd`` and
        ``paser_scored_tokens``."""
        ids, starts, row_ids = batch[schema.INPUT_IDS], batch[schema.RESPONSE_START], batch[schema.INDEX]
        lengths = [len(seq) for seq in ids]
        jsd = [0.0] * len(lengths)
        counts = [0] * len(lengths)

        def score(group):
            scores, n = self.score_rows([ids[i] for i in group], [starts[i] for i in group],
                                        [row_ids[i] for i in group])
            for i, s, c in zip(group, scores, n):
                jsd[i], counts[i] = s, c
            if self.progress is not None:
                self.progress(sum(lengths[i] for i in group))

        self.batches.run(lengths, score, row_ids=row_ids)
        return {schema.JSD: jsd, schema.SCORED_TOKENS: counts}

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
                check_finite_logits(z_o, "original", rows_t[start:stop], row_ids)
                check_finite_logits(z_p, "pruned", rows_t[start:stop], row_ids)
                logp = torch.log_softmax(z_o / self.temperature, dim=-1)
                logq = torch.log_softmax(z_p / self.temperature, dim=-1)
                per_token[start:stop] = jensen_shannon(logp, logq)
        finally:
            self.original.selected = self.pruned.selected = None
        sums = torch.zeros(len(input_ids), dtype=torch.float64, device=device)
        sums.index_add_(0, rows_t.to(device), per_token.double())
        means = sums.cpu() / counts.clamp(min=1)
        return means.tolist(), counts.tolist()
