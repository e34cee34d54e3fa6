"""S²RIC, second step (paper Sec. 3.2, Eq. 3): symmetric NMF of a similarity on ψ, K by the elbow rule, and the
public entry point `cluster_instructions`.

Symmetric NMF (Ding, He & Simon 2005): S ≈ H Hᵀ with H ≥ 0 (N×K), by the damped multiplicative update
of Ding et al. with β = 1/2:  H ← H ∘ (1 − β + β (S H) / (H (HᵀH))). Its error is computed without
an N×N matrix: ‖S − HHᵀ‖² = ‖S‖² − 2 tr(HᵀSH) + ‖HᵀH‖². Cluster of row i = argmax_j H_ij.

S is the Gaussian kernel on ψ with σ = the median pairwise distance: an N×N array on the dense path, a
rank-r Nyström factor S ≈ ZZᵀ on the sparse path (O(N r) memory, S H = Z(ZᵀH)). A k-NN-sparsified S was
tried and rejected: a sparse S is far from any low-rank HHᵀ (relative error ≈ 0.97 for every K), so the
elbow rule saw no elbow; the smooth kernel gives the same curve shape on both paths.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans, kmeans_plusplus
from tqdm.auto import tqdm

from .config import PaserConfig
from .diffusion import diffusion_map
from .kernels import (
    check_embeddings,
    dense_gaussian,
    knn_gaussian,
    l2_normalise,
    median_sigma,
    pairwise_sq_distances,
)

#: Damping β of the multiplicative update (β = 1 is the plain update H ← H ∘ (S H) / (H (HᵀH))).
NMF_BETA = 0.5
#: The elbow curve is computed on a seeded subsample of at most this many rows of ψ (sparse path).
ELBOW_SAMPLE_ROWS = 20_000
#: Sparse path: landmarks of the Nyström factor of S, and rows whose pairwise distances estimate σ.
NYSTROM_LANDMARKS = 256
SIGMA_SAMPLE_ROWS = 2_000
_EPS = 1e-12


@dataclass
class NMFResult:
    """H (N, K), relative error ‖S − HHᵀ‖_F / ‖S‖_F, iterations run, and the error after each iteration."""

    H: np.ndarray
    relative_error: float
    iterations: int
    history: list


def squared_norm(S) -> float:
    """‖S‖_F² of a dense array or sparse matrix."""
    if isinstance(S, LowRankKernel):
        return S.squared_norm()
    data = S.data if sparse.issparse(S) else S
    return float(np.dot(data.ravel(), data.ravel()))


def nmf_squared_error(S_H: np.ndarray, H: np.ndarray, s_norm2: float) -> float:
    """‖S − HHᵀ‖_F² = ‖S‖² − 2 tr(HᵀSH) + ‖HᵀH‖², given S H; clipped at 0 against rounding."""
    gram = H.T @ H
    return max(0.0, s_norm2 - 2.0 * float(np.einsum("ij,ij->", H, S_H)) + float(np.einsum("ij,ij->", gram, gram)))


def initial_factor(psi: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Start of H: one-hot of a seeded k-means partition of ψ, plus 0.1 everywhere (MU keeps zeros at zero).

    Ding et al. show symmetric NMF is a relaxed kernel k-means, so this starts near a good solution and makes
    the error curve over K smooth; the NMF then moves the rows freely.
    """
    labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(psi)
    H = np.full((len(psi), k), 0.1)
    H[np.arange(len(psi)), labels] += 1.0
    return H


def symmetric_nmf(S, H: np.ndarray, max_iter: int, tol: float) -> NMFResult:
    """Minimise ‖S − HHᵀ‖_F over H ≥ 0 from the start H by the β = 1/2 multiplicative update.

    H is first rescaled by the optimal scalar α (α² = tr(HᵀSH) / ‖HᵀH‖²). Stops when the relative error
    drops by less than `tol` in one iteration, or after `max_iter` iterations.
    """
    s_norm2 = squared_norm(S)
    s_norm = np.sqrt(s_norm2) if s_norm2 > 0 else 1.0
    H = np.asarray(H, dtype=np.float64)
    S_H = np.asarray(S @ H)
    gram = H.T @ H
    H *= np.sqrt(max(float(np.einsum("ij,ij->", H, S_H)), _EPS) / max(float(np.einsum("ij,ij->", gram, gram)), _EPS))
    history = []
    previous = np.inf
    iterations = 0
    for iterations in range(1, max_iter + 1):
        S_H = np.asarray(S @ H)
        error = np.sqrt(nmf_squared_error(S_H, H, s_norm2)) / s_norm
        history.append(error)
        if previous - error < tol:
            break
        previous = error
        H *= (1.0 - NMF_BETA) + NMF_BETA * S_H / np.maximum(H @ (H.T @ H), _EPS)
    else:
        S_H = np.asarray(S @ H)
        history.append(np.sqrt(nmf_squared_error(S_H, H, s_norm2)) / s_norm)
    return NMFResult(H, float(history[-1]), iterations, history)


