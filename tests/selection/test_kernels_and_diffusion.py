"""Spec 1 steps 1-5: affinity, normalised Laplacian, diffusion time and coordinates (`paser_hf.selection.kernels`, `paser_hf.selection.diffusion`)."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import adjusted_rand_score

from paser_hf.selection import diffusion, kernels
from paser_hf.selection.diffusion import diffusion_map
from paser_hf.selection.kernels import check_embeddings, dense_gaussian, knn_gaussian, knn_search, l2_normalise


def blobs(n_per, centres, scale, seed=0):
    rng = np.random.default_rng(seed)
    x = np.vstack([c + scale * rng.standard_normal((n_per, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per)


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


def test_hnsw_neighbours_agree_with_exact(monkeypatch):
    x, _ = blobs(500, np.eye(16)[:4] * 2, 1.0, seed=4)
    x = l2_normalise(x.astype(np.float32))
    exact_idx, exact_d2 = knn_search(x, 10)
    assert not (exact_idx == np.arange(len(x))[:, None]).any()
    np.testing.assert_allclose(
        exact_d2[:, 0], np.sort(squareform(pdist(x)) ** 2 + np.eye(len(x)) * 9, axis=1)[:, 0], atol=1e-4
    )
    monkeypatch.setattr(kernels, "EXACT_KNN_MAX_ROWS", 0)
    ann_idx, ann_d2 = knn_search(x, 10)
    assert not (ann_idx == np.arange(len(x))[:, None]).any()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ann_idx, exact_idx)])
    assert recall >= 0.9
    rows = np.arange(len(x))[:, None]
    np.testing.assert_allclose(ann_d2, ((x[rows] - x[ann_idx]) ** 2).sum(-1), atol=1e-4)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(5), "2-D"),
        (np.zeros((2, 3, 4)), "2-D"),
        (np.zeros((0, 4)), "at least one row"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), "NaN or inf in 1 row"),
        (np.array([[1.0, 2.0], [np.inf, 2.0]]), "e.g. row 1"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_bad_embeddings_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        check_embeddings(bad)


def test_zero_row_cannot_be_normalised():
    with pytest.raises(ValueError, match="all zeros"):
        l2_normalise(np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32))
