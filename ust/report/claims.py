"""Does it reproduce the paper's claims? Each claim checked on the numbers of ``summary.json``.

:func:`evaluate_claims` reads a report summary (the dict :func:`ust.report.readme_sync.write_tables`
writes to ``figures/summary.json``: ``summary["mvtec"][category][method]`` with ``au_pro``,
``pixel_auroc``, ``image_auroc``; ``summary["oneclass_mean_auc"][dataset][row key]``;
``summary["steps"]``) and returns one :class:`Claim` per claim and category or dataset:

(i) ``baselines`` — per MVTec category, the students' multiscale AU-PRO ≥ the AU-PRO of every
    Table 2 baseline that was run (:data:`TABLE2_METHODS`: 1-NN, OC-SVM, K-Means, ℓ2-AE, VAE,
    SSIM-AE); the best baseline is named.
(ii) ``multiscale`` — per category, multiscale AU-PRO ≥ (1 − :data:`MULTISCALE_TOLERANCE`) × the
    best single scale (``p17``, ``p33``, ``p65``, whichever were run): fusing the scales should not
    lose more than 5 % against the best of them.
(iii) ``floor`` — the students above the no-learning floors: on each texture category (and every
    other category where the floor was run) multiscale AU-PRO > :data:`RAW_NN` (raw-pixel patch
    nearest neighbour); on MNIST and Fashion-MNIST the mean ROC-AUC of every ``students:<losses>``
    row > :data:`PIXEL_FLOOR` (1-NN on raw pixels).
(iv) ``pixel_auroc`` — per category, the pixel ROC-AUC of every scale and of the fusion > 0.5.

Each claim has a status: ``pass`` (✓), ``fail`` (✗, with the reason) or ``not_checked`` (–, with
the reason, when an input is missing, e.g. "floor not computed": a claim that could not be checked
is neither hidden nor counted as reproduced). :func:`claims_markdown` renders them as the table
``figures/claims.md``.

Under-training: a model trained for fewer than :data:`MIN_OPTIMIZER_STEPS` optimiser steps is
labelled by :func:`undertrained_label` ("under-trained (N steps)") in every results table, and the
claims name it in their notes. The experiments record the steps under :data:`ust.experiments.outputs.STEPS_KEY` in their
result files (per student for an ensemble); a result without the key gets no label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from ust.report.published import MULTISCALE, TABLE2_METHODS

#: Fewest optimiser steps a trained model (one student, an autoencoder, IGD, a teacher) may take
#: before the tables call it under-trained. The smallest schedule of the paper is that of the
#: MVTec students on the smallest category (toothbrush: 60 training images, 54 after the 10 %
#: validation split, batch 1, 100 epochs = 5 400 steps per student); every other schedule is
#: longer (one-class students 100 epochs of ⌈4 500–5 400 / 64⌉ batches ≈ 7 100–8 500, feature
#: autoencoders ≈ 9 400–9 800, IGD ≈ 24 000, SSIM-AE ≈ 31 400, teachers 50 000). Below 5 000 a
#: model has had less optimisation than anything the paper reports on.
MIN_OPTIMIZER_STEPS = 5_000
#: key of the optimiser-step count in the experiments' result files and in ``summary["steps"]``
#: claim (ii): multiscale may be this fraction below the best single scale
MULTISCALE_TOLERANCE = 0.05
#: claim (iv): a pixel ROC-AUC must exceed this (chance)
CHANCE_AUROC = 0.5
#: method key of the raw-pixel patch nearest-neighbour floor in ``summary["mvtec"][category]``
RAW_NN = "raw_nn"
#: row key of the raw-pixel 1-NN floor in ``summary["oneclass_mean_auc"][dataset]``
PIXEL_FLOOR = "1nn_pixels"
#: one-class datasets whose floor claim is checked
FLOOR_DATASETS = ("mnist", "fashion_mnist")

STATUS_MARK = {"pass": "✓", "fail": "✗", "not_checked": "–"}

#: what each claim kind states, with its rule (the table's first column)
CLAIM_TEXT = {
    "baselines": "(i) multiscale AU-PRO ≥ every Table 2 baseline",
    "multiscale": f"(ii) multiscale AU-PRO ≥ {1 - MULTISCALE_TOLERANCE:.2f} × best single scale",
    "floor": "(iii) students above the no-learning floor",
    "pixel_auroc": f"(iv) every students' pixel ROC-AUC > {CHANCE_AUROC}",
}


@dataclass(frozen=True)
class Claim:
    """One checked claim.

    Attributes:
        kind: "baselines", "multiscale", "floor" or "pixel_auroc" (see the module docstring).
        subject: the MVTec category or one-class dataset it is checked on.
        status: "pass", "fail" or "not_checked".
        ours, ours_name: the students' number and what it is (e.g. 0.432, "multiscale").
        reference, reference_name: the number compared with and what it is (e.g. 0.346, "1nn").
        reason: why it fails or was not checked, "" when it holds.
        note: under-trained models involved, "" when none (or no steps recorded).
    """

    kind: str
    subject: str
    status: str
    ours: float | None
    ours_name: str
    reference: float | None
    reference_name: str
    reason: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-able dict of the fields, plus ``claim`` (:data:`CLAIM_TEXT`) and ``holds``."""
        return {"claim": CLAIM_TEXT[self.kind], "holds": self.status == "pass", **asdict(self)}


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


