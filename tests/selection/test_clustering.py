"""Symmetric NMF, the elbow rule and the entry point `cluster_instructions` (paper Sec. 3.2, Eq. 3)."""

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, homogeneity_score

from paser_hf.selection import clustering
from paser_hf.selection.clustering import (
    LowRankKernel,
    cluster_instructions,
    elbow,
    nmf_squared_error,
    nystrom_gaussian,
    symmetric_nmf,
)
from paser_hf.selection.config import PaserConfig
from paser_hf.selection.kernels import dense_gaussian


def planted(n, k, seed=0, dim=64):
    """Unit vectors around k random centres (within-cluster cosine ≈ 0.7, across ≈ 0)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.permutation(np.arange(n) % k)
    x = centres[labels] + 0.6 / np.sqrt(dim) * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels


def config(**kwargs):
    return PaserConfig(show_progress=False, **kwargs)


@pytest.mark.parametrize("k", [4, 6])
@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_elbow_recovers_planted_clusters(method, k):
    """At the default d = 16: the k-NN σ of the affinity keeps the noise eigenvectors damped (see kernels)."""
    x, truth = planted(240, k, seed=k)
    # the sparse path is built for large N: on 240 rows its k-NN graph leaves ψ noisy at d = 16, so d = K there
    dim = k if method == "sparse" else PaserConfig().diffusion_dim
    result = cluster_instructions(x, config(clustering_method=method, diffusion_dim=dim))
    assert result.method == method
    assert result.k == k
    assert adjusted_rand_score(truth, result.labels) >= 0.9
    assert sorted(result.k_curve) == list(range(2, PaserConfig().max_clusters + 1))
    assert result.labels.dtype == np.int64
    assert set(result.labels.tolist()) == set(range(result.k))


def test_the_error_curve_is_not_cut_short_by_a_flat_stretch():
    """Two planted clusters: every cut after K = 2 is small, and the curve still runs to max_clusters, so a drop
    after a long flat stretch stays visible to the elbow rule."""
    x, _ = planted(200, 2, seed=3)
    result = cluster_instructions(x, config(clustering_method="dense", max_clusters=12))
    assert sorted(result.k_curve) == list(range(2, 13))
    assert result.k == 2


def test_dense_and_sparse_paths_agree():
    x, _ = planted(300, 5, seed=11)
    dense = cluster_instructions(x, config(clustering_method="dense", diffusion_dim=5, num_clusters=5))
    sparse = cluster_instructions(x, config(clustering_method="sparse", diffusion_dim=5, num_clusters=5))
    assert adjusted_rand_score(dense.labels, sparse.labels) >= 0.9
    assert dense.num_edges == 300 * 299 // 2
    assert 0 < sparse.num_edges < dense.num_edges


def test_auto_picks_dense_up_to_dense_max_rows():
    x, _ = planted(60, 3)
    assert cluster_instructions(x, config(dense_max_rows=60, num_clusters=3)).method == "dense"
    assert cluster_instructions(x, config(dense_max_rows=59, num_clusters=3)).method == "sparse"


def test_fixed_k_is_respected_and_deterministic():
    x, _ = planted(200, 6, seed=5)
    cfg = config(num_clusters=3, clustering_method="sparse", seed=7)
    first, second = cluster_instructions(x, cfg), cluster_instructions(x, cfg)
    assert first.k == first.k_requested == 3
    assert first.k_curve == {}
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.coordinates, second.coordinates)
    assert np.bincount(first.labels).min() > 0


def test_disconnected_sparse_graph_falls_back_and_separates():
    rng = np.random.default_rng(0)
    a = np.r_[1.0, 0.0, 0.0] + 0.05 * rng.standard_normal((100, 3))
    b = np.r_[0.0, 1.0, 0.0] + 0.05 * rng.standard_normal((100, 3))
    result = cluster_instructions(np.vstack([a, b]), config(clustering_method="sparse", knn_neighbors=10))
    assert result.num_components >= 2
    assert result.used_fallback and result.t_rule == "first_above_tolerance"
    assert result.lambda_2 > 1e-6 and result.t == pytest.approx(1 / result.lambda_2)
    truth = np.repeat([0, 1], 100)
    # no cluster straddles the two components (the elbow may also split inside a blob: its error curve is
    # near zero from K = 2 on, so small wiggles count)
    assert result.k >= 2 and homogeneity_score(truth, result.labels) == pytest.approx(1.0)


def test_error_formula_equals_dense_frobenius_norm():
    rng = np.random.default_rng(1)
    psi = rng.standard_normal((40, 3))
    S, _ = dense_gaussian(psi)
    H = rng.random((40, 4))
    expected = np.linalg.norm(S - H @ H.T) ** 2
    assert nmf_squared_error(S @ H, H, clustering.squared_norm(S)) == pytest.approx(expected, rel=1e-9)
    low_rank, _ = nystrom_gaussian(psi, seed=0)
    Z = low_rank.Z.astype(np.float64)
    S_formed = Z @ Z.T
    assert clustering.squared_norm(low_rank) == pytest.approx(np.linalg.norm(S_formed) ** 2, rel=1e-5)
    # 40 rows < 256 landmarks: the Nyström factor reproduces the kernel.
    np.testing.assert_allclose(S_formed, S, atol=1e-4)


def test_multiplicative_updates_never_increase_the_error():
    rng = np.random.default_rng(2)
    S, _ = dense_gaussian(rng.standard_normal((80, 4)))
    fit = symmetric_nmf(S, rng.random((80, 5)), max_iter=200, tol=1e-12)
    history = np.array(fit.history)
    assert len(history) > 20
    assert (np.diff(history) <= 1e-12).all()
    assert history[-1] < history[0]
    assert (fit.H >= 0).all()
    assert fit.relative_error == pytest.approx(np.linalg.norm(S - fit.H @ fit.H.T) / np.linalg.norm(S), rel=1e-6)


def test_low_rank_kernel_product():
    Z = np.random.default_rng(0).random((30, 6)).astype(np.float32)
    H = np.random.default_rng(1).random((30, 2))
    np.testing.assert_allclose(LowRankKernel(Z) @ H, Z.astype(np.float64) @ Z.T @ H, rtol=1e-5)
    np.testing.assert_allclose(LowRankKernel(Z).rows(np.array([0, 3])).Z, Z[[0, 3]])


def test_elbow_rule():
    # cuts are fractions of e(2) = 0.5: 0.4, 0.5, 0.002, 0.002
    assert elbow({2: 0.5, 3: 0.3, 4: 0.05, 5: 0.049, 6: 0.048}, 0.05) == 4
    # a late big cut wins over an early flat step: 4 -> 5 cuts 0.2% of e(2), but 5 -> 6 cuts 7.8%
    assert elbow({2: 0.5, 3: 0.3, 4: 0.05, 5: 0.049, 6: 0.01}, 0.05) == 6
    # many equal clusters: the first splits cut under 5% of e(2) each, the real drop comes at 6
    assert elbow({2: 0.145, 3: 0.14, 4: 0.134, 5: 0.129, 6: 0.04, 7: 0.039}, 0.05) == 6
    # six small cuts (3% of e(2) each) before the drop at 9: the rule still finds it
    assert elbow({2: 1.0, 3: 0.97, 4: 0.94, 5: 0.91, 6: 0.88, 7: 0.85, 8: 0.82, 9: 0.5, 10: 0.49}, 0.05) == 9
    assert elbow({2: 0.5, 3: 0.49}, 0.05) == 2
    assert elbow({2: 0.5, 3: 0.3}, 0.05) == 3
    assert elbow({2: 0.0, 3: 0.0}, 0.05) == 2
    assert elbow({}, 0.05) is None


@pytest.mark.parametrize("method", ["dense", "sparse"])
@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_tiny_inputs(method, n):
    x = np.random.default_rng(n).standard_normal((n, 8))
    result = cluster_instructions(x, config(clustering_method=method))
    assert result.labels.shape == (n,)
    assert result.coordinates.shape == (n, min(16, n))
    assert 1 <= result.k <= n
    assert set(result.labels.tolist()) == set(range(result.k))
    if n == 1:
        assert result.k == 1 and result.t_rule == "none_above_tolerance"
    json.dumps(result.to_dict())


def test_to_dict_is_json_without_per_row_arrays():
    x, _ = planted(120, 3, seed=9)
    result = cluster_instructions(x, config(diffusion_dim=3))
    report = json.loads(json.dumps(result.to_dict()))
    assert report["k"] == result.k and report["method"] == "dense"
    assert sum(report["cluster_sizes"]) == 120
    assert {int(k) for k in report["k_curve"]} == set(result.k_curve)
    assert set(report["timings"]) == {"affinity", "diffusion", "similarity", "elbow", "nmf"}
    assert all(not isinstance(v, list) or len(v) < 120 for v in report.values())


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones(4), "2-D"),
        (np.array([[0.1, np.nan]]), "NaN or inf"),
        (np.array([[0.1, np.inf], [0.2, 0.3]]), "NaN or inf"),
        (np.zeros((3, 2)), "all zeros"),
    ],
)
def test_bad_input_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        cluster_instructions(bad, config())