class LowRankKernel:
    """S ≈ Z Zᵀ (Z: N×r, float32), never formed: `S @ H` = Z (Zᵀ H) clipped at 0, ‖S‖² = ‖ZᵀZ‖²_F."""

    def __init__(self, Z: np.ndarray):
        self.Z = Z
        self.shape = (len(Z), len(Z))

    def __matmul__(self, H: np.ndarray) -> np.ndarray:
        product = self.Z @ (self.Z.T @ H.astype(np.float32))
        return np.maximum(product, 0.0).astype(np.float64)

    def rows(self, index: np.ndarray) -> LowRankKernel:
        """The kernel restricted to these rows and columns."""
        return LowRankKernel(self.Z[index])

    def squared_norm(self) -> float:
        gram = self.Z.T.astype(np.float64) @ self.Z
        return float(np.einsum("ij,ij->", gram, gram))


def nystrom_gaussian(psi: np.ndarray, seed: int) -> tuple[LowRankKernel, float]:
    """Nyström factor of the dense Gaussian S on ψ (σ = median pairwise distance of a seeded row sample).

    Landmarks L: k-means++ seeds of ψ (seeded). Z = K(ψ, L) U Λ^{-1/2} with K(L, L) = U Λ Uᵀ (eigenvalues
    below 1e-10 · max dropped), built in row blocks; S ≈ ZZᵀ is exact on the landmarks and O(N r) in memory.
    """
    rng = np.random.default_rng(seed)
    n = len(psi)
    sample = psi[rng.choice(n, min(n, SIGMA_SAMPLE_ROWS), replace=False)]
    d2 = pairwise_sq_distances(sample)
    sigma = median_sigma(np.sqrt(d2[np.triu_indices(len(sample), k=1)]))
    landmarks, _ = kmeans_plusplus(psi, min(n, NYSTROM_LANDMARKS), random_state=seed)
    values, vectors = np.linalg.eigh(_gaussian_block(landmarks, landmarks, sigma))
    keep = values > 1e-10 * values.max()
    projection = vectors[:, keep] / np.sqrt(values[keep])
    Z = np.empty((n, int(keep.sum())), dtype=np.float32)
    for start in range(0, n, 65_536):
        block = slice(start, min(n, start + 65_536))
        Z[block] = _gaussian_block(psi[block], landmarks, sigma) @ projection
    return LowRankKernel(Z), sigma


def _gaussian_block(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * sigma**2))


def similarity(psi: np.ndarray, dense: bool, seed: int, neighbours: int | None = None):
    """The similarity S on ψ (Sec. 3.2), Gaussian: exact N×N (dense path; σ = median distance, or the median k-NN
    distance with `neighbours`) or its Nyström factor (sparse path; σ = median distance). Returns (S, σ)."""
    if dense:
        return dense_gaussian(psi, neighbours)
    return nystrom_gaussian(psi, seed)


def _cut(curve: dict[int, float], k_prev: int, k: int) -> float:
    """The cut of the error from K−1 to K clusters as a fraction of the error at the smallest K tried.

    (A fraction of e(K−1) instead would grow without bound as the error nears 0 and split clean clusters.)
    """
    first = curve[min(curve)]
    return (curve[k_prev] - curve[k]) / first if first > 0 else 0.0