def _note(names_steps: Iterable[tuple[str, float | None]]) -> str:
    """``"p17 under-trained (36 steps); l2ae under-trained (50 steps)"`` for the under-trained
    ones of ``(name, steps)`` pairs; "" when none."""
    parts = [f"{name} {undertrained_label(s)}" for name, s in names_steps if undertrained_label(s)]
    return "; ".join(parts)


# ---------------------------------------------------------------------------------- MVTec claims
def _au_pro(row: Mapping, key: str) -> float | None:
    value = (row.get(key) or {}).get("au_pro")
    return None if value is None else float(value)


def _scales(row: Mapping) -> list[str]:
    """The single-scale keys ``p<p>`` of a category's summary, by receptive field."""
    keys = [k for k in row if k[:1] == "p" and k[1:].isdigit()]
    return sorted(keys, key=lambda k: int(k[1:]))


def _students_note(row: Mapping, steps: Mapping) -> str:
    """Under-trained students of a category (each scale; the fusion inherits them)."""
    return _note((k, steps.get(k)) for k in _scales(row))


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def baselines_claim(category: str, row: Mapping, steps: Mapping) -> Claim:
    """Claim (i) on one category's summary ``row`` (``steps``: its ``summary["steps"]`` entry)."""
    ours = _au_pro(row, MULTISCALE)
    ran = {m: _au_pro(row, m) for m in TABLE2_METHODS if _au_pro(row, m) is not None}
    best = max(ran, key=ran.get) if ran else ""
    note = _note([(MULTISCALE + " students", _min_steps(row, steps))] + [(best, steps.get(best))])
    claim = Claim("baselines", category, "pass", ours, MULTISCALE, ran.get(best), best, note=note)
    if ours is None or not ran:
        missing = "multiscale not computed" if ours is None else "no Table 2 baseline computed"
        return _with(claim, "not_checked", missing)
    if ours >= ran[best]:
        return claim
    beaten = sorted((m for m in ran if ran[m] > ours), key=ran.get, reverse=True)
    return _with(claim, "fail", "below " + ", ".join(f"{m} {_f(ran[m])}" for m in beaten))


def multiscale_claim(category: str, row: Mapping, steps: Mapping) -> Claim:
    """Claim (ii): multiscale AU-PRO ≥ (1 − :data:`MULTISCALE_TOLERANCE`) × best single scale."""
    ours = _au_pro(row, MULTISCALE)
    ran = {k: _au_pro(row, k) for k in _scales(row) if _au_pro(row, k) is not None}
    best = max(ran, key=ran.get) if ran else ""
    note = _students_note(row, steps)
    claim = Claim("multiscale", category, "pass", ours, MULTISCALE, ran.get(best), best, note=note)
    if ours is None or not ran:
        missing = "multiscale not computed" if ours is None else "no single scale computed"
        return _with(claim, "not_checked", missing)
    bound = (1 - MULTISCALE_TOLERANCE) * ran[best]
    if ours >= bound:
        return claim
    shortfall = 100 * (1 - ours / ran[best])
    return _with(
        claim,
        "fail",
        f"{shortfall:.1f} % below {best} (allowed: {100 * MULTISCALE_TOLERANCE:.0f} %, i.e. "
        f"≥ {bound:.3f})",
    )


