"""Algorithm 1 (`run_algorithm`) on hand-made arrays, against hand computations; no model involved."""

import numpy as np

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
