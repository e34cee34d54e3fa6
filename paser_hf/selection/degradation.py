"""The scores of capability degradation-aware selection (paper Sec. 3.3): per cluster and per row."""

from __future__ import annotations

import numpy as np


def capability_degradation(jsd: np.ndarray, labels: np.ndarray, k: int, candidates: np.ndarray) -> np.ndarray:
    """CDS(c) = mean JSD of the candidate rows of cluster c (paper Eq. 4); 0 for a cluster without candidates."""
    members = [(labels == c) & candidates for c in range(k)]
    return np.array([float(jsd[m].mean()) if m.any() else 0.0 for m in members])


def individual_efficiency(jsd: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """IES = JSD / log(cost), cost = (|x| + |y|)^2 in tokens (paper Eq. 7); lengths below 2 count as 2 so log > 0."""
    return jsd / np.log(np.maximum(lengths, 2).astype(np.float64) ** 2)
