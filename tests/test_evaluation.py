"""Perplexity and multiple-choice scoring against hand-computed values and slow per-token / per-choice references."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import fixtures
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from paser_hf.evaluation import (
    choice_loglikelihoods,
    continuation_tokens,
    load_mc_jsonl,
    multiple_choice_accuracy,
    perplexity,
)

CORPUS = [
    "Question: Which animal can fly? Answer: a bird can fly over the sea.",
    "The cat sat on the mat. A dog ran in the park and the bird sang.",
    "Plants need sunlight and water to grow; rocks do not grow at all.",
]
MC_ROWS = [
    {"query": "Question: Which animal can fly?", "choices": ["a bird", "a rock", "the cat sat"], "gold": 0},
    {"query": "Question: What do plants need?", "choices": ["sunlight and water", "rocks"], "gold": 1},
    {"query": "The dog ran in the", "choices": ["park", "sea", "mat", "water to grow"], "gold": 2},
]


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<eos>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    return fixtures.tiny_llama(vocab_size=vocab_size, max_positions=256, pad_token_id=None, init_std=0.3)


class UnigramLM(nn.Module):
    """A stub causal LM whose next-token log-probabilities are a fixed table, whatever the context."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(log_probs)
        self.config = SimpleNamespace(max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.table.expand(*input_ids.shape, -1))


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(len(tokenizer))


def test_perplexity_whole_text_window_equals_mean_nll(model, tokenizer):
    text = CORPUS[1]
    ids = tokenizer(text, return_tensors="pt").input_ids
    result = perplexity(model, tokenizer, text, max_length=ids.shape[1], show_progress=False)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    nll = -sum(float(log_probs[t, ids[0, t + 1]]) for t in range(ids.shape[1] - 1)) / (ids.shape[1] - 1)
    assert result["tokens"] == ids.shape[1] - 1 and result["windows"] == 1
    assert result["nll"] == pytest.approx(nll, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    with torch.no_grad():
        assert result["nll"] == pytest.approx(float(model(input_ids=ids, labels=ids).loss), rel=1e-5)


def test_sliding_windows_score_each_token_once_with_the_right_context(model, tokenizer):
    text = " ".join(CORPUS[:2])
    ids = tokenizer(text).input_ids
    max_length, stride = 12, 5
    result = perplexity(model, tokenizer, text, max_length=max_length, stride=stride, show_progress=False)
    assert result["tokens"] == len(ids) - 1
    nll = 0.0
    for t in range(1, len(ids)):  # token t is scored by the first window that ends after it
        begin = next(b for b in range(0, len(ids), stride) if b + max_length > t)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[begin : t + 1]])).logits[0, -2]
        nll -= float(torch.log_softmax(logits, dim=-1)[ids[t]])
    assert result["nll"] == pytest.approx(nll / (len(ids) - 1), rel=1e-5)


def test_window_bookkeeping_with_a_context_free_model(tokenizer):
    torch.manual_seed(1)
    log_probs = torch.log_softmax(torch.randn(len(tokenizer)), dim=-1)
    stub = UnigramLM(log_probs)
    text = CORPUS
    ids = tokenizer("\n\n".join(text)).input_ids
    every = -sum(float(log_probs[t]) for t in ids[1:]) / (len(ids) - 1)
    for max_length, stride in [(len(ids), None), (8, 1), (8, 3), (16, 15), (2, 1)]:
        result = perplexity(stub, tokenizer, text, max_length=max_length, stride=stride, show_progress=False)
        assert result["tokens"] == len(ids) - 1
        assert result["nll"] == pytest.approx(every, rel=1e-6)
    disjoint = perplexity(stub, tokenizer, text, max_length=10, show_progress=False)
    firsts = set(range(0, len(ids), 10))
    assert disjoint["windows"] == len(firsts)
    assert disjoint["tokens"] == len(ids) - len(firsts)
    kept = [float(log_probs[t]) for i, t in enumerate(ids) if i not in firsts]
    assert disjoint["nll"] == pytest.approx(-sum(kept) / len(kept), rel=1e-6)


def test_perplexity_rejects_bad_windows(model, tokenizer):
    for max_length, stride in [(8, 9), (8, 0), (1, 1)]:
        with pytest.raises(ValueError):
            perplexity(model, tokenizer, CORPUS[0], max_length=max_length, stride=stride, show_progress=False)


