import warnings
from pathlib import Path

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


def prepared_lengths(data, max_length=1024):
    from paser_hf.selection.prepare import PreparedRows, prepare_dataset

    cfg = base_config(max_length=max_length)
    return PreparedRows.of(prepare_dataset(data, tiny_tokenizer(), cfg, "alpaca", True)).lengths


def test_token_budget_is_met_within_one_row_and_rows_go_by_mean_jsd():
    data = Dataset.from_list(planted_rows())
    lengths = prepared_lengths(data)
    selector = make_selector(base_config(budget=0.1, budget_unit="tokens", use_concept_graph=False))
    subset = selector(data)
    report = selector.report_
    assert report.budget == round(0.1 * lengths.sum()) and report.budget_unit == "tokens"
    idx = selector.selected_indices_
    taken = lengths[idx].sum()
    assert report.budget <= taken < report.budget + lengths.max()
    assert report.tokens == {"pool": int(lengths.sum()), "pool_per_row": round(float(lengths.mean()), 2),
                             "selected": int(taken), "selected_per_row": round(float(lengths[idx].mean()), 2)}
    assert set(subset["topic"]) == {"math"}  # the only damaged capability gets the whole token budget
    jsd = np.array(selector.scores_["paser_jsd"])
    math_rows = np.flatnonzero(np.array(data["topic"]) == "math")
    left = np.setdiff1d(math_rows, idx)
    assert jsd[idx].min() >= jsd[left].max()  # by mean JSD, the value per token, not by IES
    (math_cluster,) = [c for c in report.clusters if c.cds > 0]
    assert math_cluster.filled == taken and math_cluster.selected_tokens == taken


def test_size_cds_weighs_each_cluster_by_its_size_times_cds():
    from paser_hf.selection.selector import allocation_weights

    labels = np.array([0, 0, 0, 1, 2, 2])
    candidates = np.array([True, True, True, True, True, False])
    cds = np.array([0.1, 0.4, 0.2])
    ones = np.ones(6, dtype=np.int64)
    assert allocation_weights(base_config(), cds, labels, ones, candidates).tolist() == cds.tolist()
    size_cds = base_config(allocation="size_cds")
    np.testing.assert_allclose(allocation_weights(size_cds, cds, labels, ones, candidates), [0.3, 0.4, 0.2])
    tokens = np.array([10, 20, 30, 5, 50, 99])  # the non-candidate row 5 does not count
    np.testing.assert_allclose(allocation_weights(size_cds, cds, labels, tokens, candidates), [6.0, 2.0, 10.0])


def test_concept_rejection_rate_is_reported_and_warned_above_30_percent():
    from paser_hf.selection.selector import rejection_rate

    status = np.array([SELECTED, REJECTED, NOT_REACHED, SELECTED, SKIPPED_EMPTY], dtype=object)
    assert rejection_rate(status) == pytest.approx(1 / 3)
    assert rejection_rate(np.array([NOT_REACHED], dtype=object)) is None
    # the triangle of test_concept_graph_rejects_conflicting_rows, three times over: 3 of 9 examined are rejected
    rows = []
    for word in ("red", "green", "blue"):
        rows += [{"instruction": f"plus sign, {word} {a} particle, {word} {b} particle.", "input": "", "output": "1",
                  "topic": "math"} for a, b in (("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma"))]
    selector = make_selector(base_config(budget=1.0, num_clusters=2))
    with pytest.warns(UserWarning, match="rejected 33% of the rows it examined"):
        selector(Dataset.from_list(rows))
    assert selector.report_.concept_rejection_rate == pytest.approx(1 / 3, abs=1e-4)
    assert "33.3% of the rows it examined were rejected" in selector.report_.to_markdown()


def test_concept_similarity_merges_phrases_with_the_selector_embedder(monkeypatch):
    from paser_hf.selection import selector as selector_module

    seen = {}

    def fake_merge(concepts, embedder, threshold, batch_size):
        seen.update(threshold=threshold, embedder=embedder)
        return [[] for _ in concepts]

    monkeypatch.setattr(selector_module, "merge_similar_concepts", fake_merge)
    selector = make_selector(base_config(concept_similarity=0.75))
    selector(Dataset.from_list(planted_rows(4)))
    assert seen["threshold"] == 0.75 and seen["embedder"] is selector.embedder
    assert all(c == [] for c in selector.scores_["paser_concepts"])


MIX_TRAIN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "instruct" / "mix_train.jsonl"


@pytest.mark.skipif(not MIX_TRAIN.is_file(), reason="../shared/data/instruct/mix_train.jsonl is absent")
def test_exactly_b_rows_on_mix_train_with_real_concepts():
    """300 real mix_train rows with their real RAKE concepts (instruction + input; responses cut to 100
    characters and tiny models, to keep the divergence cheap), half of them asked for: exactly B = 150 rows
    although the concept graph rejects some, and every cluster gets at least its first (Eq. 6) allocation
    unless it runs out of candidates."""
    import json
    import random

    lines = [line for line in MIX_TRAIN.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = [json.loads(line) for line in random.Random(0).sample(lines, 300)]
    data = Dataset.from_list([{"instruction": r["instruction"], "input": r["input"], "output": r["output"][:100]}
                              for r in rows])
    selector = make_selector(base_config(budget=0.5, num_clusters=4, max_length=1024))
    subset = selector(data)
    assert len(subset) == 150
    report = selector.report_
    assert 0 < report.concept_rejection_rate < 0.3
    for c in report.clusters:
        assert c.selected >= c.allocated or c.selected + c.rejected == c.candidates
