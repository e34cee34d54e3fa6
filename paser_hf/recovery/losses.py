"""Token-level logit distillation losses, computed over chunks of tokens.

For a completion token with student logits ``z_s`` and teacher logits ``z_t`` (vocabulary ``V``), temperature ``T``,
``q = softmax(z_s / T)`` (student) and ``p = softmax(z_t / T)`` (teacher), the per-token divergence is

- ``forward_kl``: ``T^2 * KL(p || q) = T^2 * sum_v p_v (log p_v - log q_v)``   (the paper's App. F objective)
- ``reverse_kl``: ``T^2 * KL(q || p)``
- ``jsd``: ``T^2 * (beta * KL(p || m) + (1 - beta) * KL(q || m))`` with ``m = beta * p + (1 - beta) * q``
  (the generalised Jensen-Shannon divergence of GKD, arXiv 2306.13649)

and the loss is its mean over the completion tokens. ``T^2`` keeps the gradient scale independent of ``T``.

Memory: the vocabulary-sized tensors exist for one chunk of tokens at a time. `chunked_head_losses` starts from final
hidden states and runs the LM heads inside `torch.utils.checkpoint`, so the backward pass recomputes one chunk's
logits instead of keeping ``tokens x V`` float32 activations alive for the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .compiled_losses import compiled_cross_entropy_and_hits, compiled_forward_kl_and_ce

KD_LOSSES = ("forward_kl", "reverse_kl", "jsd")
IGNORE_INDEX = -100
# rows of the (rows x V) temporary in `_ForwardKLAndCE`: 32 x 49,152 floats (6 MB) measured faster than 16, 64 or 256
_DOT_ROWS = 32


def tempered_log_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log_softmax(z / T)`` in float32 (no division at T = 1)."""
    logits = logits.float()
    return F.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-row divergence between the tempered distributions of two ``(N, V)`` logit tensors, in float32, times T^2.

    Returns a tensor of shape ``(N,)``. See the module docstring for the formulas.
    """
    if kind not in KD_LOSSES:
        raise ValueError(f"Unknown kd_loss {kind!r}; expected one of {KD_LOSSES}.")
    return log_prob_divergence(tempered_log_softmax(student_logits, temperature),
                               tempered_log_softmax(teacher_logits, temperature), kind, beta) * temperature**2


def log_prob_divergence(log_q: torch.Tensor, log_p: torch.Tensor, kind: str = "forward_kl",
                        beta: float = 0.5) -> torch.Tensor:
    """`divergence` from the student's and the teacher's log-probabilities, without the T^2 factor."""
    if kind == "forward_kl":
        return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)
    if kind == "reverse_kl":
        return F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(-1)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    kl_p = F.kl_div(log_m, log_p, reduction="none", log_target=True).sum(-1)
    kl_q = F.kl_div(log_m, log_q, reduction="none", log_target=True).sum(-1)
    return beta * kl_p + (1.0 - beta) * kl_q


def completion_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask of positions whose next token is trained, and those next tokens.

    Position ``t`` predicts ``labels[t + 1]``; labels are -100 on prompt and padding tokens (trl's convention), so the
    mask has shape ``(B, L - 1)`` and selects the rows of ``hidden[:, :-1]`` / ``logits[:, :-1]`` that enter the loss.
    """
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    return mask, shifted[mask]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Mean divergence over the completion tokens of ``(B, L, V)`` logits; ``labels`` ``(B, L)`` with -100 masks.

    The two logit tensors must be already materialised; only the float32 log-softmax work is chunked. When the
    vocabularies differ only by padding rows, pass both sliced to the common ids.
    """
    mask, _ = completion_positions(labels)
    student = student_logits[:, :-1][mask]
    teacher = teacher_logits[:, :-1][mask.to(teacher_logits.device)].to(student.device)
    total = student.new_zeros((), dtype=torch.float32)
    for start in range(0, student.size(0), chunk_size):
        end = start + chunk_size
        total = total + divergence(student[start:end], teacher[start:end], kind, temperature, beta).sum()
    return total / mask.sum().clamp(min=1)


@dataclass
class LogitHead:
    """An LM head as a function of hidden states: ``cap * tanh(scale * (h W^T + b) / cap)``; no tanh without
    ``softcap``. Runs on the weight's device and dtype."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    softcap: float | None = None
    scale: float = 1.0

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden.to(self.weight.device, self.weight.dtype), self.weight, self.bias)
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits


def _shifted_copy(logits: torch.Tensor, targets: torch.Tensor):
    """``(u, max, argmax, z[y])`` per row of ``(N, V)`` logits ``z``: ``u = z - max z`` in a float32 (or wider) copy."""
    shifted = logits.to(torch.promote_types(logits.dtype, torch.float32), copy=True)
    top, top_ids = shifted.max(-1)
    target_logits = shifted.gather(-1, targets[:, None]).squeeze(-1)
    return shifted.sub_(top[:, None]), top, top_ids, target_logits


def _softmax_shifted_(shifted: torch.Tensor) -> torch.Tensor:
    """Turns rows of shifted logits ``u`` into ``softmax(u)`` in place; returns ``log sum_v exp(u_v)``."""
    total = shifted.exp_().sum(-1)
    shifted.div_(total[:, None])
    return total.log()


def _minus_one_hot_(grad: torch.Tensor, targets: torch.Tensor, grad_ce: torch.Tensor) -> torch.Tensor:
    """``grad - g_ce e_y`` in place: the cross-entropy's one-hot term of a softmax gradient."""
    return grad.scatter_add_(-1, targets[:, None], (-grad_ce).to(grad.dtype).expand(targets.size(0), 1))


class _ForwardKLAndCE(torch.autograd.Function):
    """`forward_kl_and_ce` with its gradient written out, from two float32 copies of the logits that become the
    probabilities in place (kept for the backward pass, whose gradient overwrites the student's). With shifted logits
    ``u = z - max z`` and ``S = sum_v exp(u_v)``: ``KL(p || q) = sum_v p_v (u_t,v - u_s,v) - log S_t + log S_s`` and
    ``CE = max z_s + log S_s - z_s,y``. The difference ``u_t - u_s`` is taken `_DOT_ROWS` rows at a time, so that no
    third vocabulary-sized tensor is allocated. On 2 CPU cores each fresh ``256 x 49,152`` float32 tensor cost about
    10 ms in page faults, and the log-softmax form (two log-softmaxes, an exp, an argmax, a new gradient) took
    105-135 ms per chunk forward and backward, this one 58-75 ms (SmolLM2's vocabulary, bfloat16 logits)."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, targets):
        q, top_s, top_ids, target_logits = _shifted_copy(student_logits, targets)
        p = teacher_logits.to(q.dtype, copy=True)
        p.sub_(p.amax(-1, keepdim=True))
        dots = q.new_empty(q.size(0))
        for start in range(0, q.size(0), _DOT_ROWS):
            rows = slice(start, start + _DOT_ROWS)
            diff = p[rows] - q[rows]
            dots[rows] = diff.mul_(p[rows].exp_()).sum(-1)
        sum_t = p.sum(-1)
        p.div_(sum_t[:, None])
        log_sum_s = _softmax_shifted_(q)
        kd = (dots / sum_t - sum_t.log() + log_sum_s).sum()
        ce = (top_s + log_sum_s - target_logits).sum()
        hits = (top_ids == targets).sum()
        ctx.save_for_backward(q, p, targets)
        ctx.student_dtype = student_logits.dtype
        ctx.mark_non_differentiable(hits)
        return kd, ce, hits

    @staticmethod
    def backward(ctx, grad_kd, grad_ce, _):
        q, p, targets = ctx.saved_tensors
        grad = _minus_one_hot_(q.mul_(grad_kd + grad_ce).addcmul_(p, -grad_kd), targets, grad_ce)
        return grad.to(ctx.student_dtype), None, None


def forward_kl_and_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sum_n KL(p_n || q_n), -sum_n log q_n[y_n], #{n : argmax q_n = y_n})`` with ``q = softmax(z_s)``,
    ``p = softmax(z_t)`` over rows of ``(N, V)`` logits, in float32 (or wider); the gradient reaches only the
    student: ``g_kd (q - p) + g_ce (q - e_y)``. The top-1 hits come from the maximum of the float32 copy: an argmax
    over bfloat16 logits took 23 ms per 256 x 49,152 chunk on 2 CPU cores. The backward pass reuses the saved
    probabilities, so a second backward through the same graph raises autograd's in-place error."""
    return _ForwardKLAndCE.apply(student_logits, teacher_logits.detach(), targets)