def elbow(curve: dict[int, float], tolerance: float) -> int | None:
    """The choice of K (Sec. 3.2): the smallest K after which adding a cluster cuts the relative error by less than
    `tolerance` · e(K_min) (a fraction of the error at the smallest K tried).

    "After which" looks at every later step of the curve, so a flat start (many equal clusters: the first
    splits gain little) cannot stop the search before the real drop. Returns None for an empty curve.
    """
    ks = sorted(curve)
    chosen = ks[-1] if ks else None
    for k_prev, k in reversed(list(pairwise(ks))):
        if _cut(curve, k_prev, k) >= tolerance:
            break
        chosen = k_prev
    return chosen


def error_curve(S, psi: np.ndarray, k_values: range, config: PaserConfig) -> dict[int, float]:
    """Relative NMF error ‖S − HHᵀ‖_F / ‖S‖_F for every K in `k_values`.

    The whole range is fitted: `elbow` looks past small cuts, which it can only do on a curve that did not stop
    at them. A curve stopped after 5 small cuts in a row made the elbow choose K = 2 on 2 of 5 seeds of the
    recovery benchmark's 2,000-row pool: the error fell by 3-5% of e(2) per step up to K = 7, then by 7-10%
    from K = 12 to 17, where the other 3 seeds found K = 17-18. The full curve gives K = 16-18 on all 5.
    """
    return {k: symmetric_nmf(S, initial_factor(psi, k, config.seed), config.nmf_max_iter,
                             config.nmf_tol).relative_error for k in k_values}


@dataclass
class ClusterResult:
    """Output of `cluster_instructions`; `to_dict()` is the JSON part (no per-row arrays)."""

    labels: np.ndarray
    k: int
    coordinates: np.ndarray
    k_curve: dict[int, float]
    method: str
    t: float
    lambda_2: float
    t_rule: str
    used_fallback: bool
    num_components: int
    eigenvalues: list
    num_nodes: int
    num_edges: int
    k_requested: int
    empty_clusters: int
    elbow_rows: int
    nmf_iterations: int
    nmf_error: float
    sigma_affinity: float
    sigma_similarity: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "k": int(self.k),
            "k_requested": int(self.k_requested),
            "empty_clusters": int(self.empty_clusters),
            "cluster_sizes": np.bincount(self.labels, minlength=self.k).tolist(),
            "k_curve": {int(k): float(v) for k, v in self.k_curve.items()},
            "elbow_rows": int(self.elbow_rows),
            "method": self.method,
            "t": float(self.t),
            "lambda_2": float(self.lambda_2),
            "t_rule": self.t_rule,
            "used_fallback": bool(self.used_fallback),
            "num_components": int(self.num_components),
            "eigenvalues": [float(v) for v in self.eigenvalues],
            "diffusion_dim": int(self.coordinates.shape[1]),
            "num_nodes": int(self.num_nodes),
            "num_edges": int(self.num_edges),
            "nmf_iterations": int(self.nmf_iterations),
            "nmf_error": float(self.nmf_error),
            "sigma_affinity": float(self.sigma_affinity),
            "sigma_similarity": float(self.sigma_similarity),
            "timings": {key: float(v) for key, v in self.timings.items()},
        }


def _use_dense(n: int, config: PaserConfig) -> bool:
    if config.clustering_method == "auto":
        return n <= config.dense_max_rows
    return config.clustering_method == "dense"


def _choose_k(S, psi: np.ndarray, config: PaserConfig) -> tuple[int, dict[int, float], int]:
    """(K, curve, rows used): fixed K capped by N, else the elbow over [min_clusters, min(max_clusters, N−1)].

    With no K in that range (N ≤ 2) K = min(min_clusters, N); with one, that K. On more than
    `ELBOW_SAMPLE_ROWS` rows the curve comes from a seeded row subsample of ψ and S (S restricted to those
    rows); the full NMF is then fitted once at the chosen K.
    """
    n = len(psi)
    if config.num_clusters is not None:
        return min(config.num_clusters, n), {}, 0
    upper = min(config.max_clusters, n - 1)
    if upper <= config.min_clusters:
        return min(config.min_clusters, n), {}, 0
    if n > ELBOW_SAMPLE_ROWS:
        pick = np.sort(np.random.default_rng(config.seed).choice(n, ELBOW_SAMPLE_ROWS, replace=False))
        S = S.rows(pick) if isinstance(S, LowRankKernel) else S[np.ix_(pick, pick)]
        psi = psi[pick]
    curve = error_curve(S, psi, range(config.min_clusters, upper + 1), config)
    return elbow(curve, config.elbow_tolerance), curve, len(psi)


