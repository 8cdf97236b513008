"""Shallow baselines (1-NN, K-Means, OC-SVM after a 95 % PCA) on toy descriptor sets; the OC-SVM's
Nyström approximation against the exact solver (docs/decisions.md#mvtec-baseline-subsampling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from ust.baselines.shallow import (
    KMeansScorer,
    OCSVMScorer,
    OneNN,
    make_shallow,
    nearest_distances,
    scale_gamma,
)


@pytest.fixture(autouse=True)
def _single_thread():
    """Small problems run fastest on one thread; the CI cores are shared (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(n)


def toy_problem(seed: int = 0, d: int = 16):
    """Normal = one Gaussian blob (low-rank + noise); anomalies = the same blob shifted far away."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, d))

    def blob(n):
        return rng.normal(size=(n, 4)) @ basis + 0.1 * rng.normal(size=(n, d))

    train = blob(400)
    test_normal = blob(100)
    test_anom = blob(100) + 8.0 * np.ones(d)
    X = np.vstack([test_normal, test_anom])
    y = np.r_[np.zeros(100), np.ones(100)]
    return train, X, y


@pytest.mark.parametrize("name", ["1nn", "kmeans", "ocsvm"])
def test_toy_auc(name):
    train, X, y = toy_problem()
    model = make_shallow(name, seed=0).fit(train)
    s = model.score(X)
    assert s.shape == (200,) and s.dtype == np.float64
    assert roc_auc_score(y, s) > 0.95


def test_factory_types_and_params():
    assert isinstance(make_shallow("1nn", max_samples=5000), OneNN)
    assert isinstance(make_shallow("kmeans"), KMeansScorer)
    svm = make_shallow("ocsvm").fit(toy_problem()[0])
    assert isinstance(svm, OCSVMScorer)
    assert svm.svm.nu == 0.5 and svm.svm.gamma == "scale" and svm.svm.kernel == "rbf"
    km = make_shallow("kmeans", seed=3).fit(toy_problem()[0])
    assert km.kmeans.n_clusters == 10 and km.kmeans.n_init == 10 and km.kmeans.random_state == 3
    with pytest.raises(ValueError):
        make_shallow("isolation_forest")


def test_pca_keeps_95_percent_exact_case():
    """Sample covariance exactly diag(50, 30, 16, 3, 1): cumulative 0.50, 0.80, 0.96 → 3 components."""
    rng = np.random.default_rng(0)
    n = 200
    q, _ = np.linalg.qr(rng.normal(size=(n, 5)) - 0)
    q -= q.mean(axis=0)  # centre, then re-orthonormalise
    q, _ = np.linalg.qr(q)
    variances = np.array([50.0, 30.0, 16.0, 3.0, 1.0])
    X = q * np.sqrt(
        variances * (n - 1)
    )  # column j has sample variance variances[j], columns orthogonal
    X = X @ np.linalg.qr(rng.normal(size=(5, 5)))[0]  # random rotation keeps the spectrum
    model = OneNN(pca_variance=0.95).fit(X)
    assert model.pca.n_components_ == 3
    assert np.allclose(model.pca.explained_variance_, variances[:3])
    assert model.pca.explained_variance_ratio_.sum() >= 0.95
    assert OneNN(pca_variance=0.97).fit(X).pca.n_components_ == 4


def test_pca_off_and_score_units():
    train = np.array([[0.0, 0.0], [10.0, 0.0]])
    m = OneNN(pca_variance=None).fit(train)
    assert m.pca is None
    assert np.allclose(m.score(np.array([[3.0, 4.0], [10.0, 1.0]])), [5.0, 1.0])


def test_chunked_nearest_equals_brute_force():
    rng = np.random.default_rng(1)
    q, b = rng.normal(size=(1000, 7)), rng.normal(size=(300, 7))
    brute = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(1)
    for chunk in (1, 64, 333, 5000):
        got = nearest_distances(q, b, chunk_size=chunk, dtype=torch.float64)
        assert got.shape == (1000,)
        assert np.allclose(got, brute, atol=1e-9)
    assert np.allclose(nearest_distances(q, b, chunk_size=100), brute, atol=1e-4)


def test_onenn_subsample_is_seeded():
    train, X, _ = toy_problem()
    a = OneNN(max_samples=50, seed=0).fit(train)
    b = OneNN(max_samples=50, seed=0).fit(train)
    c = OneNN(max_samples=50, seed=1).fit(train)
    assert a.n_fit == 50 and a.bank.shape[0] == 50
    assert np.array_equal(a.score(X), b.score(X))
    assert not np.array_equal(a.score(X), c.score(X))
    full = OneNN().fit(train)
    assert full.n_fit == 400
    # a subset can only be farther away than the full dictionary (PCA differs, compare raw space)
    a_raw = OneNN(max_samples=50, seed=0, pca_variance=None).fit(train)
    full_raw = OneNN(pca_variance=None).fit(train)
    assert np.all(a_raw.score(X) >= full_raw.score(X) - 1e-5)


def test_torch_input_and_unfitted():
    train, X, _ = toy_problem()
    m = make_shallow("kmeans")
    with pytest.raises(RuntimeError):
        m.score(X)
    m.fit(torch.from_numpy(train).float())
    assert m.score(torch.from_numpy(X).float()).shape == (200,)


def mixture_problem(seed: int = 0, d: int = 16, n: int = 2000):
    """A harder seeded anomaly problem (exact OC-SVM ROC-AUC ≈ 0.86): normal = a five-component
    Gaussian mixture with a decaying spectrum, anomalies = the same mixture with 1.5× the spread."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.linspace(1.0, 0.1, d)
    centres = rng.normal(size=(5, d))

    def sample(m, spread=1.0):
        return centres[rng.integers(0, 5, m)] + spread * rng.normal(size=(m, d)) @ mix

    X = np.vstack([sample(1000), sample(1000, 1.5)])
    return sample(n), X, np.r_[np.zeros(1000), np.ones(1000)]


def test_nystroem_ocsvm_agrees_with_the_exact_ocsvm():
    """Measured (PCA 95 % first, as in the pipeline): ROC-AUC exact 0.8548, Nyström with 500
    landmarks 0.8545, |ΔAUC| = 0.0003, Spearman 0.99997 (1 000 landmarks: |ΔAUC| = 0.00003)."""
    train, X, y = mixture_problem()
    exact = make_shallow("ocsvm", seed=0).fit(train)
    approx = make_shallow("ocsvm", seed=0, solver="nystroem", n_components=500).fit(train)
    assert exact.svm is not None and approx.svm is None and approx.nystroem is not None
    # same ν and the same γ = scikit-learn's "scale" on the PCA-projected training vectors
    assert approx.sgd.nu == exact.svm.nu == 0.5
    assert approx.nystroem.gamma == pytest.approx(exact.svm._gamma, rel=1e-12)
    s_exact, s_approx = exact.score(X), approx.score(X)
    auc_exact, auc_approx = roc_auc_score(y, s_exact), roc_auc_score(y, s_approx)
    assert 0.8 < auc_exact < 0.9, auc_exact  # neither trivial nor hopeless
    assert abs(auc_exact - auc_approx) < 0.02, (auc_exact, auc_approx)
    assert spearmanr(s_exact, s_approx)[0] > 0.99


def test_nystroem_score_is_the_folded_pipeline_and_chunk_independent():
    train, X, _ = mixture_problem(seed=1, n=600)
    est = OCSVMScorer(pca_variance=None, seed=2, solver="nystroem", n_components=50).fit(train)
    reference = -est.sgd.decision_function(est.nystroem.transform(X))
    np.testing.assert_allclose(est.score(X), reference, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(est._score(X, rows=7), est.score(X), rtol=1e-12, atol=1e-15)
    assert est.nystroem.gamma == pytest.approx(scale_gamma(train))
    assert est.nystroem.components_.shape == (50, 16)
    tiny = OCSVMScorer(pca_variance=None, solver="nystroem", n_components=1000).fit(train[:30])
    assert tiny.nystroem.components_.shape[0] == 30  # landmarks capped at the training vectors
    with pytest.raises(ValueError, match="solver"):
        make_shallow("ocsvm", solver="liblinear")
