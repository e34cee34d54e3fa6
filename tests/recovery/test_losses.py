"""The chunked distillation losses against a slow per-position reference."""

import pytest
import torch
from fixtures import assert_gradient_matches_finite_differences, reference_divergence

from paser_hf.recovery.losses import (
    LogitHead,
    chunked_ce_losses,
    chunked_head_losses,
    completion_positions,
    cross_entropy_and_hits,
    distillation_loss,
    divergence,
    forward_kl_and_ce,
)


def reference_loss(student_logits, teacher_logits, labels, kind, temperature, beta):
    total, count = 0.0, 0
    batch, length, _ = student_logits.shape
    for b in range(batch):
        for t in range(length - 1):
            if labels[b, t + 1] == -100:
                continue
            total += reference_divergence(student_logits[b, t], teacher_logits[b, t], kind, temperature, beta)
            count += 1
    return total / count


def masked_batch(batch=3, length=9, vocab=17, seed=0):
    """Random logits and labels with a prompt (first tokens) and right padding masked with -100."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, vocab, generator=gen) * 2
    teacher = torch.randn(batch, length, vocab, generator=gen) * 2
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    labels[:, :3] = -100
    labels[1, 6:] = -100
    labels[2, 4] = -100
    return student, teacher, labels


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_distillation_loss_matches_reference(kind, temperature):
    student, teacher, labels = masked_batch()
    beta = 0.3
    got = distillation_loss(student, teacher, labels, kind, temperature, beta, chunk_size=4)
    want = reference_loss(student, teacher, labels, kind, temperature, beta)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_divergence_of_identical_distributions_is_zero():
    logits = torch.randn(5, 11)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert divergence(logits, logits.clone(), kind).abs().max() < 1e-6


def test_divergence_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kd_loss"):
        divergence(torch.zeros(1, 3), torch.zeros(1, 3), "tvd")


def test_completion_positions_shift_labels():
    labels = torch.tensor([[-100, -100, 5, 6, -100]])
    mask, targets = completion_positions(labels)
    assert mask.tolist() == [[False, True, True, False]]
    assert targets.tolist() == [5, 6]


def unchunked_head_losses(h_s, h_t, targets, head_s, head_t, kind, temperature, beta, vocab):
    z_s, z_t = head_s(h_s), head_t(h_t).detach()
    ce = torch.nn.functional.cross_entropy(z_s, targets, reduction="sum")
    kd = divergence(z_s[:, :vocab], z_t[:, :vocab], kind, temperature, beta).sum()
    return kd, ce


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_head_losses_match_full_logits_values_and_gradients(kind, softcap):
    gen = torch.Generator().manual_seed(1)
    n, hidden, vocab_s, vocab_t = 13, 8, 23, 21
    h_s = torch.randn(n, hidden, generator=gen, dtype=torch.float64)
    h_t = torch.randn(n, hidden + 2, generator=gen, dtype=torch.float64)
    w_s = torch.randn(vocab_s, hidden, generator=gen, dtype=torch.float64)
    w_t = torch.randn(vocab_t, hidden + 2, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, vocab_s, (n,), generator=gen)
    head_t = LogitHead(w_t, softcap=softcap, scale=0.7)

    def run(chunked):
        hs, ws = h_s.clone().requires_grad_(), w_s.clone().requires_grad_()
        head_s = LogitHead(ws, softcap=softcap, scale=0.7)
        if chunked:
            out = chunked_head_losses(hs, h_t, targets, head_s, head_t, kind, 1.5, 0.4, vocab_t, chunk_size=4)
            kd, ce = out.kd_sum, out.ce_sum
        else:
            kd, ce = unchunked_head_losses(hs, h_t, targets, head_s, head_t, kind, 1.5, 0.4, vocab_t)
        (0.3 * kd + 0.7 * ce).backward()
        return kd.detach(), ce.detach(), hs.grad, ws.grad

    got, want = run(True), run(False)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)


def test_chunked_head_losses_without_completion_tokens_are_differentiable_zeros():
    h = torch.randn(0, 4, requires_grad=True)
    head = LogitHead(torch.randn(7, 4))
    out = chunked_head_losses(h, torch.randn(0, 4), torch.zeros(0, dtype=torch.long), head, head)
    out.kd_sum.backward()
    assert out.kd_sum.item() == 0.0 and out.ce_sum.item() == 0.0 and out.num_correct.item() == 0


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.3, 0.7)])
def test_forward_kl_and_ce_has_the_gradient_of_its_value(weights):
    gen = torch.Generator().manual_seed(2)
    z_s = torch.randn(40, 9, generator=gen, dtype=torch.float64)
    z_t = torch.randn(40, 9, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 9, (40,), generator=gen)

    def loss(z):
        kd, ce, _ = forward_kl_and_ce(z, z_t, y)
        return weights[0] * kd + weights[1] * ce

    assert_gradient_matches_finite_differences(loss, z_s)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.bfloat16, 8e-3)])
def test_forward_kl_and_ce_equals_the_composed_losses_in_float64(dtype, rtol):
    """Values in float32 whatever the logits' dtype; the gradient rounded once, to the logits' dtype. 70 rows: more
    than one block of the row-blocked divergence; some rows with logits near 100, where an unshifted exp overflows."""
    gen = torch.Generator().manual_seed(3)
    z_s, z_t = (torch.randn(70, 31, generator=gen).mul(3) for _ in range(2))
    z_s[::9] *= 30
    z_t[::7] *= 30
    z_s, z_t = z_s.to(dtype), z_t.to(dtype)
    y = torch.randint(0, 31, (70,), generator=gen)
    y[:5] = z_s[:5].float().argmax(-1)

    def run(fused):
        z = z_s.clone().requires_grad_() if fused else z_s.double().requires_grad_()
        if fused:
            kd, ce, hits = forward_kl_and_ce(z, z_t, y)
            assert hits.item() == int((z_s.float().argmax(-1) == y).sum()) >= 5 and not hits.requires_grad
        else:
            log_q, log_p = z.log_softmax(-1), z_t.double().log_softmax(-1)
            kd = (log_p.exp() * (log_p - log_q)).sum()
            ce = -log_q[torch.arange(len(y)), y].sum()
        (0.25 * kd + 0.75 * ce).backward()
        return kd.detach(), ce.detach(), z.grad

    got, want = run(True), run(False)
    assert got[0].dtype == torch.float32 and got[2].dtype == dtype
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1].double(), want[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2].double(), want[2], rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("loss", ["kd", "ce"])
def test_a_second_backward_through_the_fused_losses_raises(loss):
    """The backward passes overwrite the saved probabilities with the gradient: retaining the graph for a second
    backward must fail loudly, not give a wrong gradient."""
    z = torch.randn(4, 10, requires_grad=True)
    y = torch.tensor([1, 2, 3, 4])
    value = forward_kl_and_ce(z, torch.randn(4, 10), y)[0] if loss == "kd" else cross_entropy_and_hits(z, y)[0]
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        value.backward()


def test_cross_entropy_and_hits_has_the_gradient_of_its_value():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(6, 11, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 11, (6,), generator=gen)
    assert_gradient_matches_finite_differences(lambda logits: cross_entropy_and_hits(logits, y)[0], z)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.bfloat16, 8e-3)])
def test_cross_entropy_and_hits_equals_the_composed_loss_in_float64(dtype, rtol):
    """The sum in float32 whatever the logits' dtype, the gradient rounded once to it, hits = argmax matches."""
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(9, 37, generator=gen).mul(4).to(dtype)
    targets = torch.randint(0, 37, (9,), generator=gen)
    targets[:4] = logits[:4].float().argmax(-1)  # some hits for sure
    z = logits.clone().requires_grad_()
    ce, hits = cross_entropy_and_hits(z, targets)
    (0.5 * ce).backward()
    reference = logits.double().requires_grad_()
    want = torch.nn.functional.cross_entropy(reference, targets, reduction="sum")
    (0.5 * want).backward()
    assert ce.dtype == torch.float32 and z.grad.dtype == dtype and not hits.requires_grad
    torch.testing.assert_close(ce.double(), want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad.double(), reference.grad, rtol=rtol, atol=1e-6)
    assert hits.item() == int((logits.argmax(-1) == targets).sum()) >= 4


