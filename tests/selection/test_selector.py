import warnings

import numpy as np
import pytest
from datasets import Dataset
from fixtures import DamagedOnDigits, base_config, make_selector, planted_rows, tiny_llama, tiny_tokenizer

from paser_hf.selection.schema import NOT_REACHED, REJECTED, SELECTED, SKIPPED_EMPTY, SKIPPED_TRUNCATED


def test_budget_goes_to_the_damaged_capability():
    data = Dataset.from_list(planted_rows())
    selector = make_selector(base_config(use_concept_graph=False))
    subset = selector(data)
    assert len(subset) == 9  # round(0.25 * 36)
    assert subset.column_names == data.column_names
    assert set(subset["topic"]) == {"math"}
    idx = selector.selected_indices_
    assert list(idx) == sorted(idx)  # original order
    assert subset["instruction"] == [data[int(i)]["instruction"] for i in idx]
    scores = selector.scores_
    jsd = np.array(scores["paser_jsd"])
    topic = np.array(data["topic"])
    assert (jsd[topic == "math"] > 0.05).all() and np.allclose(jsd[topic != "math"], 0.0, atol=1e-6)
    report = selector.report_.to_dict()
    assert report["num_rows"] == 36 and report["budget"] == 9 and report["k"] == 3
    math_cluster = [c for c in report["clusters"] if c["cds"] > 0]
    assert len(math_cluster) == 1 and math_cluster[0]["allocated"] == 9 and math_cluster[0]["selected"] == 9
    # inside the cluster rows are taken in descending IES order
    ies = np.array(scores["paser_ies"])
    chosen = ies[idx]
    rest = ies[(topic == "math") & ~np.isin(np.arange(36), idx)]
    assert chosen.min() >= rest.max()


def test_identical_models_fall_back_to_size_allocation():
    data = Dataset.from_list(planted_rows())
    model = tiny_llama(seed=0)
    selector = make_selector(base_config(use_concept_graph=False), pruned=model)
    selector.original_model = model
    with pytest.warns(UserWarning, match="CDS 0"):
        subset = selector(data)
    assert len(subset) == 9
    assert np.allclose(selector.scores_["paser_jsd"], 0.0, atol=1e-7)
    allocated = sorted(c.allocated for c in selector.report_.clusters)
    assert allocated == [3, 3, 3]
    assert selector.report_.allocation_fallback


def test_keep_scores_and_statuses():
    rows = planted_rows(6)
    rows[0]["output"] = "   "  # empty response
    data = Dataset.from_list(rows)
    selector = make_selector(base_config(keep_scores=True))
    subset = selector(data)
    assert {"paser_cluster", "paser_jsd", "paser_ies"} <= set(subset.column_names)
    status = selector.scores_["paser_status"]
    assert status[0] == SKIPPED_EMPTY
    assert set(status) <= {SELECTED, REJECTED, NOT_REACHED, SKIPPED_EMPTY}
    assert status.count(SELECTED) == len(subset) == 5  # 0.25 * 18 = 4.5 rounds half up
    assert np.isnan(selector.scores_["paser_jsd"][0])


def test_concept_graph_rejects_conflicting_rows():
    """Three damaged rows over a triangle of concepts: whatever the order, two are accepted and build two edges,
    and the third meets two known concepts with no edge between them, so it is rejected and its budget moves on."""
    triangle = [("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma")]
    rows = [{"instruction": f"plus sign, {a} particle, {b} particle.", "input": "", "output": "1", "topic": "math"} for a, b in triangle]
    rows += [r for r in planted_rows(6) if r["topic"] != "math"]
    data = Dataset.from_list(rows)
    selector = make_selector(base_config(budget=3))
    subset = selector(data)
    status = np.array(selector.scores_["paser_status"])
    concepts = selector.scores_["paser_concepts"]
    assert [sorted(c) for c in concepts[:3]] == [sorted(("plus sign", f"{a} particle", f"{b} particle")) for a, b in triangle]
    assert (status[:3] == REJECTED).sum() == 1 and (status[:3] == SELECTED).sum() == 2
    rejected = int(np.flatnonzero(status == REJECTED)[0])
    assert not selector.concept_graph_.is_consistent(concepts[rejected])
    assert len(subset) == 3 and subset["topic"].count("math") == 2
    assert sum(c.rejected for c in selector.report_.clusters) == 1


