import numpy as np
import pytest

from paser_hf.selection.allocation import allocate, largest_remainder, take_in_order


def test_largest_remainder_hand_computed():
    # quotas 10 * (0.5, 0.3, 0.2) = 5, 3, 2 exactly
    assert largest_remainder(10, np.array([5.0, 3.0, 2.0])).tolist() == [5, 3, 2]
    # quotas 7 * (1/3, 1/3, 1/3) = 2.33 each: floors 2,2,2, one left goes to the lowest index on a tie
    assert largest_remainder(7, np.array([1.0, 1.0, 1.0])).tolist() == [3, 2, 2]
    # quotas 10 * (0.46, 0.34, 0.2) = 4.6, 3.4, 2.0: floors 4, 3, 2, the spare one goes to the .6
    assert largest_remainder(10, np.array([0.46, 0.34, 0.2])).tolist() == [5, 3, 2]


def test_caps_and_overflow_handed_on_in_proportion():
    # 12 rows over CDS (4, 2, 2): 6, 3, 3, but cluster 0 holds 2 -> 4 spare rows go 2:2 to the others
    assert allocate(12, [4.0, 2.0, 2.0], [2, 10, 10]).tolist() == [2, 5, 5]
    # spare rows are split by CDS among the clusters with room (3:1)
    assert allocate(10, [6.0, 3.0, 1.0], [2, 100, 100]).tolist() == [2, 6, 2]


def test_zero_weight_clusters_only_get_leftovers_and_all_zero_falls_back_to_size():
    assert allocate(5, [1.0, 0.0], [10, 10]).tolist() == [5, 0]
    assert allocate(12, [1.0, 0.0], [10, 10]).tolist() == [10, 2]
    # quotas 9 * (10, 5, 15) / 30 = 3, 1.5, 4.5: floors 3, 1, 4; the tied spare row goes to the larger cluster
    assert allocate(9, [0.0, 0.0, 0.0], [10, 5, 15]).tolist() == [3, 1, 5]


@pytest.mark.parametrize("seed", range(20))
def test_sums_to_budget_and_respects_caps(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 12))
    weights = rng.random(k) * (rng.random(k) > 0.2)
    caps = rng.integers(0, 50, size=k)
    total = int(rng.integers(0, caps.sum() + 10))
    counts = allocate(total, weights, caps)
    assert counts.sum() == min(total, caps.sum())
    assert (counts <= caps).all() and (counts >= 0).all()
    if total <= caps[weights > 0].sum():
        # continuous water-filling x_i = min(cap_i, lam * w_i) with sum x = total; integers stay within 1 row of it
        lo, hi = 0.0, 1e9
        for _ in range(200):
            lam = (lo + hi) / 2
            lo, hi = (lam, hi) if np.minimum(caps, lam * weights).sum() < total else (lo, lam)
        assert np.abs(counts - np.minimum(caps, hi * weights)).max() < 1.0 + 1e-6


def test_bad_weights():
    with pytest.raises(ValueError, match="finite and >= 0"):
        allocate(3, [1.0, -1.0], [2, 2])


def test_take_in_order_fills_the_budget_within_one_row():
    order = [3, 1, 2, 0]
    assert take_in_order(order, [1, 1, 1, 1], 2).tolist() == [3, 1]  # rows: order[:B]
    costs = [5, 1, 10, 2]  # in order: row 3 costs 2, row 1 1, row 2 10, row 0 5
    assert take_in_order(order, costs, 3).tolist() == [3, 1]  # exactly 3
    assert take_in_order(order, costs, 4).tolist() == [3, 1, 2]  # 3 < 4, so row 2 is taken: 13
    assert take_in_order(order, costs, 100).tolist() == [3, 1, 2, 0]  # the whole order holds less
    assert take_in_order([], [], 5).tolist() == []