def texture_floor_claim(category: str, row: Mapping, steps: Mapping) -> Claim:
    """Claim (iii) on an MVTec category: multiscale AU-PRO > the :data:`RAW_NN` floor's."""
    ours, floor = _au_pro(row, MULTISCALE), _au_pro(row, RAW_NN)
    note = _students_note(row, steps)
    claim = Claim("floor", category, "pass", ours, MULTISCALE, floor, RAW_NN, note=note)
    if floor is None:
        return _with(claim, "not_checked", f"floor not computed (no {RAW_NN} result)")
    if ours is None:
        return _with(claim, "not_checked", "multiscale not computed")
    if ours > floor:
        return claim
    return _with(claim, "fail", f"not above the raw-pixel floor: {_f(ours)} ≤ {_f(floor)}")


def pixel_auroc_claim(category: str, row: Mapping, steps: Mapping) -> Claim:
    """Claim (iv): the pixel ROC-AUC of every scale and of the fusion > :data:`CHANCE_AUROC`;
    ``ours`` is the lowest of them."""
    keys = [
        k for k in (*_scales(row), MULTISCALE) if (row.get(k) or {}).get("pixel_auroc") is not None
    ]
    values = {k: float(row[k]["pixel_auroc"]) for k in keys}
    worst = min(values, key=values.get) if values else ""
    note = _students_note(row, steps)
    claim = Claim(
        "pixel_auroc", category, "pass", values.get(worst), worst, CHANCE_AUROC, "chance", note=note
    )
    if not values:
        return _with(claim, "not_checked", "no students' result")
    failing = [f"{k} {_f(v)}" for k, v in values.items() if not v > CHANCE_AUROC]
    if not failing:
        return claim
    return _with(claim, "fail", "at or below chance: " + ", ".join(failing))


def _min_steps(row: Mapping, steps: Mapping) -> float | None:
    """Fewest steps of the category's students (over its scales), None when none recorded."""
    recorded = [steps[k] for k in _scales(row) if steps.get(k) is not None]
    return min(recorded) if recorded else None


def _with(claim: Claim, status: str, reason: str) -> Claim:
    return Claim(**{**asdict(claim), "status": status, "reason": reason})


# ----------------------------------------------------------------------------- one-class claims
def oneclass_floor_claims(dataset: str, means: Mapping[str, float], steps: Mapping) -> list[Claim]:
    """Claim (iii) on a one-class dataset: every ``students:<losses>`` mean ROC-AUC in ``means``
    (``summary["oneclass_mean_auc"][dataset]``) > the :data:`PIXEL_FLOOR` mean; ``steps`` is
    ``summary["steps"]["oneclass"][dataset]`` (``{row key: {"min", "max"}}``)."""
    floor = means.get(PIXEL_FLOOR)
    claims = []
    for key in sorted(k for k in means if k.split(":")[0] == "students"):
        ours = float(means[key])
        span = steps.get(key) or {}
        label = undertrained_label(span.get("min"), span.get("max"))
        note = f"{key} {label}" if label else ""
        ref = None if floor is None else float(floor)
        claim = Claim("floor", dataset, "pass", ours, key, ref, PIXEL_FLOOR, note=note)
        if floor is None:
            claim = _with(claim, "not_checked", f"floor not computed (no {PIXEL_FLOOR} result)")
        elif not ours > floor:
            claim = _with(
                claim, "fail", f"not above the raw-pixel floor: {_f(ours, 4)} ≤ {_f(ref, 4)}"
            )
        claims.append(claim)
    return claims


