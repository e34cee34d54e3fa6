"""Algorithm 1 (`run_algorithm`) on hand-made arrays, against hand computations; no model involved."""

import numpy as np
import pytest

from paser_hf.selection.algorithm import ZERO_WEIGHT_FALLBACK, run_algorithm
from paser_hf.selection.schema import NOT_REACHED, REJECTED, SELECTED

S, R, N = SELECTED, REJECTED, NOT_REACHED


def test_budget_split_by_weight_and_rows_taken_by_priority():
    # cluster 0 (weight 0.3): rows 0, 2, 4, 6; cluster 1 (weight 0.1): rows 1, 3, 5, 7.
    # B = 4: quotas 4 * 0.3 / 0.4 = 3 and 1. Cluster 0 by priority: 4 (0.9), 0 (0.5), 6 (0.4), 2 (0.1);
    # cluster 1: 7 (0.8) first.
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    priority = np.array([0.5, 0.2, 0.1, 0.3, 0.9, 0.1, 0.4, 0.8])
    result = run_algorithm(labels, [0.3, 0.1], priority, np.ones(8, bool), budget=4)
    assert result.status.tolist() == [S, N, N, N, S, N, S, S]
    assert result.selected.tolist() == [0, 4, 6, 7]
    assert result.first_allocation.tolist() == [3, 1]
    assert result.accepted.tolist() == [3, 1] and result.rejected.tolist() == [0, 0]
    assert result.fallback is None


def test_equal_priorities_go_by_row_index_and_equal_weights_by_cluster_id():
    # B = 3 over equal weights: quotas 1.5 and 1.5, the remainder goes to the lower cluster id: [2, 1].
    labels = np.array([1, 1, 0, 0, 0, 1])
    result = run_algorithm(labels, [1.0, 1.0], np.zeros(6), np.ones(6, bool), budget=3)
    assert result.first_allocation.tolist() == [2, 1]
    assert result.selected.tolist() == [0, 2, 3]


def test_rejected_rows_hand_their_budget_on():
    # Cluster 0 (weight 0.75) holds a triangle of concepts: a-b, a-c, then b-c meets two known concepts with no
    # edge between them and is rejected. Round 1 allocates [3, 1] and accepts [2, 1]; round 2 gives the missing
    # row to cluster 1, the only one with candidates left, which accepts row 4; row 5 is never reached.
    labels = np.array([0, 0, 0, 1, 1, 1])
    priority = np.array([3.0, 2.0, 1.0, 3.0, 2.0, 1.0])
    concepts = [["a", "b"], ["a", "c"], ["b", "c"], ["x"], ["y"], ["z"]]
    result = run_algorithm(labels, [0.75, 0.25], priority, np.ones(6, bool), budget=4, concepts=concepts)
    assert result.status.tolist() == [S, S, R, S, S, N]
    assert result.first_allocation.tolist() == [3, 1]
    assert result.accepted.tolist() == [2, 2] and result.rejected.tolist() == [1, 0]
    graph = result.concept_graph
    assert (graph.num_nodes, graph.num_edges) == (5, 2)  # a, b, c, x, y; a-b and a-c
    assert not graph.is_consistent(["b", "c"])


def test_without_concepts_every_row_is_accepted():
    labels = np.array([0, 0, 0, 1, 1, 1])
    # the rows of test_rejected_rows_hand_their_budget_on, with concepts=None: allocation [3, 1] is met at once
    result = run_algorithm(labels, [0.75, 0.25], np.array([3.0, 2, 1, 3, 2, 1]), np.ones(6, bool), budget=4)
    assert result.status.tolist() == [S, S, S, S, N, N]
    assert result.concept_graph.num_nodes == 0


def test_zero_weight_clusters_get_budget_only_when_the_weighted_are_full():
    # allocate(4, [1, 0], room [2, 3]): cluster 0 takes its 2 rows, the other 2 go to cluster 1.
    labels = np.array([0, 0, 1, 1, 1])
    result = run_algorithm(labels, [1.0, 0.0], np.array([1.0, 2, 3, 2, 1]), np.ones(5, bool), budget=4)
    assert result.first_allocation.tolist() == [2, 2]
    assert result.selected.tolist() == [0, 1, 2, 3]
    assert result.fallback is None


def test_all_weights_zero_fall_back_to_candidate_counts():
    # weights -> candidate counts [1, 3]; B = 2: quotas 0.5 and 1.5, the tied remainder goes to the larger weight.
    labels = np.array([0, 1, 1, 1, 0])
    candidates = np.array([True, True, True, True, False])
    result = run_algorithm(labels, [0.0, 0.0], np.array([0.0, 1, 3, 2, 9]), candidates, budget=2)
    assert result.fallback == ZERO_WEIGHT_FALLBACK
    assert result.first_allocation.tolist() == [0, 2]
    assert result.status.tolist() == [N, N, S, S, N]


