"""Normalised Laplacian, diffusion time and diffusion coordinates (paper Sec. 3.2, Eq. 2;
`paser_hf.selection.diffusion`), against hand computations."""

import numpy as np
import pytest
from fixtures import blobs
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import adjusted_rand_score

from paser_hf.selection import diffusion
from paser_hf.selection.diffusion import diffusion_map
from paser_hf.selection.kernels import dense_gaussian, knn_gaussian, l2_normalise


def test_dense_laplacian_t_and_coordinates_match_hand_computation():
    x = np.random.default_rng(3).standard_normal((7, 5))
    e = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = squareform(pdist(e))
    sigma = np.median(pdist(e))
    W = np.exp(-(dist**2) / (2 * sigma**2))
    D = W.sum(axis=1)
    L = np.eye(7) - W / np.sqrt(np.outer(D, D))
    lam, phi = np.linalg.eigh(L)

    W_ours, sigma_ours = dense_gaussian(l2_normalise(x.astype(np.float32)))
    assert sigma_ours == pytest.approx(sigma, rel=1e-5)
    np.testing.assert_allclose(W_ours, W, atol=1e-5)
    dmap = diffusion_map(W_ours, dim=3)
    np.testing.assert_allclose(dmap.eigenvalues, lam[:4], atol=1e-6)
    assert dmap.t_rule == "lambda_2"
    assert dmap.lambda_2 == pytest.approx(lam[1], abs=1e-6)
    assert dmap.t == pytest.approx(1 / lam[1], rel=1e-5)
    expected = phi[:, :3] * np.exp(-dmap.t * lam[:3])
    # Eigenvectors are defined up to sign.
    signs = np.sign(np.sum(expected * dmap.coordinates, axis=0))
    np.testing.assert_allclose(dmap.coordinates, expected * signs, atol=1e-5)


def test_sparse_eigenpairs_match_dense_eigh():
    x, _ = blobs(100, np.eye(8)[:3] * 3, 1.0)
    W, sigma = knn_gaussian(l2_normalise(x.astype(np.float32)), k=8)
    assert sigma > 0
    dense = W.toarray()
    np.testing.assert_allclose(dense, dense.T)
    np.testing.assert_allclose(np.diag(dense), 1.0)
    D = dense.sum(axis=1)
    lam = np.linalg.eigvalsh(np.eye(len(D)) - dense / np.sqrt(np.outer(D, D)))
    dmap = diffusion_map(W, dim=6, seed=1)
    np.testing.assert_allclose(dmap.eigenvalues, lam[:7], atol=1e-6)
    assert dmap.coordinates.shape == (300, 6)


def test_disconnected_knn_graph_uses_first_eigenvalue_above_tolerance():
    x, truth = blobs(120, [np.r_[10.0, 0, 0, 0], np.r_[-10.0, 0, 0, 0]], 0.3, seed=2)
    W, _ = knn_gaussian(l2_normalise((x + np.r_[0, 1.0, 1.0, 1.0]).astype(np.float32)), k=6)
    dmap = diffusion_map(W, dim=4, seed=0)
    assert dmap.num_components == 2
    assert dmap.t_rule == "first_above_tolerance"
    assert dmap.eigenvalues[1] <= diffusion.ZERO_EIGENVALUE_TOL < dmap.eigenvalues[2]
    assert dmap.lambda_2 == pytest.approx(dmap.eigenvalues[2])
    assert dmap.t == pytest.approx(1 / dmap.eigenvalues[2])
    # The two null coordinates are the component indicators (scaled by exp(0) = 1).
    first_two = dmap.coordinates[:, :2]
    support = first_two > 1e-12
    assert (support.sum(axis=1) == 1).all()
    assert adjusted_rand_score(truth, support.argmax(axis=1)) == 1.0


def test_no_eigenvalue_above_tolerance_gives_t_zero():
    t, lam, rule = diffusion.diffusion_time(np.zeros(3))
    assert (t, lam, rule) == (0.0, 0.0, "none_above_tolerance")
    assert diffusion.diffusion_time(np.array([0.0, 0.5]))[0] == pytest.approx(2.0)
