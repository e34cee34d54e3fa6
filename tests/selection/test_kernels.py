"""Unit-norm embeddings, nearest neighbours and the Gaussian affinity (paper Sec. 3.2; `paser_hf.selection.kernels`)."""

import numpy as np
import pytest
from fixtures import blobs
from scipy.spatial.distance import pdist, squareform

from paser_hf.selection import kernels
from paser_hf.selection.kernels import check_embeddings, knn_search, l2_normalise


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