def test_non_candidates_are_never_taken_and_a_short_supply_stops_the_walk():
    labels = np.array([0, 0, 1, 1])
    candidates = np.array([True, False, False, True])
    result = run_algorithm(labels, [0.5, 0.5], np.array([0.0, 9.0, 9.0, 0.0]), candidates, budget=4)
    assert result.selected.tolist() == [0, 3]
    assert result.status.tolist() == [S, N, N, S]
    assert result.first_allocation.tolist() == [1, 1]


def test_no_candidates_allocates_nothing():
    result = run_algorithm(np.array([0, 1]), [0.0, 0.0], np.zeros(2), np.zeros(2, bool), budget=1)
    assert result.selected.tolist() == [] and result.first_allocation.tolist() == [0, 0]
    assert result.fallback is None


def test_token_costs_overshoot_is_taken_from_the_clusters_walked_later():
    # Cluster 0 (rows 0-2, 40 tokens each) and cluster 1 (rows 3-8, 10 tokens each), equal weights, B = 100
    # tokens: shares [50, 50]. Cluster 0 takes row 0 (40 < 50) and row 1 (80): 30 over its share, so cluster 1's
    # goal is 50 - 30 = 20 and it takes rows 3 and 4. Total 100 = B.
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    costs = np.array([40, 40, 40, 10, 10, 10, 10, 10, 10])
    priority = -np.arange(9.0)
    result = run_algorithm(labels, [1.0, 1.0], priority, np.ones(9, bool), budget=100, costs=costs)
    assert result.first_allocation.tolist() == [50, 50]
    assert result.selected.tolist() == [0, 1, 3, 4]
    assert result.filled.tolist() == [80, 20] and result.accepted.tolist() == [2, 2]


def test_row_costs_of_one_are_the_row_budget():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    priority = np.array([0.5, 0.2, 0.1, 0.3, 0.9, 0.1, 0.4, 0.8])
    rows = run_algorithm(labels, [0.3, 0.1], priority, np.ones(8, bool), budget=4)
    ones = run_algorithm(labels, [0.3, 0.1], priority, np.ones(8, bool), budget=4, costs=np.ones(8, int))
    assert rows.status.tolist() == ones.status.tolist() and rows.filled.tolist() == rows.accepted.tolist()


def test_costs_below_one_are_refused():
    with pytest.raises(ValueError, match="cost >= 1"):
        run_algorithm(np.array([0, 0]), [1.0], np.zeros(2), np.ones(2, bool), budget=1, costs=np.array([1, 0]))


def random_case(rng, n=60, k=4, vocabulary=12):
    labels = rng.integers(0, k, n)
    weights = rng.random(k) * (rng.random(k) > 0.2)
    candidates = rng.random(n) > 0.1
    concepts = [list(rng.choice(vocabulary, size=rng.integers(0, 4), replace=False).astype(str)) for _ in range(n)]
    return labels, weights, rng.random(n), candidates, concepts


def test_a_token_budget_ends_within_one_row_and_each_cluster_within_one_row_of_its_share():
    rng = np.random.default_rng(0)
    for _ in range(200):
        labels, weights, priority, candidates, concepts = random_case(rng)
        costs = rng.integers(1, 50, len(labels))
        budget = int(rng.integers(1, costs[candidates].sum() + 1))
        result = run_algorithm(labels, weights, priority, candidates, budget, concepts, costs)
        widest = costs[candidates].max()
        selected_cost = costs[result.selected].sum()
        assert selected_cost == result.filled.sum() < budget + widest
        exhausted = [((labels == c) & candidates & (result.status == NOT_REACHED)).sum() == 0 for c in range(4)]
        if not all(exhausted):  # a cluster with rows left stopped only once B was reached
            assert selected_cost >= budget
        for c in range(4):
            assert exhausted[c] or result.filled[c] > result.first_allocation[c] - widest


def test_under_a_row_budget_the_hand_on_only_adds():
    """Every cluster gets at least its first (Eq. 6) allocation unless it runs out of consistent candidates."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        labels, weights, priority, candidates, concepts = random_case(rng)
        budget = int(rng.integers(1, candidates.sum() + 1))
        result = run_algorithm(labels, weights, priority, candidates, budget, concepts)
        for c in range(4):
            left = ((labels == c) & candidates & (result.status == NOT_REACHED)).sum()
            assert result.accepted[c] >= result.first_allocation[c] or left == 0
        assert len(result.selected) <= budget
        if (result.status[candidates] == NOT_REACHED).any():
            assert len(result.selected) == budget
