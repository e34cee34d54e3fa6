"""S²RIC steps 1-5 (spec section 1): affinity graph, normalised Laplacian and diffusion coordinates ψ.

Dense path (exact, N×N): `W_ij = exp(-‖e_i − e_j‖² / 2σ²)` with σ the median k-NN distance (as the sparse path),
`L = I − D^{-1/2} W D^{-1/2}`, all eigenpairs by LAPACK. Sparse path (large N): the same Gaussian on the
edges of a symmetrised k-nearest-neighbour graph (σ = median neighbour distance, self-loops kept so
`W_ii = 1` as in the dense form), and the d+1 largest eigenpairs of the normalised adjacency
`A = D^{-1/2} W D^{-1/2}` (= the d+1 smallest of `L = I − A`) by ARPACK. The exact null space of `L`
(`D^{1/2} 1` on each connected component) is written down and deflated first, so a k-NN graph with
several components never asks Lanczos for a multiple eigenvalue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, eigsh

#: An eigenvalue of L at or below this counts as zero (spec step 4 fallback). By Cheeger's inequality a
#: cluster with λ <= 1e-3 has a boundary of at most ~4.5% of its volume: "almost a component". A smaller
#: tolerance let one near-disconnected cluster (λ ~ 1e-5) set t ~ 1e5 and wipe out every other coordinate.
ZERO_EIGENVALUE_TOL = 1e-3
#: Below this many rows the k-NN search is exact (blocked matmul); above it, a faiss HNSW graph.
EXACT_KNN_MAX_ROWS = 10_000
#: HNSW settings: links per node, construction and search beam widths (measured recall ≈ 0.97 at k=16).
HNSW_LINKS, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 16, 64, 64
_EXACT_BLOCK_ROWS = 2048


def check_embeddings(embeddings) -> np.ndarray:
    """Return the embeddings as a float32 (N, D) array, or raise ValueError naming the problem."""
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (N, D) array; got shape {array.shape}.")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"embeddings must have at least one row and one column; got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"embeddings must be real numbers; got dtype {array.dtype}.")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"embeddings contain NaN or inf in {rows.size} row(s), e.g. row {int(rows[0])}.")
    return array


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Spec step 1: e_i / ‖e_i‖ (a new float32 array; the input is left alone)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(
            f"{zero.size} embedding row(s) are all zeros (e.g. row {int(zero[0])}); they have no direction."
        )
    return (embeddings / norms).astype(np.float32, copy=False)


def median_sigma(distances: np.ndarray) -> float:
    """σ = median distance; if that is 0 (mostly duplicates) the largest distance, or 1 when all coincide."""
    sigma = float(np.median(distances)) if distances.size else 0.0
    if sigma <= 0:
        sigma = float(distances.max()) if distances.size else 0.0
    return sigma if sigma > 0 else 1.0


def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    """Dense ‖x_i − x_j‖² (float64, clipped at 0) from the Gram matrix."""
    x = x.astype(np.float64, copy=False)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def dense_gaussian(x: np.ndarray, neighbours: int | None = None) -> tuple[np.ndarray, float]:
    """Dense `exp(-‖x_i − x_j‖² / 2σ²)`.

    σ is the median off-diagonal pairwise distance (spec step 2) when `neighbours` is None; otherwise the
    median distance from each row to its `neighbours` nearest other rows, the same σ the sparse k-NN path
    uses. The affinity of step 2 uses the latter (a departure from the spec, see `cluster_instructions`).
    """
    d2 = pairwise_sq_distances(x)
    if neighbours is None or len(x) < 2:
        sigma = median_sigma(np.sqrt(d2[np.triu_indices(len(x), k=1)]))
    else:
        k = min(neighbours, len(x) - 1)
        off = d2 + np.diag(np.full(len(x), np.inf))
        sigma = median_sigma(np.sqrt(np.partition(off, k - 1, axis=1)[:, :k]))
    return np.exp(-d2 / (2.0 * sigma**2)), sigma


def knn_search(x: np.ndarray, k: int, metric: str = "ip") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other rows of each row: (indices (N, k) int64, squared distances (N, k) float64).

    metric "ip" expects L2-normalised rows (‖a − b‖² = 2 − 2 a·b); "l2" is plain Euclidean. Exact blocked
    matmul + top-k up to `EXACT_KNN_MAX_ROWS` rows; beyond, a faiss HNSW graph (built on one thread so the
    result is deterministic, searched on all threads). Self-matches are removed.
    """
    n = len(x)
    k = min(k, n - 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if n <= EXACT_KNN_MAX_ROWS:
        indices, d2 = _exact_knn(x, k + 1)
    else:
        indices, d2 = _hnsw_knn(x, k + 1, metric)
    is_self = indices == np.arange(n)[:, None]
    # Drop the self-match where found, else the farthest neighbour, keeping k per row.
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(is_self)
    keep[np.arange(n), drop] = False
    indices = indices[keep].reshape(n, k)
    d2 = d2[keep].reshape(n, k)
    if metric == "ip" and n > EXACT_KNN_MAX_ROWS:
        d2 = 2.0 - 2.0 * d2
    return indices.astype(np.int64, copy=False), np.maximum(d2.astype(np.float64), 0.0)


def _exact_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    indices = np.empty((n, k), dtype=np.int64)
    d2 = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, _EXACT_BLOCK_ROWS):
        block = slice(start, min(n, start + _EXACT_BLOCK_ROWS))
        dist = sq[block, None] + sq[None, :] - 2.0 * (x[block] @ x.T)
        if k < n:
            part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        else:
            part = np.tile(np.arange(n), (dist.shape[0], 1))
        vals = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(vals, axis=1, kind="stable")
        indices[block] = np.take_along_axis(part, order, axis=1)
        d2[block] = np.take_along_axis(vals, order, axis=1)
    return indices, d2


