"""Diffusion coordinates of S²RIC (paper Sec. 3.2, Eq. 2): the normalised Laplacian
`L = I − D^{-1/2} W D^{-1/2}` of an affinity W, the diffusion time t and ψ = eigenvectors scaled by exp(-tλ).

Dense W: all eigenpairs by LAPACK. Sparse W: the d+1 largest eigenpairs of `A = D^{-1/2} W D^{-1/2}`
(= the d+1 smallest of `L = I − A`) by ARPACK. The exact null space of `L` (`D^{1/2} 1` on each connected
component) is written down and deflated first, so a k-NN graph with several components never asks
Lanczos for a multiple eigenvalue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, eigsh

#: An eigenvalue of L at or below this counts as zero. By Cheeger's inequality a cluster with λ <= 1e-3 has
#: a boundary of at most ~4.5% of its volume: "almost a component". A smaller tolerance let one
#: near-disconnected cluster (λ ~ 1e-5) set t ~ 1e5 and wipe out every other coordinate.
ZERO_EIGENVALUE_TOL = 1e-3


@dataclass
class DiffusionMap:
    """ψ (N, d'), the eigenvalues of L used (ascending), t and how it was chosen."""

    coordinates: np.ndarray
    eigenvalues: np.ndarray
    t: float
    lambda_2: float
    t_rule: str
    num_components: int


def diffusion_map(weights, dim: int, seed: int = 0) -> DiffusionMap:
    """ψ of a dense array or sparse matrix W: L = I − D^{-1/2} W D^{-1/2}, t, ψ = φ_j exp(−t λ_j) (Eq. 2).

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
    """The spectral-gap rule t = 1/λ_2 (Sec. 3.2): (t, the λ used, rule) from the ascending eigenvalues of L."""
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