# -------------------------------------------------------------------------------------- all claims
def evaluate_claims(
    summary: Mapping, *, texture_categories: Iterable[str] | None = None
) -> list[Claim]:
    """Every claim (module docstring) on a report ``summary``: per MVTec category (i), (ii),
    (iii) where the category is in ``texture_categories`` or its floor was run, and (iv); then
    (iii) per one-class dataset of :data:`FLOOR_DATASETS` that has results.

    Args:
        summary: the ``summary.json`` dict (``mvtec``, ``oneclass_mean_auc``, optional ``steps``).
        texture_categories: categories that must have the :data:`RAW_NN` floor (a missing one is
            "not checked: floor not computed"); ``None``: only those where it was run.
    """
    steps = summary.get("steps") or {}
    textures = set(texture_categories or ())
    claims: list[Claim] = []
    for category, row in (summary.get("mvtec") or {}).items():
        cat_steps = (steps.get("mvtec") or {}).get(category) or {}
        claims.append(baselines_claim(category, row, cat_steps))
        claims.append(multiscale_claim(category, row, cat_steps))
        if category in textures or RAW_NN in row:
            claims.append(texture_floor_claim(category, row, cat_steps))
        claims.append(pixel_auroc_claim(category, row, cat_steps))
    means = summary.get("oneclass_mean_auc") or {}
    for dataset in FLOOR_DATASETS:
        if dataset in means:
            ds_steps = (steps.get("oneclass") or {}).get(dataset) or {}
            claims.extend(oneclass_floor_claims(dataset, means[dataset], ds_steps))
    return sorted(claims, key=lambda c: list(CLAIM_TEXT).index(c.kind))


# ------------------------------------------------------------------------------------- rendering
def _number(value: float | None, name: str, kind: str) -> str:
    """``"0.346 (1nn)"``: 4 decimals for one-class ROC-AUCs (as their tables), else 3."""
    if value is None:
        return "–"
    digits = 4 if kind == "floor" and name.startswith(("students", PIXEL_FLOOR)) else 3
    if kind == "baselines" and name and name != MULTISCALE:
        name = f"{name}, the best baseline"
    return f"{value:.{digits}f} ({name})" if name else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _thousands(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def _rules() -> str:
    """The rules of the four claims, one paragraph."""
    return (
        "Rules: (i) the students' multiscale AU-PRO is at least that of every Table 2 baseline run "
        f"({', '.join(TABLE2_METHODS)}); (ii) it is at least {1 - MULTISCALE_TOLERANCE:.2f} × the "
        f"best single scale's (fusing may lose at most {100 * MULTISCALE_TOLERANCE:.0f} %); "
        f"(iii) the students beat the no-learning floors: multiscale AU-PRO > `{RAW_NN}` "
        "(raw-pixel patch nearest neighbour) on texture categories, mean ROC-AUC of "
        f"`students:<losses>` > `{PIXEL_FLOOR}` (1-NN on raw pixels) on MNIST and Fashion-MNIST; "
        "(iv) every students' pixel ROC-AUC (each scale and multiscale) > "
        f"{CHANCE_AUROC}. – : an input is missing (e.g. the floor was not computed), so the claim "
        "is not counted as reproduced. Models trained for fewer than "
        f"{_thousands(MIN_OPTIMIZER_STEPS)} optimiser steps are marked under-trained."
    )


def claims_markdown(claims: Iterable[Claim], profile: str | None = None) -> str:
    """Markdown of the claims: a count line, the rules, and one row per claim with ✓ / ✗ / –, the
    students' number, the number compared with, the reason of a ✗ or – and the under-trained
    models involved."""
    claims = list(claims)
    count = {s: sum(c.status == s for c in claims) for s in STATUS_MARK}
    where = f" of profile `{profile}`" if profile else ""
    lines = [
        f"The paper's claims checked on the results{where}: {count['pass']} hold (✓), "
        f"{count['fail']} do not (✗), {count['not_checked']} could not be checked (–).",
        "",
        _rules(),
        "",
        "| claim | where | holds | students | compared with | why not | under-trained |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        lines.append(
            f"| {CLAIM_TEXT[c.kind]} | {_cell(c.subject)} | {STATUS_MARK[c.status]} | "
            f"{_number(c.ours, c.ours_name, c.kind)} | "
            f"{_number(c.reference, c.reference_name, c.kind)} | {_cell(c.reason)} | "
            f"{_cell(c.note)} |"
        )
    if not claims:
        lines.append("| (no results to check) | | – | | | | |")
    return "\n".join(lines) + "\n"
