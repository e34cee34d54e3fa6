"""PASER's selection walk (paper Algorithm 1, App. B) as one pure function over arrays.

1. Allocate the budget B over the clusters in proportion to their weights (the CDS, paper Eq. 6; `allocate`).
2. Walk the clusters by descending weight (ties: lower cluster id); in each, take candidate rows by descending
   priority (the IES, Eq. 7; ties: lower row index) until the cluster's allocation is accepted or it runs out.
   With concepts, a row is accepted only when its concepts are consistent with the concept graph built so far
   (Sec. 3.4), and it is then added to the graph; otherwise it is rejected and the next row is taken.
3. Allocate the budget still missing over the clusters that have candidates left, and walk again, until B is
   accepted or no candidate is left.

The budget is counted in row costs: 1 per row for the paper's row budget, the row's training tokens for a
token budget. A cluster takes rows while it is below its allocation, so with costs above 1 it can end up to one
row over; that overshoot is taken off the allocation of the clusters walked after it, so every cluster ends
within one row of its share and the total within one row of B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .allocation import allocate
from .concepts import ConceptGraph
from .schema import NOT_REACHED, REJECTED, SELECTED

ZERO_WEIGHT_FALLBACK = "every cluster has CDS 0 (identical models?): budget split in proportion to cluster sizes"


@dataclass
class AlgorithmResult:
    """What the walk did: a status per row (`SELECTED`, `REJECTED` or `NOT_REACHED`), per cluster the first
    allocation (in budget units), the rows accepted and rejected and the budget they fill (the sum of the
    accepted rows' costs), the concept graph of the accepted rows, and the fallback message when every weight
    was 0 (else None)."""

    status: np.ndarray
    first_allocation: np.ndarray
    accepted: np.ndarray
    rejected: np.ndarray
    filled: np.ndarray
    concept_graph: ConceptGraph
    fallback: Optional[str] = None

    @property
    def selected(self) -> np.ndarray:
        """Row indices accepted, ascending."""
        return np.flatnonzero(self.status == SELECTED)


def cluster_queues(labels: np.ndarray, k: int, priority: np.ndarray, candidates: np.ndarray) -> list:
    """Per cluster, its candidate rows by descending `priority`, ties by row index."""
    queues = []
    for c in range(k):
        members = np.flatnonzero((labels == c) & candidates)
        queues.append(members[np.lexsort((members, -priority[members]))])
    return queues


def run_algorithm(
    labels: np.ndarray,
    weights: np.ndarray,
    priority: np.ndarray,
    candidates: np.ndarray,
    budget: int,
    concepts: Optional[Sequence[Sequence[str]]] = None,
    costs: Optional[np.ndarray] = None,
) -> AlgorithmResult:
    """Algorithm 1 over N rows in K = len(`weights`) clusters.

    `labels` (N,) cluster of each row; `weights` (K,) >= 0 budget weights; `priority` (N,) order of rows inside
    a cluster, highest first; `candidates` (N,) bool, the rows that may be selected; `budget` B; `concepts` the
    concepts of each row, or None to accept rows without the consistency check; `costs` (N,) integers >= 1,
    what each row takes of B (None: 1 per row). When every cluster with candidates has weight 0 the budget is
    split in proportion to the clusters' candidate costs instead.
    """
    labels = np.asarray(labels, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    priority = np.asarray(priority, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=bool)
    costs = np.ones(len(labels), dtype=np.int64) if costs is None else np.asarray(costs, dtype=np.int64)
    if len(costs) != len(labels) or (costs[candidates] < 1).any():
        raise ValueError("costs must give every row an integer cost >= 1.")
    k = len(weights)
    queues = cluster_queues(labels, k, priority, candidates)
    sizes = np.array([len(q) for q in queues], dtype=np.int64)
    supply = np.array([int(costs[q].sum()) for q in queues], dtype=np.int64)
    fallback = None
    if sizes.sum() > 0 and not (weights[sizes > 0] > 0).any():
        fallback, weights = ZERO_WEIGHT_FALLBACK, supply.astype(np.float64)
    cluster_order = np.lexsort((np.arange(k), -weights))

    status = np.full(len(labels), NOT_REACHED, dtype=object)
    graph = ConceptGraph()
    taken = np.zeros(k, dtype=np.int64)
    used = np.zeros(k, dtype=np.int64)  # costs of the rows taken, accepted or not
    accepted = np.zeros(k, dtype=np.int64)
    rejected = np.zeros(k, dtype=np.int64)
    filled = np.zeros(k, dtype=np.int64)
    first_allocation = None
    while budget - filled.sum() > 0 and (sizes - taken).sum() > 0:
        share = allocate(budget - int(filled.sum()), weights, supply - used)
        if first_allocation is None:
            first_allocation = share.copy()
        overshoot = 0
        for c in cluster_order:
            goal = filled[c] + share[c] - overshoot
            while filled[c] < goal and taken[c] < sizes[c]:
                row = queues[c][taken[c]]
                taken[c] += 1
                used[c] += costs[row]
                if concepts is None or graph.try_add(concepts[row]):
                    status[row] = SELECTED
                    accepted[c] += 1
                    filled[c] += costs[row]
                else:
                    status[row] = REJECTED
                    rejected[c] += 1
            overshoot = max(0, int(filled[c] - goal))
    if first_allocation is None:
        first_allocation = np.zeros(k, dtype=np.int64)
    return AlgorithmResult(status, first_allocation, accepted, rejected, filled, graph, fallback)
