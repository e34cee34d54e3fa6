import math

import pytest
import torch
from fixtures import tiny_llama, tiny_tokenizer

from paser_hf.selection.divergence import JsdScorer, common_vocabulary, default_tokens_per_batch, jensen_shannon


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


ROWS = [
    ([1, 10, 11, 12, 13, 14, 15], 4),
    ([1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30], 6),
    ([1, 40, 41], 2),
    ([1, 50, 51, 52, 53], 1),
]


def scorer(original, pruned, **kwargs):
    return JsdScorer(original, pruned, pad_token_id=0, vocab=261, **kwargs)


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


def test_head_fast_path_equals_full_logits():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    s = scorer(a, b)
    fast, _ = s.score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    assert s.original.plain_head and s.pruned.plain_head
    s.original.plain_head = s.pruned.plain_head = False
    full, _ = s.score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    assert full == pytest.approx(fast, rel=1e-5, abs=1e-7)


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


def test_vocabulary_checks():
    tok = tiny_tokenizer()
    a = tiny_llama(vocab_size=261)
    assert common_vocabulary(a, tiny_llama(vocab_size=261), tok) == 261
    assert common_vocabulary(a, tiny_llama(vocab_size=320), tok) == 261  # padding rows only
    with pytest.raises(ValueError, match="do not share a vocabulary"):
        common_vocabulary(tiny_llama(vocab_size=200), tiny_llama(vocab_size=261), tok)


def _oom_above(model, max_tokens, seen):
    """Make `model`'s body raise torch.OutOfMemoryError on any batch of more than `max_tokens` padded tokens."""

    def hook(module, args, kwargs):
        size = kwargs["input_ids"].numel()
        seen.append(size)
        if size > max_tokens:
            raise torch.OutOfMemoryError(f"fake: {size} tokens")

    model.model.register_forward_pre_hook(hook, with_kwargs=True)


def test_batches_halve_on_out_of_memory_until_they_fit(caplog):
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    rows = sorted(ROWS * 3, key=lambda r: -len(r[0]))  # 12 rows, longest first, as the selector orders them
    batch = {"input_ids": [r[0] for r in rows], "response_start": [r[1] for r in rows], "paser_index": list(range(12))}
    expected = scorer(a, b, tokens_per_batch=1)(batch)
    seen, progressed = [], []
    _oom_above(b, 30, seen)
    fitted = scorer(a, b, tokens_per_batch=200, progress=progressed.append)
    with caplog.at_level("WARNING", logger="paser_hf.selection.divergence"):
        out = fitted(batch)
    assert out["paser_jsd"] == pytest.approx(expected["paser_jsd"], rel=1e-5, abs=1e-7)
    assert out["paser_scored_tokens"] == expected["paser_scored_tokens"]
    # 200 -> 100 -> 50 -> 25: the first budget whose batches (rows x longest row) all fit in 30 tokens
    assert fitted.batches.tokens == 25
    assert [r.getMessage().split("at most ")[1].split()[0] for r in caplog.records] == ["100", "50", "25"]
    assert sum(progressed) == sum(len(r[0]) for r in rows)  # every row counted once, failed batches not at all
    assert sum(size > 30 for size in seen) == 3  # one failed batch per halving
    again = fitted(batch)  # the fitted size is kept: no more failures on the next .map batch
    assert again["paser_jsd"] == out["paser_jsd"] and len(caplog.records) == 3
    with pytest.raises(torch.OutOfMemoryError):  # a failed batch does not keep the original's hidden states
        fitted.score_rows(batch["input_ids"], batch["response_start"], batch["paser_index"])
    assert fitted.original.selected is None


def test_a_row_that_never_fits_names_itself():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    _oom_above(b, 8, [])
    batch = {"input_ids": [r[0] for r in ROWS], "response_start": [r[1] for r in ROWS], "paser_index": [7, 8, 9, 10]}
    with pytest.raises(torch.OutOfMemoryError, match="row 8 \\(12 tokens\\).*max_length"):
        scorer(a, b, tokens_per_batch=64)(batch)


def test_default_tokens_per_batch_depends_on_the_device():
    model = tiny_llama(seed=0)
    assert scorer(model, model).batches.tokens == 4096
    assert default_tokens_per_batch("cuda") == 65536 and default_tokens_per_batch(torch.device("cpu")) == 4096