# the compiled kernels under dynamo's "eager" backend: its graphs, without inductor's code generation
COMPILED = {"backend": "eager"}


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("compile_options", [None, COMPILED])
def test_chunked_ce_matches_cross_entropy_of_full_logits(recompute, compile_options):
    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(10, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(23, 8, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 23, (10,), generator=gen)
    out = chunked_ce_losses(hidden, targets, LogitHead(weight), chunk_size=3, recompute=recompute,
                            compile_options=compile_options)
    out.ce_sum.backward()
    got = hidden.grad.clone()
    hidden.grad = None
    logits = hidden @ weight.T
    torch.nn.functional.cross_entropy(logits, targets, reduction="sum").backward()
    torch.testing.assert_close(out.ce_sum, torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
    torch.testing.assert_close(got, hidden.grad)
    assert out.kd_sum.item() == 0.0 and out.num_correct.item() == int((logits.argmax(-1) == targets).sum())


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("compile_options", [None, COMPILED])
def test_chunked_forward_kl_at_temperature_one_matches_full_logits(recompute, compile_options):
    """The case `forward_kl_and_ce` serves: forward KL, T = 1, the same vocabulary for both models."""
    gen = torch.Generator().manual_seed(4)
    n, hidden, vocab = 11, 8, 19
    h_s = torch.randn(n, hidden, generator=gen, dtype=torch.float64)
    h_t = torch.randn(n, hidden, generator=gen, dtype=torch.float64)
    head_t = LogitHead(torch.randn(vocab, hidden, generator=gen, dtype=torch.float64))
    w_s = torch.randn(vocab, hidden, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, vocab, (n,), generator=gen)

    def run(chunked):
        hs, ws = h_s.clone().requires_grad_(), w_s.clone().requires_grad_()
        if chunked:
            out = chunked_head_losses(hs, h_t, targets, LogitHead(ws), head_t, chunk_size=4, recompute=recompute,
                                      compile_options=compile_options)
            kd, ce = out.kd_sum, out.ce_sum
        else:
            kd, ce = unchunked_head_losses(hs, h_t, targets, LogitHead(ws), head_t, "forward_kl", 1.0, 0.5, vocab)
        (0.3 * kd + 0.7 * ce).backward()
        return kd.detach(), ce.detach(), hs.grad, ws.grad

    got, want = run(True), run(False)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)
