"""Offline distillation: training against the teacher distributions stored in the dataset, with no teacher in memory.

A row carries, for each trained position, the teacher's top-k ids ``i_1..i_k``, their log-probabilities
``log p_i`` at temperature 1 and ``log r``, the log of the mass outside the top k (`paser_hf.selection.teacher`).
The divergence is taken between two distributions over k + 1 outcomes, the k stored ids and "any other id":

    teacher  P = (p_1, ..., p_k, r)
    student  Q = (q_{i_1}, ..., q_{i_k}, 1 - sum_j q_{i_j}),   q = softmax(z_s / T) over the student's vocabulary V

with the formulas of `paser_hf.recovery.losses` (forward KL, reverse KL, generalised JSD, times T^2). Merging ids
never increases a KL or JS divergence, so this is a lower bound of the full-vocabulary loss that is equal to it
when k = V (there is then no "other" outcome).

Temperature: the stored distributions are at T = 1. Inside the top k, tempering is exact: p_i^(1/T), renormalised.
The shape of the rest is not stored, so its tempered mass is that of r spread evenly over the V - k other ids,
(V - k) (r / (V - k))^(1/T), before the renormalisation. This is exact at T = 1 and at k = V; for T > 1 it is an
upper bound of the true tempered rest (x^(1/T) is concave), for T < 1 a lower bound.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..selection import schema
from ..selection.teacher import sequence_hash
from .losses import IGNORE_INDEX, KD_LOSSES, HeadLosses, LogitHead, sum_over_chunks, tempered_log_softmax

STORED_COLUMNS = schema.TEACHER_COLUMNS


class StoredTargets(NamedTuple):
    """A batch's stored teacher distributions: ``ids`` and ``logprobs`` (N, k), ``tail`` (N,) and the positions of
    each row, ``counts`` (B,), for the N trained positions of the batch in row-major order."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    tail: torch.Tensor
    counts: torch.Tensor


def has_stored_targets(dataset) -> bool:
    """Whether `dataset` carries every stored teacher column."""
    names = getattr(dataset, "column_names", None) or []
    return all(column in names for column in STORED_COLUMNS)