def _hnsw_knn(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    index = faiss.IndexHNSWFlat(x.shape[1], HNSW_LINKS, faiss_metric)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    faiss.omp_set_num_threads(1)
    try:
        index.add(x)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * k)
    values, indices = index.search(x, k)
    return indices, values


def knn_gaussian(x: np.ndarray, k: int, metric: str = "ip") -> tuple[sparse.csr_matrix, float]:
    """Sparse Gaussian affinity on the symmetrised k-NN graph (union, max weight) plus self-loops W_ii = 1.

    σ = median of the k-NN distances (spec "Scale").
    """
    n = len(x)
    if n == 1:
        return sparse.identity(1, format="csr"), 1.0
    indices, d2 = knn_search(x, k, metric)
    sigma = median_sigma(np.sqrt(d2.ravel()))
    rows = np.repeat(np.arange(n), indices.shape[1])
    weights = sparse.csr_matrix((np.exp(-d2.ravel() / (2.0 * sigma**2)), (rows, indices.ravel())), shape=(n, n))
    weights = weights.maximum(weights.T)
    weights.setdiag(1.0)
    weights.eliminate_zeros()
    return weights.tocsr(), sigma


@dataclass
class DiffusionMap:
    """ψ (N, d'), the eigenvalues of L used (ascending), t and how it was chosen (spec steps 4-5)."""

    coordinates: np.ndarray
    eigenvalues: np.ndarray
    t: float
    lambda_2: float
    t_rule: str
    num_components: int


def diffusion_map(weights, dim: int, seed: int = 0) -> DiffusionMap:
    """Spec steps 3-5 on a dense array or sparse matrix W.

    Takes the m = min(d+1, N) smallest eigenpairs of L; t = 1/λ_2 (t_rule "lambda_2"); if λ_2 <= tol
    (several components), t = 1/λ for the first λ above tol ("first_above_tolerance"); if none of the m is
    above tol, t = 0 ("none_above_tolerance": every coordinate is a component indicator, which diffusion
    leaves unchanged). ψ = the first min(d, N) eigenvectors scaled by exp(-tλ); K_t is never formed.
    Eigenvector signs are fixed (largest-magnitude entry positive).
    """
    n = weights.shape[0]
    m = min(dim + 1, n)
    num_components, component = connected_components(sparse.csr_matrix(weights), directed=False)
    degree = np.asarray(weights.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(degree)
    if sparse.issparse(weights):
        scale = sparse.diags(inv_sqrt)
        adjacency = (scale @ weights @ scale).tocsr()
        values, vectors = _top_adjacency_eigs(adjacency, m, degree, component, num_components, seed)
    else:
        adjacency = weights * inv_sqrt[:, None] * inv_sqrt[None, :]
        values, vectors = linalg.eigh(adjacency, subset_by_index=[n - m, n - 1])
    order = np.argsort(-values, kind="stable")
    eigenvalues = np.clip(1.0 - values[order], 0.0, 2.0)
    vectors = vectors[:, order]
    flip = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(m)])
    vectors *= np.where(flip == 0, 1.0, flip)
    t, lambda_2, t_rule = diffusion_time(eigenvalues)
    d = min(dim, n)
    coordinates = vectors[:, :d] * np.exp(-t * eigenvalues[:d])
    return DiffusionMap(coordinates, eigenvalues, t, lambda_2, t_rule, int(num_components))


def diffusion_time(eigenvalues: np.ndarray) -> tuple[float, float, str]:
    """Spec step 4: (t, the λ used, rule) from the ascending eigenvalues of L."""
    if len(eigenvalues) > 1 and eigenvalues[1] > ZERO_EIGENVALUE_TOL:
        return 1.0 / float(eigenvalues[1]), float(eigenvalues[1]), "lambda_2"
    above = eigenvalues[eigenvalues > ZERO_EIGENVALUE_TOL]
    if above.size:
        return 1.0 / float(above[0]), float(above[0]), "first_above_tolerance"
    return 0.0, 0.0, "none_above_tolerance"


def _top_adjacency_eigs(adjacency, m, degree, component, num_components, seed):
    """The m largest eigenpairs of the sparse normalised adjacency A, null space of L deflated exactly.

    Each connected component c gives the eigenvalue 1 of A with eigenvector √deg on c (normalised); the rest
    come from ARPACK `eigsh` on (I − P) A (I − P), P the projector on those vectors (seeded start vector).
    """
    n = adjacency.shape[0]
    null_count = min(num_components, m)
    sizes = np.bincount(component, minlength=num_components)
    largest = np.argsort(-sizes, kind="stable")[:null_count]
    null = np.zeros((n, null_count))
    for j, c in enumerate(largest):
        members = component == c
        null[members, j] = np.sqrt(degree[members])
    null /= np.linalg.norm(null, axis=0)
    rest = m - null_count
    if rest == 0:
        return np.ones(null_count), null
    if n <= 4 * m + 2:
        dense = adjacency.toarray()
        values, vectors = linalg.eigh(dense)
        return values[n - m :], vectors[:, n - m :]

    def deflated(v):
        v = v.reshape(n, -1)
        v = v - null @ (null.T @ v)
        w = adjacency @ v
        return w - null @ (null.T @ w)

    operator = LinearOperator((n, n), matvec=deflated, matmat=deflated, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(n)
    values, vectors = eigsh(operator, k=rest, which="LA", v0=start, tol=1e-7, ncv=min(n - 1, max(3 * rest + 1, 40)))
    return np.concatenate([np.ones(null_count), values]), np.hstack([null, vectors])
