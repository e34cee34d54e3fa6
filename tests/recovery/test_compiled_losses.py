"""The compiled fused losses against the eager ones, a float64 reference and finite differences."""

import pytest
import torch
from fixtures import assert_gradient_matches_finite_differences

from paser_hf.recovery.compiled_losses import compiled_cross_entropy_and_hits, compiled_forward_kl_and_ce
from paser_hf.recovery.losses import cross_entropy_and_hits, forward_kl_and_ce


@pytest.fixture(autouse=True)
def fresh_compiler_caches():
    """Each test compiles its own graphs: dynamo keeps a few per function, then runs it uncompiled."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def logits(rows, vocab, seed, dtype=torch.float32):
    """Random logits, every fourth row scaled into the range where an unshifted exp overflows."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, vocab, generator=gen).mul(3)
    z[::4] *= 30
    return z.to(dtype)


def kl_and_ce(fused, z_s, z_t, y, weights=(0.25, 0.75)):
    z = z_s.clone().requires_grad_()
    kd, ce, hits = fused(z, z_t, y)
    (weights[0] * kd + weights[1] * ce).backward()
    return kd.detach(), ce.detach(), hits, z.grad


def ce_only(fused, z_s, y):
    z = z_s.clone().requires_grad_()
    ce, hits = fused(z, y)
    (0.5 * ce).backward()
    return ce.detach(), hits, z.grad


def test_inductors_kernels_equal_the_eager_fused_losses():
    """bfloat16 logits, as under autocast, at two row counts (the second compiles the rows dimension dynamic): the
    sums in float32 within float32 rounding, the same hits, gradients within one bfloat16 rounding."""
    for rows, seed in ((8, 0), (5, 1)):
        z_s, z_t = logits(rows, 300, seed, torch.bfloat16), logits(rows, 300, seed + 10, torch.bfloat16)
        y = torch.randint(0, 300, (rows,), generator=torch.Generator().manual_seed(seed))
        y[:2] = z_s[:2].float().argmax(-1)
        got = kl_and_ce(compiled_forward_kl_and_ce, z_s, z_t, y)
        want = kl_and_ce(forward_kl_and_ce, z_s, z_t, y)
        for a, b in zip(got[:2], want[:2]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
        assert got[2].item() == want[2].item() >= 2 and not got[2].requires_grad
        assert got[3].dtype == torch.bfloat16
        torch.testing.assert_close(got[3], want[3], rtol=8e-3, atol=1e-6)
        got, want = ce_only(compiled_cross_entropy_and_hits, z_s, y), ce_only(cross_entropy_and_hits, z_s, y)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-4)
        assert got[1].item() == want[1].item() >= 2
        torch.testing.assert_close(got[2], want[2], rtol=8e-3, atol=1e-6)


def eager_backend(fused):
    return lambda *args: fused(*args, backend="eager")


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.3, 0.7)])
def test_compiled_forward_kl_and_ce_has_the_gradient_of_its_value(weights):
    z_s, z_t = logits(12, 9, 2, torch.float64), logits(12, 9, 3, torch.float64)
    y = torch.randint(0, 9, (12,), generator=torch.Generator().manual_seed(2))

    def loss(z):
        kd, ce, _ = compiled_forward_kl_and_ce(z, z_t, y, backend="eager")
        return weights[0] * kd + weights[1] * ce

    assert_gradient_matches_finite_differences(loss, z_s)


def test_compiled_cross_entropy_has_the_gradient_of_its_value():
    z = logits(6, 11, 5, torch.float64)
    y = torch.randint(0, 11, (6,), generator=torch.Generator().manual_seed(5))
    assert_gradient_matches_finite_differences(
        lambda x: compiled_cross_entropy_and_hits(x, y, backend="eager")[0], z)


def test_compiled_losses_equal_the_composed_losses_in_float64():
    z_s, z_t = logits(10, 31, 3, torch.float64), logits(10, 31, 4, torch.float64)
    y = torch.randint(0, 31, (10,), generator=torch.Generator().manual_seed(3))
    kd, ce, hits, _ = kl_and_ce(eager_backend(compiled_forward_kl_and_ce), z_s, z_t, y)
    log_q, log_p = z_s.log_softmax(-1), z_t.log_softmax(-1)
    torch.testing.assert_close(kd, (log_p.exp() * (log_p - log_q)).sum(), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(ce, -log_q[torch.arange(10), y].sum(), rtol=1e-12, atol=1e-10)
    assert hits.item() == int((z_s.argmax(-1) == y).sum())


def test_a_second_backward_through_the_compiled_losses_gives_the_same_gradient():
    """They keep the logits, not probabilities that the backward pass overwrites."""
    z = torch.randn(4, 10, requires_grad=True)
    kd, ce, _ = compiled_forward_kl_and_ce(z, torch.randn(4, 10), torch.tensor([1, 2, 3, 4]), backend="eager")
    (kd + ce).backward(retain_graph=True)
    first = z.grad.clone()
    (kd + ce).backward()
    torch.testing.assert_close(z.grad, 2 * first)
