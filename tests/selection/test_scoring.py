"""Scoring machinery shared by JSD and IFD: the response-position LM head, batch fitting, sizes, vocabularies."""

import pytest
import torch
from fixtures import TOKEN_ROWS as ROWS
from fixtures import jsd_scorer as scorer
from fixtures import tiny_llama, tiny_tokenizer

from paser_hf.selection.scoring import (
    common_vocabulary,
    default_tokens_per_batch,
    longest_first,
    pad_token_id,
    scoring_sizes,
)


def test_head_fast_path_equals_full_logits():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    s = scorer(a, b)
    fast, _ = s.score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    assert s.original.plain_head and s.pruned.plain_head
    s.original.plain_head = s.pruned.plain_head = False
    full, _ = s.score_rows([r[0] for r in ROWS], [r[1] for r in ROWS], range(4))
    assert full == pytest.approx(fast, rel=1e-5, abs=1e-7)


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
    with caplog.at_level("WARNING", logger="paser_hf.selection.scoring"):
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


def test_scoring_sizes_resolve_none_to_the_device_default():
    assert scoring_sizes("cpu") == (4096, 64)
    assert scoring_sizes("cuda") == (65536, 256)
    assert scoring_sizes("cuda", 100, 7) == (100, 7)
    assert scoring_sizes(torch.device("cpu"), None, 9) == (4096, 9)


def test_pad_token_id_falls_back_to_eos_then_zero():
    tok = tiny_tokenizer()
    assert pad_token_id(tok) == tok.pad_token_id == 0
    tok = tiny_tokenizer(pad_token=False)
    assert pad_token_id(tok) == tok.eos_token_id == 2
    tok.eos_token = None
    assert pad_token_id(tok) == 0


def test_longest_first_is_stable():
    import numpy as np

    lengths = np.array([3, 7, 7, 1, 9])
    assert longest_first(np.array([0, 1, 2, 3, 4]), lengths).tolist() == [4, 1, 2, 0, 3]
    assert longest_first(np.array([3, 2, 0]), lengths).tolist() == [2, 0, 3]