def test_mc_accuracy_and_acc_norm_on_controlled_loglikelihoods():
    words = ["Q", "w", "x", "yyyyyyyy", "zzzzzzzz", "other"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="other"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="other")
    probs = torch.tensor([0.0, math.exp(-1), math.exp(-3), math.exp(-2), math.exp(-2), 0.0], dtype=torch.float64)
    probs[[0, 5]] = (1 - probs.sum()) / 2
    stub = UnigramLM(probs.log().float())
    rows = [  # log p: w -1, x -3, yyyyyyyy -2, zzzzzzzz -2; acc_norm divides by UTF-8 bytes (not tokens or words)
        {"query": "Q", "choices": ["x", "yyyyyyyy zzzzzzzz"], "gold": 1},  # LL [-3, -4]; per byte [-3, -4/17]
        {"query": "Q", "choices": ["yyyyyyyy", "x x x"], "gold": 0},  # LL [-2, -9]; per byte [-2/8, -9/5]
        {"query": "Q", "choices": ["w", "yyyyyyyy"], "gold": 1},  # LL [-1, -2]; per byte [-1, -2/8]
    ]
    scores = choice_loglikelihoods(stub, tokenizer, rows, batch_size=2, show_progress=False)
    expected = [[-3.0, -4.0], [-2.0, -9.0], [-1.0, -2.0]]
    assert scores == [pytest.approx(e, abs=1e-5) for e in expected]
    result = multiple_choice_accuracy(stub, tokenizer, rows, show_progress=False)
    assert result == {"accuracy": pytest.approx(1 / 3), "acc_norm": 1.0, "n": 3}


def slow_choice_loglikelihood(model, tokenizer, query: str, choice: str) -> float:
    whole = tokenizer(query + " " + choice, add_special_tokens=False).input_ids
    context = tokenizer(query, add_special_tokens=False).input_ids
    assert whole[: len(context)] == context
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0], dim=-1)
    return sum(float(log_probs[t - 1, whole[t]]) for t in range(len(context), len(whole)))


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_loglikelihoods_equal_slow_per_choice_reference(model, tokenizer, batch_size):
    scores = choice_loglikelihoods(model, tokenizer, MC_ROWS, batch_size=batch_size, show_progress=False)
    for row, row_scores in zip(MC_ROWS, scores):
        reference = [slow_choice_loglikelihood(model, tokenizer, row["query"], c) for c in row["choices"]]
        assert row_scores == pytest.approx(reference, abs=1e-4)


def test_mc_accuracy_counts_reference_argmax(model, tokenizer):
    best = [
        max(
            range(len(r["choices"])),
            key=lambda i, r=r: slow_choice_loglikelihood(model, tokenizer, r["query"], r["choices"][i]),
        )
        for r in MC_ROWS
    ]
    rows = [dict(r, gold=b) for r, b in zip(MC_ROWS, best)]
    rows[0]["gold"] = (best[0] + 1) % len(rows[0]["choices"])
    result = multiple_choice_accuracy(model, tokenizer, rows, batch_size=4, show_progress=False)
    assert result["accuracy"] == pytest.approx(2 / 3) and result["n"] == 3


def test_limit_draws_a_seeded_subset(model, tokenizer):
    rows = [dict(r, gold=g) for r in MC_ROWS for g in (0, 1)]
    first = multiple_choice_accuracy(model, tokenizer, rows, limit=3, seed=5, show_progress=False)
    again = multiple_choice_accuracy(model, tokenizer, rows, limit=3, seed=5, show_progress=False)
    assert first["n"] == 3 and first == again


def test_trailing_space_moves_into_the_continuation(tokenizer):
    context, cont = continuation_tokens(tokenizer, "The dog ran in the ", "park")
    assert context == tokenizer("The dog ran in the", add_special_tokens=False).input_ids
    assert context + cont == tokenizer("The dog ran in the park", add_special_tokens=False).input_ids


def test_load_mc_jsonl_and_bad_rows(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in MC_ROWS) + "\n")
    assert load_mc_jsonl(path) == MC_ROWS
    path.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 2}) + "\n")
    with pytest.raises(ValueError, match="gold"):
        load_mc_jsonl(path)
    with pytest.raises(ValueError, match="choices"):
        multiple_choice_accuracy(None, None, [{"query": "q", "choices": "ab", "gold": 0}], show_progress=False)


SHARED_MC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mc"


@pytest.mark.skipif(not SHARED_MC.is_dir(), reason="../shared/data/mc (real benchmark rows) is absent")
def test_shared_mc_files_load():
    for name in ("arc_easy_test.jsonl", "boolq_val.jsonl", "piqa_val.jsonl", "openbookqa_test.jsonl"):
        rows = load_mc_jsonl(SHARED_MC / name)
        assert len(rows) >= 500


def test_eval_text_is_cut_to_whole_words_and_jsonl_rows_are_joined(tmp_path):
    from paser_hf.evaluation import read_eval_text

    (tmp_path / "t.txt").write_text("one two  three four")
    assert read_eval_text(tmp_path / "t.txt", max_words=3) == "one two  three"
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "a b"}) + "\n" + json.dumps({"text": "c"}) + "\n")
    assert read_eval_text(tmp_path / "t.jsonl") == "a b\n\nc"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="needs a 'text' string"):
        read_eval_text(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        read_eval_text(tmp_path / "missing.txt")


def test_table_drops_absent_columns_and_formats_numbers():
    from paser_hf.evaluation import format_table

    table = format_table([{"model": "a", "n": 1234, "ppl": 12.345}, {"model": "bb", "ppl": 1.5}],
                         ["model", "n", "ppl", "absent"])
    assert table.splitlines() == ["| model | n     | ppl   |", "|-------|-------|-------|",
                                  "| a     | 1,234 | 12.35 |", "| bb    | -     | 1.500 |"]