def cluster_instructions(embeddings, config: PaserConfig | None = None) -> ClusterResult:
    """S²RIC (paper Sec. 3.2, Eqs. 2-3): cluster the rows of `embeddings` (N, D) into K groups.

    L2-normalise → Gaussian affinity → normalised Laplacian → diffusion coordinates ψ (d = diffusion_dim,
    t = 1/λ_2 with the disconnected-graph fallback) → Gaussian similarity S on ψ → symmetric NMF S ≈ HHᵀ →
    label = argmax of each row of H. K is `num_clusters` or the elbow of the relative-error curve. Dense
    (exact N×N) when 'dense', or 'auto' with N ≤ dense_max_rows; otherwise k-NN graphs and ARPACK.

    Departures from the paper, both measured on planted clusters (see the README): the affinity W takes σ
    from the k-NN distances on the dense path too (with the global median the clusters' eigenvalues sit so
    close to the noise's that e^{−tλ} hardly tells them apart and d = 16 coordinates are mostly noise); and
    the elbow looks at the whole curve (see `elbow`).

    Cost control on large N: the elbow curve is computed on a seeded subsample of `ELBOW_SAMPLE_ROWS` rows of
    ψ; each NMF starts from a seeded k-means of ψ and
    stops on `nmf_tol`. NMF columns that win no row are dropped and the labels renumbered 0..k−1 in column
    order (`k_requested`, `empty_clusters` record it). Deterministic for a given `config.seed`.
    """
    config = config or PaserConfig()
    x = check_embeddings(embeddings)
    n = len(x)
    dense = _use_dense(n, config)
    timings: dict[str, float] = {}
    bar = tqdm(total=5, desc="S2RIC clustering", disable=not config.show_progress, leave=False)

    def stage(name: str, start: float) -> float:
        timings[name] = time.perf_counter() - start
        bar.update(1)
        return time.perf_counter()

    start = time.perf_counter()
    bar.set_postfix_str("affinity")
    e = l2_normalise(x)
    if dense:
        weights, sigma_w = dense_gaussian(e, config.knn_neighbors)
        num_edges = n * (n - 1) // 2
    else:
        weights, sigma_w = knn_gaussian(e, config.knn_neighbors, metric="ip")
        num_edges = (weights.nnz - n) // 2
    del e
    start = stage("affinity", start)
    bar.set_postfix_str("diffusion map")
    dmap = diffusion_map(weights, config.diffusion_dim, seed=config.seed)
    del weights
    psi = dmap.coordinates
    start = stage("diffusion", start)
    bar.set_postfix_str("similarity")
    S, sigma_s = similarity(psi, dense, config.seed) if n > 1 else (np.ones((1, 1)), 1.0)
    start = stage("similarity", start)
    bar.set_postfix_str("choose K")
    k_requested, curve, elbow_rows = _choose_k(S, psi, config)
    start = stage("elbow", start)
    bar.set_postfix_str(f"NMF (K={k_requested})")
    if k_requested == 1:
        labels, iterations, error = np.zeros(n, dtype=np.int64), 0, 0.0
    else:
        fit = symmetric_nmf(S, initial_factor(psi, k_requested, config.seed), config.nmf_max_iter, config.nmf_tol)
        labels, iterations, error = fit.H.argmax(axis=1), fit.iterations, fit.relative_error
    del S
    _, labels = np.unique(labels, return_inverse=True)
    k = int(labels.max()) + 1
    stage("nmf", start)
    bar.close()
    return ClusterResult(
        labels=labels.astype(np.int64),
        k=k,
        coordinates=psi,
        k_curve=curve,
        method="dense" if dense else "sparse",
        t=dmap.t,
        lambda_2=dmap.lambda_2,
        t_rule=dmap.t_rule,
        used_fallback=dmap.t_rule != "lambda_2",
        num_components=dmap.num_components,
        eigenvalues=dmap.eigenvalues.tolist(),
        num_nodes=n,
        num_edges=int(num_edges),
        k_requested=int(k_requested),
        empty_clusters=int(k_requested - k),
        elbow_rows=int(elbow_rows),
        nmf_iterations=int(iterations),
        nmf_error=float(error),
        sigma_affinity=float(sigma_w),
        sigma_similarity=float(sigma_s),
        timings=timings,
    )