def outcome_divergence(log_p: torch.Tensor, log_q: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """Per-row divergence between two distributions given by their log-probabilities over the last dimension;
    an outcome with zero probability (-inf) adds nothing to the sums it weighs."""
    if kind not in KD_LOSSES:
        raise ValueError(f"Unknown kd_loss {kind!r}; expected one of {KD_LOSSES}.")

    def kl(log_a, log_b):  # sum_x a_x (log a_x - log b_x), with 0 log 0 = 0
        return torch.where(log_a > float("-inf"), log_a.exp() * (log_a - log_b), 0.0).sum(-1)

    if kind == "forward_kl":
        return kl(log_p, log_q)
    if kind == "reverse_kl":
        return kl(log_q, log_p)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    return beta * kl(log_p, log_m) + (1.0 - beta) * kl(log_q, log_m)


def stored_divergence(student_logits: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor, tail: torch.Tensor,
                      kind: str = "forward_kl", temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """T^2 times the divergence between the stored teacher distribution (top-k + rest, see the module docstring)
    and the student's, per row of `student_logits` (N, V); `ids`, `logprobs` (N, k) and `tail` (N,)."""
    return stored_log_prob_divergence(tempered_log_softmax(student_logits, temperature), ids, logprobs, tail, kind,
                                      temperature, beta)


def stored_log_prob_divergence(log_q: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor, tail: torch.Tensor,
                               kind: str = "forward_kl", temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """`stored_divergence` from the student's tempered log-probabilities `log_q` (N, V). The student's rest is
    log(1 - sum_j q_{i_j}) = log(-expm1(logsumexp_j log q_{i_j})), from the k gathered values alone: no second
    vocabulary-sized pass."""
    vocab, k = log_q.size(-1), ids.size(-1)
    with_rest = k < vocab
    log_p = logprobs.float()
    rest = tail.float()[:, None]
    if temperature != 1.0:
        log_p = log_p / temperature
        if with_rest:
            spread = math.log(vocab - k)
            rest = spread + (rest - spread) / temperature
        parts = torch.cat([log_p, rest], -1) if with_rest else log_p
        norm = torch.logsumexp(parts, dim=-1, keepdim=True)
        log_p, rest = log_p - norm, rest - norm
    top_q = log_q.gather(-1, ids)
    if not with_rest:
        return outcome_divergence(log_p, top_q, kind, beta) * temperature**2
    top_mass = torch.logsumexp(top_q, dim=-1, keepdim=True).clamp(max=0.0)
    rest_q = torch.log(-torch.expm1(top_mass).clamp(max=-torch.finfo(top_q.dtype).tiny))
    return outcome_divergence(torch.cat([log_p, rest], -1), torch.cat([top_q, rest_q], -1), kind, beta) \
        * temperature**2


def stored_head_losses(student_hidden: torch.Tensor, targets: torch.Tensor, student_head: LogitHead,
                       stored: StoredTargets, kind: str = "forward_kl", temperature: float = 1.0, beta: float = 0.5,
                       chunk_size: int = 256, recompute: bool = True) -> HeadLosses:
    """Distillation and cross-entropy sums of the completion tokens against `stored`, chunk by chunk, as
    `paser_hf.recovery.losses.chunked_head_losses` does with a teacher model: per chunk z_s = head(h_s),
    ce = -log_softmax(z_s)[target], kd = `stored_divergence`; under gradients each chunk runs in
    `torch.utils.checkpoint` (with `recompute`), so one chunk's (chunk_size, V) logits are alive at a time."""
    device = student_hidden.device

    def one_chunk(h_s, y, ids, logprobs, tail):
        z_s = student_head(h_s).to(device)
        log_probs = tempered_log_softmax(z_s)
        ce = F.nll_loss(log_probs, y, reduction="sum")
        log_q = log_probs if temperature == 1.0 else tempered_log_softmax(z_s, temperature)  # one pass at T = 1
        kd = stored_log_prob_divergence(log_q, ids, logprobs, tail, kind, temperature, beta).sum()
        return kd, ce, (log_probs.detach().argmax(-1) == y).sum()

    return sum_over_chunks(one_chunk, (student_hidden, targets, stored.ids, stored.logprobs, stored.tail),
                           chunk_size, recompute)


def stored_batch(rows) -> dict:
    """Tensors of the stored columns of a batch of rows (dicts), positions of all rows concatenated in order."""
    counts = [int(row[schema.TEACHER_COUNT]) for row in rows]
    sizes = {len(row[schema.TEACHER_IDS]) // n for row, n in zip(rows, counts) if n}
    if len(sizes) > 1:
        raise ValueError(f"The batch mixes teacher top-k sizes {sorted(sizes)}; capture every row with one k.")
    k = sizes.pop() if sizes else 1
    ids = np.concatenate([np.asarray(row[schema.TEACHER_IDS], dtype=np.int64) for row in rows])
    logprobs = np.concatenate([np.asarray(row[schema.TEACHER_LOGPROBS], dtype=np.float32) for row in rows])
    tail = np.concatenate([np.asarray(row[schema.TEACHER_TAIL], dtype=np.float32) for row in rows])
    return {
        schema.TEACHER_IDS: torch.from_numpy(ids).view(-1, k),
        schema.TEACHER_LOGPROBS: torch.from_numpy(logprobs).view(-1, k),
        schema.TEACHER_TAIL: torch.from_numpy(tail),
        schema.TEACHER_COUNT: torch.tensor(counts, dtype=torch.long),
    }


class StoredTargetsCollator:
    """Wraps a collator: the stored teacher columns are taken out of the examples, the rest collated by `collator`,
    and the stored distributions added as tensors (`stored_batch`)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator([{k: v for k, v in ex.items() if k not in STORED_COLUMNS} for ex in examples])
        batch.update(stored_batch(examples))
        return batch


def pop_stored_targets(inputs: dict) -> Optional[StoredTargets]:
    """The stored distributions of a collated batch, removed from `inputs`; None when it has none."""
    if schema.TEACHER_IDS not in inputs:
        return None
    counts = inputs.pop(schema.TEACHER_COUNT)
    return StoredTargets(inputs.pop(schema.TEACHER_IDS), inputs.pop(schema.TEACHER_LOGPROBS),
                         inputs.pop(schema.TEACHER_TAIL), counts)


def check_stored_batch(stored: StoredTargets, mask: torch.Tensor, vocab: int) -> None:
    """Raise when the batch's trained positions per row are not the stored ones, or a stored id is out of the
    student's vocabulary."""
    if not torch.equal(mask.sum(1).to(stored.counts.device), stored.counts):
        raise ValueError(
            f"The batch trains on {mask.sum(1).tolist()} tokens per row but the stored teacher distributions cover "
            f"{stored.counts.tolist()}: train without padding_free/packing on the rows the distributions came from."
        )
    if stored.ids.numel() and int(stored.ids.max()) >= vocab:
        raise ValueError(f"A stored teacher id ({int(stored.ids.max())}) is outside the student's {vocab} ids: the "
                         "distributions come from a model with another vocabulary.")


def check_alignment(dataset, name: str, max_length: Optional[int]) -> None:
    """Raise, in one line naming the row and the fix, unless every row of the prepared `dataset` (trl's
    ``input_ids`` and ``labels``) trains on exactly the tokens its stored distributions were computed for."""
    if not has_stored_targets(dataset):
        missing = [c for c in STORED_COLUMNS if c not in (getattr(dataset, "column_names", None) or [])]
        raise ValueError(f"The {name} has no stored teacher distributions (missing {missing}) and there is no "
                         "teacher: capture them (paser teacher-logits) or pass teacher_model=.")
    fix = ("capture them again with the trainer's tokenizer, template and max_length "
           f"(paser teacher-logits --max_length {max_length}).")
    columns = dataset.select_columns(["input_ids", "labels", schema.TEACHER_START, schema.TEACHER_COUNT,
                                      schema.TEACHER_HASH])
    for row, example in enumerate(columns):
        ids, labels = example["input_ids"], example["labels"]
        trained = [t for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX]
        start, count = example[schema.TEACHER_START], example[schema.TEACHER_COUNT]
        if sequence_hash(ids) != example[schema.TEACHER_HASH]:
            raise ValueError(f"Row {row} of the {name}: the stored teacher distributions were computed on other "
                             f"token ids than the trainer's {len(ids)} (another template, max_length or tokenizer); "
                             + fix)
        if trained != list(range(start, start + count)):
            got = f"{trained[0]}..{trained[-1]}" if trained else "none"
            raise ValueError(f"Row {row} of the {name}: the stored teacher distributions cover tokens "
                             f"{start}..{start + count - 1} but the trainer trains on tokens {got} (another loss mask: "
                             "completion_only_loss, assistant_only_loss or a messages dataset); " + fix)
