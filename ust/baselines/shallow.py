"""Shallow feature-distribution baselines on teacher descriptors: 1-NN, K-Means, OC-SVM
(docs/decisions.md#feature-baselines).

Every model first reduces the descriptors with a PCA that keeps 95 % of the variance (fitted on the
training descriptors, ``PCA(n_components=0.95, svd_solver="full")``) and then fits its density surrogate:

* :class:`OneNN`: score = Euclidean distance to the closest stored training vector (all training vectors
  on MNIST/CIFAR, a seeded dictionary of 5 000 on MVTec), computed in memory-bounded chunks with
  ``torch.cdist`` (65 536 queries × 5 000 stored vectors are routine for dense MVTec maps);
* :class:`KMeansScorer`: ``KMeans(n_clusters=10, n_init=10, random_state=seed)``, score = distance to the
  nearest centre;
* :class:`OCSVMScorer`: ``OneClassSVM(kernel="rbf", nu=0.5, gamma="scale")``
  (docs/decisions.md#feature-baselines), score = −decision_function; or, with
  ``solver="nystroem"``, the same ν and γ on a Nyström feature map (``Nystroem`` +
  ``SGDOneClassSVM``), which the MVTec AD sizes need (docs/decisions.md#mvtec-baseline-subsampling).

All scores are in the units of the PCA-projected descriptor space (Euclidean distances) except OC-SVM's
(negated signed distance to the separating hyperplane in feature space); higher always means more
anomalous. ``max_samples`` gives the paper's MVTec training-set sizes (1-NN 5 000, K-Means/OC-SVM 50 000,
docs/decisions.md#mvtec-baseline-subsampling); ``None`` uses every training vector (MNIST/CIFAR).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import SGDOneClassSVM
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.svm import OneClassSVM

__all__ = [
    "OCSVM_SOLVERS",
    "KMeansScorer",
    "OCSVMScorer",
    "OneNN",
    "ShallowScorer",
    "make_shallow",
    "nearest_distances",
]


def _as_numpy(X) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a descriptor matrix (N, d), got shape {X.shape}")
    return X


def nearest_distances(
    queries: np.ndarray | torch.Tensor,
    bank: np.ndarray | torch.Tensor,
    *,
    chunk_size: int = 4096,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Euclidean distance from each query to its nearest bank vector, in chunks of queries.

    Peak extra memory is about ``chunk_size × len(bank)`` values of ``dtype`` (4096 × 5 000 float32 ≈ 82 MB).

    Args:
        queries: (N, d) query vectors.
        bank: (M, d) stored vectors, M ≥ 1.
        chunk_size: queries per ``torch.cdist`` call.
        device: where to compute ("cpu" or "cuda").
        dtype: computation dtype (float64 for exact comparisons).

    Returns:
        (N,) float64 distances (same units as the inputs).
    """
    q = torch.as_tensor(_as_numpy(queries))
    b = torch.as_tensor(_as_numpy(bank)).to(device=device, dtype=dtype)
    if b.shape[0] == 0:
        raise ValueError("the bank of stored vectors is empty")
    if q.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: queries {q.shape[1]}, bank {b.shape[1]}")
    out = np.empty(q.shape[0], dtype=np.float64)
    for start in range(0, q.shape[0], chunk_size):
        chunk = q[start : start + chunk_size].to(device=device, dtype=dtype)
        d = torch.cdist(chunk, b).amin(dim=1)
        out[start : start + chunk.shape[0]] = d.double().cpu().numpy()
    return out