class _CrossEntropyAndHits(torch.autograd.Function):
    """`cross_entropy_and_hits` with its gradient written out: one float32 copy of the logits becomes the
    probabilities in place (kept for the backward pass, which turns them into the gradient), and the maximum that
    stabilises the softmax gives the top-1 hits. `F.cross_entropy` plus an argmax made five vocabulary-sized passes
    more per chunk on 2 CPU cores (a float copy, a zero-filled gradient, the log-softmax backward, a bfloat16
    argmax): 126 -> 70 ms per 256 x 49,152 chunk."""

    @staticmethod
    def forward(ctx, logits, targets):
        probs, top, top_ids, target_logits = _shifted_copy(logits, targets)
        log_total = _softmax_shifted_(probs)
        hits = (top_ids == targets).sum()
        ctx.save_for_backward(probs, targets)
        ctx.logits_dtype = logits.dtype
        ctx.mark_non_differentiable(hits)
        return (top + log_total - target_logits).sum(), hits

    @staticmethod
    def backward(ctx, grad_ce, _):
        probs, targets = ctx.saved_tensors
        return _minus_one_hot_(probs.mul_(grad_ce), targets, grad_ce).to(ctx.logits_dtype), None


def cross_entropy_and_hits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-sum_n log softmax(z_n)[y_n], #{n : argmax z_n = y_n})`` over rows of ``(N, V)`` logits, the sum in float32
    (or wider) whatever their dtype; gradient ``softmax(z_n) - e_{y_n}``, rounded once to the logits' dtype."""
    return _CrossEntropyAndHits.apply(logits, targets)


class HeadLosses(NamedTuple):
    """Sums over the completion tokens: divergence, cross-entropy, and the count of top-1 hits (no gradient)."""

    kd_sum: torch.Tensor
    ce_sum: torch.Tensor
    num_correct: torch.Tensor


