"""The teacher's stored top-k distributions: captured during PASER's scoring (selected rows only, cached under their
own key) and by `capture_teacher_topk`, against hand computations and the model's full log-probabilities."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from fixtures import base_config, make_selector, planted_rows, tiny_llama, tiny_tokenizer

from paser_hf.selection.prepare import prepare_dataset
from paser_hf.selection.teacher import capture_teacher_topk, sequence_hash, topk_with_tail

K = 4


def test_top_k_and_the_log_of_the_rest():
    logp = torch.log(torch.tensor([[0.125, 0.5, 0.125, 0.25]]))
    values, ids, tail = topk_with_tail(logp, 2)
    assert ids.tolist() == [[1, 3]]
    assert values.exp()[0].tolist() == pytest.approx([0.5, 0.25])
    assert tail.item() == pytest.approx(math.log(0.25))
    assert topk_with_tail(logp, 4)[2].item() == float("-inf")


def test_selection_stores_the_top_k_of_the_selected_rows_only():
    data = Dataset.from_list(planted_rows(4))
    plain = make_selector(base_config())
    plain(data)
    selector = make_selector(base_config(teacher_topk=K))
    subset = selector(data)
    assert list(selector.selected_indices_) == list(plain.selected_indices_)
    np.testing.assert_array_equal(selector.scores_["paser_jsd"], plain.scores_["paser_jsd"])
    assert len(subset) == len(selector.selected_indices_)
    assert subset.features["teacher_topk_ids"].feature.dtype == "uint16"
    assert subset.features["teacher_topk_logprobs"].feature.dtype == "float16"
    assert selector.report_.models["teacher_topk"]["k"] == K

    # every selected row against the teacher's full log-softmax over its tokenised row
    prepared = prepare_dataset(data, selector.tokenizer, selector.config, "alpaca", True)
    for row, index in zip(subset, selector.selected_indices_):
        ids, start = prepared[int(index)]["input_ids"], prepared[int(index)]["response_start"]
        assert row["teacher_topk_input_hash"] == sequence_hash(ids)
        assert (row["teacher_topk_start"], row["teacher_topk_count"]) == (start, len(ids) - start)
        with torch.no_grad():
            logp = torch.log_softmax(selector.original_model(input_ids=torch.tensor([ids])).logits[0, start - 1 : -1], -1)
        values, top, tail = topk_with_tail(logp, K)
        assert np.asarray(row["teacher_topk_ids"]).reshape(-1, K).tolist() == top.tolist()
        np.testing.assert_allclose(np.asarray(row["teacher_topk_logprobs"], np.float32).reshape(-1, K), values,
                                   rtol=1e-3)
        np.testing.assert_allclose(np.asarray(row["teacher_tail_logmass"], np.float32), tail, rtol=1e-3, atol=1e-3)


def test_the_plain_jsd_cache_is_kept_and_capture_has_its_own(tmp_path):
    data = Dataset.from_list(planted_rows(4))
    make_selector(base_config(cache_dir=str(tmp_path)))(data)
    plain = set(tmp_path.glob("paser-jsd-*.arrow"))
    make_selector(base_config(cache_dir=str(tmp_path), teacher_topk=K))(data)
    with_topk = set(tmp_path.glob("paser-jsd-*.arrow")) - plain
    assert plain and len(with_topk) == len(plain)
    make_selector(base_config(cache_dir=str(tmp_path)))(data)
    make_selector(base_config(cache_dir=str(tmp_path), teacher_topk=K))(data)
    assert set(tmp_path.glob("paser-jsd-*.arrow")) == plain | with_topk  # both found again, nothing rescored


def test_standalone_capture_covers_every_row_as_selection_does():
    data = Dataset.from_list(planted_rows(4))
    selector = make_selector(base_config(teacher_topk=K))
    subset = selector(data)
    full = capture_teacher_topk(data, tiny_llama(seed=0), tiny_tokenizer(), k=K, config=base_config())
    assert len(full) == len(data) and all(n > 0 for n in full["teacher_topk_count"])
    chosen = full.select(selector.selected_indices_)
    for column in ("teacher_topk_ids", "teacher_topk_input_hash", "teacher_topk_count"):
        assert chosen[column] == subset[column]
    with pytest.raises(ValueError, match="already has the teacher columns"):
        capture_teacher_topk(full, tiny_llama(seed=0), tiny_tokenizer(), k=K)