def test_truncated_rows_are_counted_and_cut_away_responses_skipped():
    rows = planted_rows(4)
    rows[1]["instruction"] = "Describe how to bake " + "very " * 40 + "good bread."
    data = Dataset.from_list(rows)
    selector = make_selector(base_config(max_length=60, budget=0.5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selector(data)
    assert selector.report_.num_truncated >= 1
    assert selector.scores_["paser_status"][1] == SKIPPED_TRUNCATED
    assert any("truncated" in str(w.message) for w in caught)


def test_fewer_candidates_than_budget_warns():
    rows = planted_rows(2)
    for row in rows[1:]:
        row["output"] = ""
    selector = make_selector(base_config(budget=3, num_clusters=2))
    with pytest.warns(UserWarning, match="fewer than the budget"):
        subset = selector(Dataset.from_list(rows))
    assert len(subset) == 1


@pytest.mark.parametrize(
    "data, message",
    [
        (Dataset.from_list([]), "empty"),
        (Dataset.from_list([{"text": "a"}]), "Cannot tell the dataset format"),
        (Dataset.from_list([{"instruction": "a", "output": "b", "paser_jsd": 1.0}]), "paser_jsd"),
    ],
)
def test_bad_datasets(data, message):
    with pytest.raises(ValueError, match=message):
        make_selector(base_config())(data)


def test_budget_above_rows_and_dataset_dict():
    from datasets import DatasetDict

    data = Dataset.from_list(planted_rows(2))
    with pytest.raises(ValueError, match="only 6"):
        make_selector(base_config(budget=10))(data)
    with pytest.raises(TypeError, match=r"selector\(dataset\['train'\]\)"):
        make_selector(base_config())(DatasetDict({"train": data}))


def test_vocabulary_mismatch_is_an_error():
    data = Dataset.from_list(planted_rows(2))
    selector = make_selector(base_config(), pruned=tiny_llama(vocab_size=200))
    with pytest.raises(ValueError, match="do not share a vocabulary"):
        selector(data)


def test_tokenizer_without_pad_token_and_left_padding():
    data = Dataset.from_list(planted_rows(4))
    reference = make_selector(base_config())
    reference(data)
    tok = tiny_tokenizer(pad_token=False)
    tok.padding_side = "left"
    other = make_selector(base_config())
    other.tokenizer = tok
    other.pruned_model = DamagedOnDigits(other.original_model, {tok.convert_tokens_to_ids(str(d)) for d in range(10)})
    other(data)
    assert np.allclose(reference.scores_["paser_jsd"], other.scores_["paser_jsd"], atol=1e-6)
    assert list(reference.selected_indices_) == list(other.selected_indices_)


def test_conversational_and_prompt_completion_formats():
    rows = planted_rows(4)
    conv = Dataset.from_list(
        [{"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]}
         for r in rows]
    )
    pc = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["instruction"]}],
          "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows]
    )
    alpaca = Dataset.from_list(rows)
    results = []
    for data in (conv, pc, alpaca):
        selector = make_selector(base_config())
        selector(data)
        results.append(np.array(selector.scores_["paser_jsd"]))
    # the same conversation in three formats is the same token sequence
    assert np.allclose(results[0], results[1]) and np.allclose(results[1], results[2])


def test_cache_dir_makes_a_rerun_reuse_scores(tmp_path, monkeypatch):
    data = Dataset.from_list(planted_rows(4))
    config = base_config(cache_dir=str(tmp_path))
    first = make_selector(config)
    first(data)
    assert any(p.name.startswith("paser-jsd-") for p in tmp_path.iterdir())

    from paser_hf.selection import divergence

    def fail(*args, **kwargs):
        raise AssertionError("JSD recomputed despite the cache")

    monkeypatch.setattr(divergence.JsdScorer, "score_rows", fail)
    second = make_selector(config)
    second(data)
    assert np.allclose(first.scores_["paser_jsd"], second.scores_["paser_jsd"])