def chunked_head_losses(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    targets: torch.Tensor,
    student_head: LogitHead,
    teacher_head: LogitHead,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    kd_vocab_size: int | None = None,
    chunk_size: int = 256,
    recompute: bool = True,
    compile_options: dict | None = None,
) -> HeadLosses:
    """Distillation and cross-entropy sums from final hidden states of the completion tokens, chunk by chunk.

    ``student_hidden`` ``(N, H_s)``, ``teacher_hidden`` ``(N, H_t)`` (any device) and ``targets`` ``(N,)`` are the
    rows selected with `completion_positions`. Per chunk: ``z_s = student_head(h_s)``, ``z_t = teacher_head(h_t)``
    (no gradient); ``ce = -log_softmax(z_s)[target]`` over the student's whole vocabulary; the divergence over the
    first ``kd_vocab_size`` ids (the ids both heads share); forward KL at T = 1 over the student's whole
    vocabulary takes both from `forward_kl_and_ce`. With gradients enabled each chunk runs under
    `torch.utils.checkpoint` (with `recompute`): the backward pass recomputes that chunk's logits (both heads'
    matmuls) rather than storing them, so one chunk's ``chunk_size x V`` tensors are alive at a time. Without it
    every chunk's tensors stay alive until the backward pass, which then does not run the heads again. With
    `compile_options` (keyword arguments of `torch.compile`) the fused loss runs as compiled kernels
    (`compiled_losses`).
    """
    device = student_hidden.device

    def one_chunk(h_s: torch.Tensor, h_t: torch.Tensor, y: torch.Tensor):
        z_s = student_head(h_s).to(device)
        with torch.no_grad():
            z_t = teacher_head(h_t).to(device)
        vocab = kd_vocab_size or min(z_s.size(-1), z_t.size(-1))
        # one student log-softmax serves the CE and the divergence when neither the temperature nor the vocabulary
        # changes it (the usual case): a vocabulary-sized pass and its backward saved per chunk
        same = temperature == 1.0 and vocab == z_s.size(-1)
        if kind == "forward_kl" and same:
            if compile_options is not None:
                return compiled_forward_kl_and_ce(z_s, z_t[:, :vocab], y, **compile_options)
            return forward_kl_and_ce(z_s, z_t[:, :vocab], y)
        log_probs = tempered_log_softmax(z_s)
        ce = F.nll_loss(log_probs, y, reduction="sum")
        log_q = log_probs if same else tempered_log_softmax(z_s[:, :vocab], temperature)
        with torch.no_grad():
            log_p = tempered_log_softmax(z_t[:, :vocab], temperature)
        kd = log_prob_divergence(log_q, log_p, kind, beta).sum() * temperature**2
        correct = (log_probs.detach().argmax(-1) == y).sum()
        return kd, ce, correct

    return sum_over_chunks(one_chunk, (student_hidden, teacher_hidden, targets), chunk_size, recompute)


def chunked_ce_losses(student_hidden: torch.Tensor, targets: torch.Tensor, student_head: LogitHead,
                      chunk_size: int = 256, recompute: bool = True,
                      compile_options: dict | None = None) -> HeadLosses:
    """`chunked_head_losses` without a teacher: the cross-entropy sum ``-sum_t log_softmax(z_t)[y_t]`` and the top-1
    hits of the completion tokens from their final hidden states, chunk by chunk; ``kd_sum`` is 0."""
    device = student_hidden.device

    def one_chunk(h_s: torch.Tensor, y: torch.Tensor):
        z_s = student_head(h_s).to(device)
        if compile_options is not None:
            ce, hits = compiled_cross_entropy_and_hits(z_s, y, **compile_options)
        else:
            ce, hits = cross_entropy_and_hits(z_s, y)
        return ce.new_zeros(()), ce, hits

    return sum_over_chunks(one_chunk, (student_hidden, targets), chunk_size, recompute)


def sum_over_chunks(one_chunk, tensors, chunk_size: int, recompute: bool = True) -> HeadLosses:
    """`HeadLosses` summed over ``one_chunk(*chunk)`` for consecutive chunks of `chunk_size` rows of `tensors` (the
    first is the student's hidden states); with gradients enabled and `recompute` each chunk runs under
    `torch.utils.checkpoint`."""
    hidden = tensors[0]
    # Starting from zero * hidden keeps the result attached to the graph when there is no completion token.
    zero = hidden.sum().float() * 0.0
    kd_sum, ce_sum, num_correct = zero, zero, torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.size(0), chunk_size):
        args = tuple(t[start : start + chunk_size] for t in tensors)
        if recompute and torch.is_grad_enabled():
            kd, ce, correct = checkpoint(one_chunk, *args, use_reentrant=False, preserve_rng_state=False)
        else:
            kd, ce, correct = one_chunk(*args)
        kd_sum, ce_sum, num_correct = kd_sum + kd, ce_sum + ce, num_correct + correct
    return HeadLosses(kd_sum, ce_sum, num_correct)
