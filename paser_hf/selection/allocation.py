"""Budget allocation across clusters (paper Eq. 6, Algorithm 1).

    n_c = B * CDS(c) / sum_c' CDS(c')

made whole by largest remainders so that sum n_c = B exactly, each n_c capped at the cluster's capacity, and
whatever a cap cuts off handed on to the clusters with room left, in proportion to their weights. Clusters
with zero weight receive budget only when the weighted ones are full; if every weight is zero the split is
proportional to capacity instead.
"""

from __future__ import annotations

import numpy as np


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to `weights` that sum to `total` (Hamilton's method; ties go to the larger weight,
    then to the lower index)."""
    weights = np.asarray(weights, dtype=np.float64)
    if total == 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    quotas = total * weights / weights.sum()
    counts = np.floor(quotas).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        remainders = quotas - counts
        order = np.lexsort((np.arange(len(weights)), -weights, -remainders))
        counts[order[:short]] += 1
    return counts


def allocate(total: int, weights, capacity) -> np.ndarray:
    """Split `total` rows over clusters in proportion to `weights`, never giving a cluster more than `capacity`.

    Returns integer counts summing to min(total, sum(capacity)).
    """
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    if weights.shape != capacity.shape:
        raise ValueError("weights and capacity must have one entry per cluster.")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError(f"Allocation weights must be finite and >= 0, got {weights.tolist()}.")
    counts = np.zeros(len(weights), dtype=np.int64)
    remaining = min(int(total), int(capacity.sum()))
    while remaining > 0:
        room = capacity - counts
        open_ = room > 0
        w = np.where(open_, weights, 0.0)
        if w.sum() <= 0:
            w = np.where(open_, capacity.astype(np.float64), 0.0)
        share = np.minimum(largest_remainder(remaining, w), room)
        counts += share
        remaining -= int(share.sum())
    return counts


def take_in_order(order, costs, budget: int) -> np.ndarray:
    """The leading rows of `order` that fill `budget`: each row is taken while the cost of those before it is
    below the budget, so the total reaches `budget` and passes it by less than one row's cost (all of `order`
    when it holds less). With costs of 1 it is ``order[:budget]``."""
    order = np.asarray(order, dtype=np.int64)
    before = np.cumsum(np.asarray(costs, dtype=np.int64)[order]) - np.asarray(costs, dtype=np.int64)[order]
    return order[before < budget]
