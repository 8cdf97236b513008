"""Scale benchmark of the OC-SVM baseline at the paper's MVTec AD sizes
(docs/decisions.md#mvtec-baseline-subsampling).

The paper fits the OC-SVM (RBF kernel; ``ust`` uses ν = 0.5 and ``gamma="scale"``) on 50 000
teacher descriptors and scores every pixel of every test image: about 100 test images × 256² pixels
= 6.6 million descriptors per category. This script times the exact ``sklearn.svm.OneClassSVM``
(libsvm, one core) at a few training-set sizes n, fits a power law ``seconds = a · n^b`` to the fit
times and extrapolates to n = 50 000; scoring time is linear in (support vectors × queries), so the
measured seconds per (support vector × query) are extrapolated to the paper's support-vector count
(the measured support-vector fraction × 50 000) and pixel count.

The Nyström approximation of ``ust.baselines.shallow.OCSVMScorer(solver="nystroem")`` is timed
*at* n = 50 000 (fit measured; scoring measured on ``--queries`` descriptors and extrapolated
linearly to the pixel count), and both solvers are compared on a seeded synthetic anomaly problem
(normal = Gaussian mixture, anomalies = the same mixture with 1.5× the spread) at the largest
measured n: ROC-AUC of each and Spearman rank correlation of their scores.

Descriptors are synthetic, ``--dim`` dimensional (the PCA-reduced teacher descriptors: PCA keeps
95 % of the variance of 128-d descriptors). Prints one JSON line per measured n, then one summary
line, e.g.::

    python benchmarks/ocsvm_scale.py --dim 32 --sizes 1000 2000 4000 8000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from ust.baselines.shallow import OCSVMScorer


class Mixture:
    """A seeded Gaussian mixture in ``dim`` dimensions with a decaying spectrum (like PCA scores)."""

    def __init__(self, dim: int, seed: int, centres: int = 5) -> None:
        rng = np.random.default_rng(seed)
        self.mix = rng.normal(size=(dim, dim)) * np.linspace(1.0, 0.1, dim)
        self.centres = rng.normal(size=(centres, dim))
        self.rng = rng

    def sample(self, n: int, spread: float = 1.0) -> np.ndarray:
        """(n, dim) float64 samples; ``spread`` scales the within-component noise."""
        c = self.centres[self.rng.integers(0, len(self.centres), n)]
        return c + spread * self.rng.normal(size=(n, self.mix.shape[0])) @ self.mix


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _scorer(solver: str, components: int, seed: int) -> OCSVMScorer:
    return OCSVMScorer(pca_variance=None, seed=seed, solver=solver, n_components=components)


def measure_exact(mix: Mixture, n: int, queries: np.ndarray) -> dict:
    """Fit seconds, support vectors and scoring seconds of the exact OC-SVM on n samples."""
    est, fit_s = _timed(_scorer("exact", 1, 0).fit, mix.sample(n))
    _, score_s = _timed(est.score, queries)
    n_sv = int(est.svm.support_vectors_.shape[0])
    return {
        "solver": "exact",
        "n": n,
        "fit_seconds": round(fit_s, 3),
        "support_vectors": n_sv,
        "queries": len(queries),
        "score_seconds": round(score_s, 3),
        "seconds_per_sv_query": score_s / (n_sv * len(queries)),
    }


def extrapolate_exact(rows: list[dict], n_paper: int, pixels: int) -> dict:
    """Power-law fit time and linear (SV × query) scoring time at the paper's sizes."""
    ns = np.array([r["n"] for r in rows], dtype=float)
    fits = np.array([max(r["fit_seconds"], 1e-3) for r in rows])
    b, log_a = np.polyfit(np.log(ns), np.log(fits), 1)
    sv_fraction = float(np.mean([r["support_vectors"] / r["n"] for r in rows]))
    rate = float(np.median([r["seconds_per_sv_query"] for r in rows]))
    fit_s = float(np.exp(log_a) * n_paper**b)
    score_s = rate * sv_fraction * n_paper * pixels
    return {
        "fit_exponent": round(float(b), 3),
        "support_vector_fraction": round(sv_fraction, 4),
        "exact_fit_seconds": round(fit_s, 1),
        "exact_score_seconds": round(score_s, 1),
        "exact_total_hours": round((fit_s + score_s) / 3600, 2),
    }


def measure_nystroem(mix: Mixture, args, queries: np.ndarray, pixels: int) -> dict:
    """Nyström + SGD one-class SVM fitted at the paper's n; scoring extrapolated to ``pixels``."""
    est, fit_s = _timed(_scorer("nystroem", args.components, args.seed).fit, mix.sample(args.n_fit))
    _, score_s = _timed(est.score, queries)
    total = score_s * pixels / len(queries)
    return {
        "nystroem_components": args.components,
        "nystroem_fit_seconds": round(fit_s, 2),
        "nystroem_score_seconds": round(total, 1),
        "nystroem_total_hours": round((fit_s + total) / 3600, 3),
    }


def agreement(mix: Mixture, n: int, components: int, seed: int) -> dict:
    """ROC-AUC of both solvers on a seeded synthetic anomaly problem and their rank correlation."""
    train = mix.sample(n)
    test = np.vstack([mix.sample(2000), mix.sample(2000, spread=1.5)])
    labels = np.r_[np.zeros(2000), np.ones(2000)]
    exact = _scorer("exact", 1, seed).fit(train).score(test)
    approx = _scorer("nystroem", components, seed).fit(train).score(test)
    auc_e, auc_a = roc_auc_score(labels, exact), roc_auc_score(labels, approx)
    return {
        "agreement_n": n,
        "exact_auc": round(float(auc_e), 4),
        "nystroem_auc": round(float(auc_a), 4),
        "auc_difference": round(float(abs(auc_e - auc_a)), 4),
        "spearman": round(float(spearmanr(exact, approx)[0]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=32, help="descriptor dimension after PCA")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    parser.add_argument("--queries", type=int, default=20_000, help="descriptors scored per n")
    parser.add_argument("--n-fit", type=int, default=50_000, help="the paper's training vectors")
    parser.add_argument("--images", type=int, default=100, help="test images of one category")
    parser.add_argument("--side", type=int, default=256, help="descriptor-map side (pixels)")
    parser.add_argument("--components", type=int, default=1000, help="Nyström landmarks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    mix = Mixture(args.dim, args.seed)
    queries = mix.sample(args.queries)
    pixels = args.images * args.side**2
    rows = []
    for n in args.sizes:
        rows.append(measure_exact(mix, n, queries))
        print(json.dumps({"benchmark": "ocsvm_scale", "dim": args.dim, **rows[-1]}), flush=True)
    summary = {
        "benchmark": "ocsvm_scale_summary",
        "dim": args.dim,
        "n_fit": args.n_fit,
        "pixels": pixels,
        **extrapolate_exact(rows, args.n_fit, pixels),
        **measure_nystroem(mix, args, queries, pixels),
        **agreement(mix, max(args.sizes), args.components, args.seed),
    }
    summary["speedup"] = round(summary["exact_total_hours"] / summary["nystroem_total_hours"], 1)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
