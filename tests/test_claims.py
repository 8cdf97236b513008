"""ust.report.claims: the paper's claims checked on a summary (✓ / ✗ / – with the reason), the
"under-trained (N steps)" labels of every table, and the optimiser-step counts the experiments
record (checked against the optimiser updates the training loops really take)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ust.experiments import oneclass
from ust.experiments.params import load_params
from ust.paths import ROOT
from ust.report import readme_sync
from ust.report.claims import (
    CLAIM_TEXT,
    MIN_OPTIMIZER_STEPS,
    PIXEL_FLOOR,
    RAW_NN,
    Claim,
    claims_markdown,
    evaluate_claims,
    undertrained_label,
)
from ust.report.tables_mvtec import mvtec_steps, mvtec_tables, training_cell
from ust.report.tables_oneclass import oneclass_table, step_ranges, to_markdown
from ust.train.students import StudentTrainingConfig

LOW, HIGH = MIN_OPTIMIZER_STEPS - 1, MIN_OPTIMIZER_STEPS


def _m(au_pro: float, pixel: float = 0.8) -> dict:
    return {"au_pro": au_pro, "pixel_auroc": pixel, "image_auroc": 0.7}


def passing_summary() -> dict:
    """Every claim holds: multiscale beats every baseline and the raw-pixel floor, is within 5 %
    of the best scale, every pixel AUROC > 0.5, students above 1nn_pixels."""
    row = {
        "p17": _m(0.80),
        "p33": _m(0.84),
        "p65": _m(0.70),
        "multiscale": _m(0.81),  # 0.81 ≥ 0.95 × 0.84 = 0.798
        **{m: _m(0.5) for m in ("1nn", "ocsvm", "kmeans", "l2ae", "vae")},
        "ssim_ae": _m(0.6),
        RAW_NN: _m(0.3),
    }
    return {
        "profile": "test",
        "mvtec": {"carpet": row},
        "oneclass_mean_auc": {
            "mnist": {"students:mc": 0.97, PIXEL_FLOOR: 0.95, "igd": 0.5},
            "fashion_mnist": {"students:mc": 0.93, "students:kc": 0.94, PIXEL_FLOOR: 0.92},
        },
    }


def failing_summary() -> dict:
    """One failure per claim kind (brick), plus a texture without its floor (grid)."""
    brick = {
        "p17": _m(0.60, pixel=0.45),  # (iv): at or below chance
        "p33": _m(0.50),
        "multiscale": _m(0.40),  # (ii): 0.40 < 0.95 × 0.60
        "1nn": _m(0.30),
        "l2ae": _m(0.55),  # (i): above multiscale
        "vae": _m(0.45),  # (i): above multiscale as well
        RAW_NN: _m(0.42),  # (iii): the floor is above the students
    }
    grid = {"p17": _m(0.7), "multiscale": _m(0.7), "1nn": _m(0.2)}
    return {
        "profile": "test",
        "mvtec": {"brick": brick, "grid": grid},
        "oneclass_mean_auc": {"mnist": {"students:mc": 0.90, PIXEL_FLOOR: 0.93}},
        "steps": {
            "mvtec": {"brick": {"p17": 36, "p33": 36, "multiscale": 36, "l2ae": HIGH}},
            "oneclass": {"mnist": {"students:mc": {"min": 18, "max": 27}}},
        },
    }


def _one(claims: list[Claim], kind: str, subject: str) -> Claim:
    (claim,) = [c for c in claims if c.kind == kind and c.subject == subject]
    return claim


# ------------------------------------------------------------------------------------------------
# claims


def test_passing_summary_holds_every_claim():
    claims = evaluate_claims(passing_summary(), texture_categories=["carpet"])
    assert {c.status for c in claims} == {"pass"}
    kinds = [c.kind for c in claims]
    assert kinds == sorted(kinds, key=list(CLAIM_TEXT).index)  # grouped in the order (i)–(iv)
    assert kinds.count("floor") == 4  # carpet + mnist + two fashion_mnist students rows
    best = _one(claims, "baselines", "carpet")
    assert (best.ours, best.reference, best.reference_name) == (0.81, 0.6, "ssim_ae")
    scale = _one(claims, "multiscale", "carpet")
    assert (scale.reference, scale.reference_name) == (0.84, "p33")
    assert all(c.reason == "" and c.note == "" for c in claims)


def test_failing_summary_gives_each_claim_its_reason():
    claims = evaluate_claims(failing_summary(), texture_categories=["brick", "grid"])
    base = _one(claims, "baselines", "brick")
    assert base.status == "fail" and base.reference_name == "l2ae" and base.reference == 0.55
    assert base.reason == "below l2ae 0.550, vae 0.450"
    assert base.note == "multiscale students under-trained (36 steps)"  # l2ae: enough steps

    multi = _one(claims, "multiscale", "brick")
    assert multi.status == "fail" and multi.reference_name == "p17"
    assert multi.reason.startswith("33.3 % below p17 (allowed: 5 %, i.e. ≥ 0.570)")
    assert "p17 under-trained (36 steps)" in multi.note

    floor = _one(claims, "floor", "brick")
    assert floor.status == "fail" and floor.reference == 0.42
    assert floor.reason == "not above the raw-pixel floor: 0.400 ≤ 0.420"

    missing = _one(claims, "floor", "grid")
    assert missing.status == "not_checked" and missing.reason.startswith("floor not computed")

    pixel = _one(claims, "pixel_auroc", "brick")
    assert pixel.status == "fail" and (pixel.ours, pixel.ours_name) == (0.45, "p17")
    assert pixel.reason == "at or below chance: p17 0.450"
    assert _one(claims, "pixel_auroc", "grid").status == "pass"

    mnist = _one(claims, "floor", "mnist")
    assert mnist.status == "fail" and mnist.ours_name == "students:mc"
    assert mnist.reason == "not above the raw-pixel floor: 0.9000 ≤ 0.9300"
    assert mnist.note == "students:mc under-trained (18–27 steps)"


def test_missing_inputs_are_not_checked_rather_than_hidden():
    summary = {
        "mvtec": {"wood": {"p17": _m(0.5)}},  # no multiscale, no baseline, no floor
        "oneclass_mean_auc": {"mnist": {"students:mc": 0.9}},  # no 1nn_pixels
    }
    claims = evaluate_claims(summary, texture_categories=["wood"])
    status = {(c.kind, c.subject): (c.status, c.reason) for c in claims}
    assert status["baselines", "wood"] == ("not_checked", "multiscale not computed")
    assert status["multiscale", "wood"] == ("not_checked", "multiscale not computed")
    assert status["floor", "wood"][0] == "not_checked"
    assert status["floor", "mnist"] == (
        "not_checked",
        f"floor not computed (no {PIXEL_FLOOR} result)",
    )
    assert status["pixel_auroc", "wood"][0] == "pass"  # p17 0.8 > 0.5
    # an object category without the floor gets no floor claim; one with it does
    objects = evaluate_claims({"mvtec": {"bottle": {"multiscale": _m(0.5)}}})
    assert "floor" not in {c.kind for c in objects}
    with_floor = evaluate_claims({"mvtec": {"bottle": {"multiscale": _m(0.5), RAW_NN: _m(0.1)}}})
    assert _one(with_floor, "floor", "bottle").status == "pass"


def test_markdown_shows_marks_numbers_reasons_and_the_rules():
    claims = evaluate_claims(failing_summary(), texture_categories=["brick", "grid"])
    text = claims_markdown(claims, "test")
    assert text.startswith("The paper's claims checked on the results of profile `test`:")
    n_fail = sum(c.status == "fail" for c in claims)
    assert f"{n_fail} do not (✗)" in text and "1 could not be checked (–)" in text
    assert "0.95 × the best single scale" in text and "5 000 optimiser steps" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| (i) ") and "| brick |" in ln)
    assert "| ✗ |" in row and "0.400 (multiscale)" in row
    assert "0.550 (l2ae, the best baseline)" in row and "below l2ae 0.550, vae 0.450" in row
    assert "0.9000 (students:mc)" in text and "0.9300 (1nn_pixels)" in text
    assert "under-trained (18–27 steps)" in text
    ok = claims_markdown(evaluate_claims(passing_summary(), texture_categories=["carpet"]))
    assert "| ✓ |" in ok and "| ✗ |" not in ok and "0 do not (✗)" in ok
    assert "(no results to check)" in claims_markdown([])


def test_claims_are_stored_in_the_summary_and_written_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles/smoke.yaml"))
    summary = failing_summary()
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    md = readme_sync.rederive_claims(path)
    stored = json.loads(path.read_text())
    assert md == tmp_path / "claims.md" and "| ✗ |" in md.read_text()
    assert stored["steps"] == summary["steps"]  # the rest of the summary is kept
    first = stored["claims"][0]
    assert first["claim"] == CLAIM_TEXT["baselines"] and first["holds"] is False
    assert first["status"] == "fail" and first["reason"] == "below l2ae 0.550, vae 0.450"
    assert {c["kind"] for c in stored["claims"]} == set(CLAIM_TEXT)
    assert "claims.md" in readme_sync.SNAPSHOT_FILES


# ------------------------------------------------------------------------------------------------
# under-trained labels


def test_label_below_the_threshold_only():
    assert undertrained_label(LOW) == f"under-trained ({LOW} steps)"
    assert undertrained_label(HIGH) == "" and undertrained_label(10 * HIGH) == ""
    assert undertrained_label(None) == "" and undertrained_label(float("nan")) == ""
    assert undertrained_label(18, 27) == "under-trained (18–27 steps)"
    assert undertrained_label(18, 18) == "under-trained (18 steps)"
    assert training_cell([("p = 17", 36), ("p = 33", 36), ("l2ae", 50), ("vae", HIGH)]) == (
        "p = 17, p = 33: under-trained (36 steps); l2ae: under-trained (50 steps)"
    )
    assert training_cell([("p = 17", None), ("p = 33", HIGH)]) == ""


def _oneclass_frame(steps: dict[str, list[int | None]]) -> pd.DataFrame:
    rows = []
    for key, per_class in steps.items():
        method, _, teacher = key.partition(":")
        for c, n in enumerate(per_class):
            rows.append(
                {
                    "dataset": "mnist",
                    "method": method,
                    "teacher_config": teacher,
                    "class": c,
                    "auc": 0.9,
                    "source": "s",
                    "description": "d",
                    "path": f"{key}/{c}",
                    "optimizer_steps": n,
                }
            )
    return pd.DataFrame(rows)


def test_oneclass_rows_below_the_threshold_are_labelled():
    df = _oneclass_frame(
        {
            "students:mc": [18, 27],
            "igd": [HIGH, HIGH + 5],
            "1nn:mc": [None, None],
            "vae:mc": [LOW, HIGH],
        }
    )
    assert step_ranges(df, "mnist") == {
        "students:mc": (18, 27),
        "igd": (HIGH, HIGH + 5),
        "vae:mc": (LOW, HIGH),
    }
    labels = readme_sync.oneclass_labels(df, "mnist")
    assert labels == {
        "students:mc": "under-trained (18–27 steps)",
        "vae:mc": f"under-trained ({LOW}–{HIGH} steps)",
    }
    text = to_markdown(oneclass_table(df, "mnist"), labels)
    assert "| students:mc | ours, under-trained (18–27 steps) |" in text
    assert "| igd | ours |" in text and "| 1nn:mc | ours |" in text  # enough / no steps: no label
    # the published and difference rows of a labelled method are not relabelled
    assert "| students:mc | ours − published |" in text
    assert step_ranges(df.drop(columns="optimizer_steps"), "mnist") == {}


def test_collect_results_reads_the_recorded_steps(tmp_path):
    from types import SimpleNamespace

    data = SimpleNamespace(
        name="mnist",
        source="s",
        description="d",
        normal_class=0,
        normal_class_name="0",
        train=[0] * 4,
        val=[0],
        test=[0] * 3,
        test_labels=torch.tensor([0, 1, 1]),
    )
    oneclass.write_class_result(
        oneclass.result_record(data, "students", 0.9, teacher_config="mc", optimizer_steps=18),
        tmp_path / "students-mc.json",
    )
    oneclass.write_class_result(oneclass.result_record(data, "1nn", 0.8), tmp_path / "1nn.json")
    df = oneclass.collect_results(tmp_path).set_index("method")
    assert df.loc["students", "optimizer_steps"] == 18
    assert pd.isna(df.loc["1nn", "optimizer_steps"])


def _write_mvtec(root, category: str, scales, steps: dict) -> None:
    """Single-scale ``metrics.json`` per scale and the multiscale folder's files, with the given
    ``optimizer_steps`` per model (left out where a model has none)."""
    table = {}
    for p in scales:
        run = root / "mvtec" / category / f"p{p}"
        run.mkdir(parents=True)
        extra = {"optimizer_steps": steps[f"p{p}"]} if f"p{p}" in steps else {}
        (run / "metrics.json").write_text(json.dumps({**_m(0.5), **extra}))
        table[str(p)] = _m(0.5)
    multi = root / "mvtec_multiscale" / category
    multi.mkdir(parents=True)
    (multi / "metrics.json").write_text(json.dumps(_m(0.6)))
    (multi / "table.json").write_text(json.dumps({**table, "multiscale": _m(0.6)}))
    base = {m: {**_m(0.4), "n_fit": 10} for m in ("1nn", "l2ae", "vae")}
    for m in ("l2ae", "vae"):
        if m in steps:
            base[m]["optimizer_steps"] = steps[m]
    (multi / "baselines.json").write_text(json.dumps(base))
    ssim = {**_m(0.3), **({"optimizer_steps": steps["ssim_ae"]} if "ssim_ae" in steps else {})}
    (multi / "ssim_ae.json").write_text(json.dumps(ssim))


def test_mvtec_tables_label_under_trained_rows(tmp_path):
    _write_mvtec(tmp_path, "brick", [17, 33], {"p17": 36, "p33": HIGH, "l2ae": 50, "ssim_ae": LOW})
    _write_mvtec(tmp_path, "grass", [17, 33], {"p17": HIGH, "p33": HIGH, "vae": HIGH})
    kw = {"results_dir": tmp_path / "mvtec", "multiscale_dir": tmp_path / "mvtec_multiscale"}
    t3, t2 = mvtec_tables(
        kw["results_dir"],
        ["brick", "grass"],
        "fake",
        "test",
        scales=[17, 33],
        baseline_p=33,
        multiscale_dir=kw["multiscale_dir"],
    )
    assert (
        "| category | p = 17 | p = 33 | multiscale | paper p=17 / 33 / multi | under-trained |"
        in t3
    )
    brick3 = next(ln for ln in t3.splitlines() if ln.startswith("| brick |"))
    assert brick3.endswith("| p = 17, multiscale: under-trained (36 steps) |")
    grass3 = next(ln for ln in t3.splitlines() if ln.startswith("| grass |"))
    assert grass3.endswith("|  |") and "under-trained (" not in grass3
    brick2 = next(ln for ln in t2.splitlines() if ln.startswith("| brick |"))
    assert brick2.endswith(
        "| multiscale: under-trained (36 steps); l2ae: under-trained (50 steps); "
        f"ssim_ae: under-trained ({LOW} steps) |"
    )
    assert "p=33" not in brick2.rsplit("|", 2)[1]  # p = 33 has enough steps
    steps = mvtec_steps(["brick", "grass"], [17, 33], **kw)
    assert steps["brick"] == {"p17": 36, "p33": HIGH, "multiscale": 36, "l2ae": 50, "ssim_ae": LOW}
    assert steps["grass"] == {"p17": HIGH, "p33": HIGH, "multiscale": HIGH, "vae": HIGH}
    # results without recorded steps: no column at all
    _write_mvtec(tmp_path / "old", "brick", [17], {})
    old3, old2 = mvtec_tables(
        tmp_path / "old/mvtec",
        ["brick"],
        "fake",
        "test",
        scales=[17],
        baseline_p=17,
        multiscale_dir=tmp_path / "old/mvtec_multiscale",
    )
    assert "under-trained" not in old3 + old2


def _teacher(root, p: int, iterations: int) -> None:
    run = root / f"p{p}" / "mc"
    run.mkdir(parents=True)
    metrics = {
        "patch_size": p,
        "losses": "mc",
        "configuration": {"lambda_k": 0, "lambda_m": 1, "lambda_c": 1},
        "iterations": iterations,
        "triplet_accuracy_random_init": 0.5,
        "triplet_accuracy_trained": 0.9,
        "iterations_per_s": 1.0,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_teachers_table_and_summary_steps(tmp_path, monkeypatch):
    params = load_params(ROOT / "profiles/smoke.yaml")
    params["mvtec"] = {"categories": ["brick"], "patch_sizes": [17]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("UST_PARAMS", str(tmp_path / "params.yaml"))
    _teacher(tmp_path / "teachers", 17, 200)
    _teacher(tmp_path / "teachers", 33, 50_000)
    table = readme_sync.teachers_table(tmp_path / "teachers")
    assert "| 17 | mc | 0 / 1 / 1 | 200, under-trained (200 steps) | 0.500 |" in table
    assert "| 33 | mc | 0 / 1 / 1 | 50000 | 0.500 |" in table
    _write_mvtec(tmp_path, "brick", [17], {"p17": 36, "l2ae": 50})
    steps = readme_sync.training_steps(
        tmp_path / "teachers", tmp_path / "none", tmp_path / "mvtec", tmp_path / "mvtec_multiscale"
    )
    assert steps == {
        "min_optimizer_steps": MIN_OPTIMIZER_STEPS,
        "teachers": {"p17-mc": 200, "p33-mc": 50_000},
        "oneclass": {},
        "mvtec": {"brick": {"p17": 36, "multiscale": 36, "l2ae": 50}},
    }


# ------------------------------------------------------------------------------------------------
# the recorded step counts are the optimiser updates the loops take


class _CountSteps:
    """Counts ``step()`` calls per optimiser while patched over ``torch.optim.Adam.step``."""

    def __init__(self, monkeypatch):
        self.calls: dict[int, int] = {}
        real = torch.optim.Adam.step

        def step(opt, *args, **kwargs):
            self.calls[id(opt)] = self.calls.get(id(opt), 0) + 1
            return real(opt, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Adam, "step", step)


def test_student_steps_match_the_training_loop(monkeypatch):
    from ust.method.networks import patch_net
    from ust.method.students import StudentTeacher, fit_target_statistics, make_students
    from ust.train.students import optimizer_steps, train_students

    torch.manual_seed(0)
    teacher = patch_net(17, d=8)
    model = StudentTeacher(teacher, make_students(teacher, 2, seed=0), dense=False)
    images = torch.rand(10, 3, 17, 17)
    fit_target_statistics(model, images)
    config = StudentTrainingConfig(epochs=2, batch_size=4)
    counter = _CountSteps(monkeypatch)
    train_students(model, images, config, progress=False)
    expected = optimizer_steps(10, config)
    assert expected == 2 * 3
    assert sorted(counter.calls.values()) == [expected, expected]  # per student
    assert optimizer_steps(10, config, world_size=2) == 2 * 2


def test_autoencoder_and_igd_steps_match_their_loops(monkeypatch):
    from ust.baselines import igd
    from ust.baselines.autoencoders import make_autoencoder, train_autoencoder

    counter = _CountSteps(monkeypatch)
    ae = make_autoencoder("l2ae", in_dim=8, seed=0)
    train_autoencoder(
        ae, np.random.rand(10, 8).astype(np.float32), epochs=3, batch_size=4, progress=False
    )
    assert list(counter.calls.values()) == [oneclass.autoencoder_optimizer_steps(10, 3, 4)] == [9]

    m_steps = []
    real = igd._m_step
    monkeypatch.setattr(igd, "_m_step", lambda *a: m_steps.append(1) or real(*a))
    cfg = igd.IGDConfig(image_size=32, batch_size=8, epochs=1, progress=False, seed=0)
    igd.train_igd(torch.rand(17, 3, 32, 32), cfg)  # batches 8, 8 and a dropped single image
    assert len(m_steps) == oneclass.igd_optimizer_steps(17, 8, 1) == 2
    assert (
        oneclass.igd_optimizer_steps(18, 8, 3) == 9 and oneclass.igd_optimizer_steps(16, 8, 2) == 4
    )
    assert oneclass.igd_optimizer_steps(5, 1, 1) == 4  # batch 1: the last start is dropped


@pytest.mark.parametrize("kind", sorted(CLAIM_TEXT))
def test_every_claim_kind_is_described(kind):
    assert CLAIM_TEXT[kind].startswith("(")
