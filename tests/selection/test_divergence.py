import math

import pytest
import torch
from fixtures import TOKEN_ROWS as ROWS
from fixtures import jsd_scorer as scorer
from fixtures import tiny_llama

from paser_hf.selection.divergence import jensen_shannon


def reference_jsd(original, pruned, ids, start, temperature=1.0):
    """Slow reference: one row, full logits, float64 probabilities, sum p log2(p/m) over every vocabulary entry."""
    x = torch.tensor([ids])
    with torch.no_grad():
        z_o = original(input_ids=x).logits[0].double() / temperature
        z_p = pruned(input_ids=x).logits[0].double() / temperature
    values = []
    for t in range(max(start, 1), len(ids)):
        p = torch.softmax(z_o[t - 1], -1)
        q = torch.softmax(z_p[t - 1], -1)
        m = 0.5 * (p + q)
        kl_pm = sum(float(pi * math.log2(pi / mi)) for pi, mi in zip(p.tolist(), m.tolist()) if pi > 0)
        kl_qm = sum(float(qi * math.log2(qi / mi)) for qi, mi in zip(q.tolist(), m.tolist()) if qi > 0)
        values.append(0.5 * kl_pm + 0.5 * kl_qm)
    return sum(values) / len(values)


def test_closed_forms():
    p = torch.log(torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]]).clamp_min(1e-30))
    q = torch.log(torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.1, 0.9]]).clamp_min(1e-30))
    jsd = jensen_shannon(p, q)
    assert jsd[0].item() == pytest.approx(1.0, abs=1e-6)  # disjoint supports: one bit
    assert jsd[1].item() == pytest.approx(0.0, abs=1e-7)
    # 0.9/0.1 vs 0.1/0.9: M = (0.5, 0.5), JSD = 1 - H(0.9)
    h = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))
    assert jsd[2].item() == pytest.approx(1 - h, abs=1e-6)


def test_identical_models_give_zero():
    model = tiny_llama(seed=0)
    scores, counts = scorer(model, model).score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    assert scores == pytest.approx([0.0] * 4, abs=1e-7)
    assert counts == [3, 6, 1, 4]


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_slow_reference_and_is_symmetric(temperature):
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    fast, _ = scorer(a, b, temperature=temperature, chunk_tokens=3).score_rows(
        [r[0] for r in ROWS], [r[1] for r in ROWS], range(4)
    )
    swapped, _ = scorer(b, a, temperature=temperature).score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    slow = [reference_jsd(a, b, ids, start, temperature) for ids, start in ROWS]
    assert fast == pytest.approx(slow, rel=1e-4, abs=1e-6)
    assert swapped == pytest.approx(fast, rel=1e-5, abs=1e-7)
    assert all(0.0 < s <= 1.0 for s in fast)


def test_batch_composition_and_padding_do_not_matter():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    s = scorer(a, b)
    together, _ = s.score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    alone = [s.score_rows([ids], [start], [0])[0][0] for ids, start in ROWS]
    assert together == pytest.approx(alone, rel=1e-5, abs=1e-7)
    # the .map entry point packs rows by a token budget; a budget of one row per batch changes nothing
    batch = {"input_ids": [r[0] for r in ROWS], "response_start": [r[1] for r in ROWS], "paser_index": [0, 1, 2, 3]}
    out = scorer(a, b, tokens_per_batch=1)(batch)
    assert out["paser_jsd"] == pytest.approx(together, rel=1e-5, abs=1e-7)
    assert out["paser_scored_tokens"] == [3, 6, 1, 4]


def test_bf16_models_are_scored_in_float32():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    exact, _ = scorer(a, b).score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    low, _ = scorer(a.to(torch.bfloat16), b.to(torch.bfloat16)).score_rows(
        [r[0] for r in ROWS], [r[1] for r in ROWS], range(4)
    )
    assert low == pytest.approx(exact, rel=0.1)


def test_nan_logits_name_the_row():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    with torch.no_grad():
        b.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"pruned model .* row 17"):
        scorer(a, b).score_rows([ROWS[0][0]], [ROWS[0][1]], [17])
