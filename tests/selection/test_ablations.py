"""The ablation switches of PaserDatasetSelector (paper Table 4), on the planted-topic data of test_selector."""

import numpy as np
from datasets import Dataset
from fixtures import base_config, make_selector, planted_rows

from paser_hf.selection import selector as selector_module
from paser_hf.selection.schema import REJECTED, SELECTED


def topic_pure(labels, topics):
    return all(len(set(labels[topics == t])) == 1 for t in set(topics))


def test_without_clustering_labels_are_random_with_the_same_k():
    data = Dataset.from_list(planted_rows())
    topics = np.array(data["topic"])
    settings = dict(num_clusters=None, use_concept_graph=False)
    full = make_selector(base_config(**settings))
    full(data)
    runs = []
    for _ in range(2):
        selector = make_selector(base_config(use_clustering=False, **settings))
        selector(data)
        runs.append(np.array(selector.scores_["paser_cluster"]))
    k = selector.clustering_.k
    assert selector.report_.k == k == full.report_.k
    assert len(selector.report_.clusters) == k and sum(c.size for c in selector.report_.clusters) == len(data)
    labels = runs[0]
    assert labels.min() >= 0 and labels.max() < k and len(set(labels)) == k
    assert np.array_equal(runs[0], runs[1])  # seeded
    assert topic_pure(np.asarray(selector.clustering_.labels), topics)  # the real clustering finds the topics ...
    assert not topic_pure(labels, topics)  # ... the ablation's labels do not follow it


def test_without_degradation_allocation_budget_is_equal_and_order_random():
    data = Dataset.from_list(planted_rows())
    selector = make_selector(base_config(budget=10, use_degradation_allocation=False, use_concept_graph=False))
    subset = selector(data)
    clusters = selector.report_.clusters
    allocated = np.array([c.allocated for c in clusters])
    assert allocated.sum() == 10 and allocated.max() - allocated.min() <= 1  # no cap binds: 12 rows per cluster
    assert [c.selected for c in clusters] == allocated.tolist()
    assert set(subset["topic"]) == {"math", "cook", "code"}  # the damaged topic does not take the whole budget

    labels = np.array(selector.scores_["paser_cluster"])
    ies = np.array(selector.scores_["paser_ies"])
    rng = np.random.default_rng(0)
    in_random_order, by_ies = [], []
    for c in range(len(clusters)):
        members = np.flatnonzero(labels == c)
        in_random_order.extend(rng.permutation(members)[: allocated[c]])
        by_ies.extend(members[np.argsort(-ies[members], kind="stable")][: allocated[c]])
    assert sorted(in_random_order) == selector.selected_indices_.tolist()
    assert sorted(by_ies) != selector.selected_indices_.tolist()


def test_without_concept_graph_nothing_is_rejected(monkeypatch):
    """The triangle of concepts that makes the concept graph reject a row (test_selector) is accepted whole."""

    def no_concepts(prepared, config):
        raise AssertionError("concepts were extracted with use_concept_graph=False")

    monkeypatch.setattr(selector_module, "extract_concepts", no_concepts)
    triangle = [("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma")]
    rows = [{"instruction": f"plus, {a}, {b}.", "input": "", "output": "1", "topic": "math"} for a, b in triangle]
    rows += [r for r in planted_rows(6) if r["topic"] != "math"]
    selector = make_selector(base_config(budget=3, use_concept_graph=False))
    subset = selector(Dataset.from_list(rows))
    status = selector.scores_["paser_status"]
    assert REJECTED not in status and status[:3] == [SELECTED] * 3
    assert subset["topic"] == ["math"] * 3
    assert all(c == [] for c in selector.scores_["paser_concepts"])
    assert selector.report_.concept_graph == {"nodes": 0, "edges": 0}
    assert sum(c.rejected for c in selector.report_.clusters) == 0