class ShallowScorer:
    """Base class: seeded subsampling + PCA (``pca_variance`` of the variance kept) + a scorer.

    Args:
        pca_variance: variance share kept by the PCA (0 < v < 1), or ``None`` for no PCA.
        max_samples: fit on a seeded random subset of at most this many training vectors (``None``: all).
        seed: seed of the subsampling and of the model (where it has randomness).

    After :meth:`fit`: ``pca`` (the fitted ``sklearn.decomposition.PCA`` or ``None``), ``n_fit`` (number
    of vectors the model was fitted on).
    """

    def __init__(
        self, *, pca_variance: float | None = 0.95, max_samples: int | None = None, seed: int = 0
    ) -> None:
        if pca_variance is not None and not 0.0 < pca_variance < 1.0:
            raise ValueError(f"pca_variance must be in (0, 1) or None, got {pca_variance}")
        self.pca_variance = pca_variance
        self.max_samples = max_samples
        self.seed = seed
        self.pca: PCA | None = None
        self.n_fit = 0

    def _subsample(self, X: np.ndarray) -> np.ndarray:
        if self.max_samples is None or len(X) <= self.max_samples:
            return X
        rng = np.random.default_rng(self.seed)
        return X[np.sort(rng.choice(len(X), size=int(self.max_samples), replace=False))]

    def _project(self, X: np.ndarray) -> np.ndarray:
        return X if self.pca is None else self.pca.transform(X)

    def fit(self, train_X: np.ndarray | torch.Tensor) -> ShallowScorer:
        """Fit PCA and the model on (N, d) training descriptors (subsampled to ``max_samples``)."""
        X = self._subsample(_as_numpy(train_X).astype(np.float64, copy=False))
        if self.pca_variance is not None:
            self.pca = PCA(n_components=self.pca_variance, svd_solver="full").fit(X)
        Z = self._project(X)
        self.n_fit = len(Z)
        self._fit(Z)
        return self

    def score(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        """Anomaly scores of (N, d) descriptors → (N,) float64, higher = more anomalous."""
        if self.n_fit == 0:
            raise RuntimeError("call fit() first")
        return np.asarray(self._score(self._project(_as_numpy(X).astype(np.float64, copy=False))))

    def _fit(self, Z: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class OneNN(ShallowScorer):
    """1-NN: score = Euclidean distance to the closest stored (PCA-projected) training vector.

    Args:
        chunk_size: queries per distance block (memory ≈ chunk_size × n_stored × 4 bytes).
        device: "cpu" or "cuda" for the distance computation.
        (plus :class:`ShallowScorer`'s ``pca_variance``, ``max_samples``, ``seed``)
    """

    def __init__(
        self,
        *,
        pca_variance: float | None = 0.95,
        max_samples: int | None = None,
        seed: int = 0,
        chunk_size: int = 4096,
        device: str = "cpu",
    ) -> None:
        super().__init__(pca_variance=pca_variance, max_samples=max_samples, seed=seed)
        self.chunk_size = chunk_size
        self.device = device
        self.bank: np.ndarray | None = None

    def _fit(self, Z: np.ndarray) -> None:
        self.bank = np.ascontiguousarray(Z, dtype=np.float32)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return nearest_distances(Z, self.bank, chunk_size=self.chunk_size, device=self.device)


class KMeansScorer(ShallowScorer):
    """K-Means (K = 10, ``n_init=10``, ``random_state=seed``): score = distance to the nearest centre."""

    def __init__(
        self,
        *,
        pca_variance: float | None = 0.95,
        max_samples: int | None = None,
        seed: int = 0,
        n_clusters: int = 10,
        n_init: int = 10,
    ) -> None:
        super().__init__(pca_variance=pca_variance, max_samples=max_samples, seed=seed)
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.kmeans: KMeans | None = None

    def _fit(self, Z: np.ndarray) -> None:
        self.kmeans = KMeans(
            n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.seed
        ).fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return self.kmeans.transform(Z).min(axis=1)


#: ``OCSVMScorer`` solvers: the exact kernel OC-SVM (libsvm) or its Nyström approximation
OCSVM_SOLVERS = ("exact", "nystroem")


def scale_gamma(Z: np.ndarray) -> float:
    """scikit-learn's ``gamma="scale"`` for (N, d) training data: 1 / (d · Var(Z)) (Var over all
    entries), in 1 / (units of Z)²."""
    var = float(Z.var())
    return 1.0 / (Z.shape[1] * var) if var > 0 else 1.0


class OCSVMScorer(ShallowScorer):
    """One-class SVM, RBF kernel, ``nu=0.5``, ``gamma="scale"``: score = −decision_function
    (docs/decisions.md#feature-baselines).

    Args:
        nu: ν, the upper bound on the fraction of training outliers (0.5).
        gamma: RBF γ in 1 / (PCA units)², or ``"scale"`` = :func:`scale_gamma` of the training data.
        cache_size: libsvm kernel cache in MB (exact solver only).
        solver: ``"exact"`` = ``sklearn.svm.OneClassSVM``; ``"nystroem"`` = the same kernel
            approximated by ``Nystroem(n_components)`` landmarks (seeded) and the linear one-class
            SVM ``SGDOneClassSVM(nu)`` fitted on those features; scoring is
            −(K(x, landmarks) · v − offset) with v = normalisation · w folded once, which equals
            ``-SGDOneClassSVM.decision_function(Nystroem.transform(x))`` at a fraction of the cost
            (docs/decisions.md#mvtec-baseline-subsampling).
        n_components: Nyström landmarks (capped at the number of training vectors).
        (plus :class:`ShallowScorer`'s ``pca_variance``, ``max_samples``, ``seed``)
    """

    def __init__(
        self,
        *,
        pca_variance: float | None = 0.95,
        max_samples: int | None = None,
        seed: int = 0,
        nu: float = 0.5,
        gamma: str | float = "scale",
        cache_size: float = 1000.0,
        solver: str = "exact",
        n_components: int = 1000,
    ) -> None:
        super().__init__(pca_variance=pca_variance, max_samples=max_samples, seed=seed)
        if solver not in OCSVM_SOLVERS:
            raise ValueError(f"unknown OC-SVM solver {solver!r}; expected one of {OCSVM_SOLVERS}")
        if n_components < 1:
            raise ValueError(f"n_components must be ≥ 1, got {n_components}")
        self.nu = nu
        self.gamma = gamma
        self.cache_size = cache_size
        self.solver = solver
        self.n_components = int(n_components)
        self.svm: OneClassSVM | None = None
        self.nystroem: Nystroem | None = None
        self.sgd: SGDOneClassSVM | None = None
        self._landmark_weights: np.ndarray | None = None

    def _fit(self, Z: np.ndarray) -> None:
        if self.solver == "exact":
            self.svm = OneClassSVM(
                kernel="rbf", nu=self.nu, gamma=self.gamma, cache_size=self.cache_size
            ).fit(Z)
            return
        gamma = scale_gamma(Z) if self.gamma == "scale" else float(self.gamma)
        k = min(self.n_components, len(Z))
        self.nystroem = Nystroem(
            kernel="rbf", gamma=gamma, n_components=k, random_state=self.seed
        ).fit(Z)
        self.sgd = SGDOneClassSVM(nu=self.nu, tol=1e-4, random_state=self.seed).fit(
            self.nystroem.transform(Z)
        )
        # decision(x) = K(x, C) @ normalization_.T @ coef_ - offset_ : fold the two matrices once
        self._landmark_weights = self.nystroem.normalization_.T @ self.sgd.coef_.ravel()

    def _score(self, Z: np.ndarray, rows: int = 8192) -> np.ndarray:
        if self.solver == "exact":
            return -self.svm.decision_function(Z)
        ny, out = self.nystroem, np.empty(len(Z), dtype=np.float64)
        for i in range(0, len(Z), rows):  # bounded memory: rows × n_components kernel values
            k = rbf_kernel(Z[i : i + rows], ny.components_, gamma=ny.gamma)
            out[i : i + rows] = self.sgd.offset_[0] - k @ self._landmark_weights
        return out


_REGISTRY = {"1nn": OneNN, "kmeans": KMeansScorer, "ocsvm": OCSVMScorer}


def make_shallow(name: str, **kw) -> ShallowScorer:
    """Build a shallow baseline by name: "1nn", "kmeans" or "ocsvm" (keyword arguments passed on).

    Example (MVTec, docs/decisions.md#mvtec-baseline-subsampling):
    ``make_shallow("1nn", max_samples=5000)``, ``make_shallow("kmeans", max_samples=50_000)``.
    """
    key = name.lower().replace("-", "").replace("_", "")
    key = {"nn": "1nn", "oneclasssvm": "ocsvm"}.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown shallow baseline {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[key](**kw)
