"""The prepared GPU call, rehearsed on the CPU: ``benchmarks/gpu_run.sh OUT --tiny`` runs the CUDA
tests (skipped here), ``benchmarks/gpu_speed.py --tiny`` and the evidence run on the smoke profile,
each under its own timeout, and writes what the device tool brings back (at most 8 files of
16 MiB, no deeper than 2 folders). Also: the cost model's plan for ``profiles/gpu_offline.yaml``,
the hiding of packages the GPU image lacks, and the call's summary files.

On a busy machine the rehearsal's evidence part may stop units at its budget or timeout; the
tests accept units "not run" (recorded with the reason) but never a failed one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ust.experiments.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "gpu_run.sh"
#: the rehearsal's parts may take 10 + 25 + 85 s; pip, the summary and Python's start-ups add some
REHEARSAL_TIMEOUT_S = 170


def load_evidence_module():
    """benchmarks/gpu_evidence.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_evidence", RUN.with_name("gpu_evidence.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_evidence"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> Path:
    """The output folder of one ``gpu_run.sh OUT --tiny``, shared by the tests below."""
    out = tmp_path_factory.mktemp("gpu_run") / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("UST_ROOT", "UST_PARAMS")}
    done = subprocess.run(
        ["bash", str(RUN), str(out), "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=REHEARSAL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "gpu_run (tiny)" in done.stdout
    return out


def test_outputs_fit_what_the_device_tool_brings_back(rehearsal):
    files = [p for p in rehearsal.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    expected = {"summary.json", "run.log", "cuda_tests.json", "gpu_speed.jsonl", "evidence.json"}
    assert expected <= names <= expected | {"evidence_results.tar.gz"}
    assert len(files) <= 8
    for p in files:
        rel = p.relative_to(rehearsal)
        assert len(rel.parts) <= 3 and all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for s in rel.parts)
        assert p.stat().st_size <= 16 * 2**20
    summary = json.loads((rehearsal / "summary.json").read_text())
    assert summary["mode"] == "tiny" and summary["outputs"]["limits_ok"], summary["outputs"]
    assert [p["part"] for p in summary["parts"]] == ["cuda_tests", "gpu_speed", "evidence"]
    assert sum(p["limit_s"] for p in summary["parts"]) <= 120
    for part in summary["parts"]:
        assert part["seconds"] <= part["limit_s"] + 12  # + the grace before a kill
        assert part["rc"] in (0, 124, 137), part  # done, or stopped by its timeout


def test_cuda_tests_are_skipped_without_cuda(rehearsal):
    tests = json.loads((rehearsal / "cuda_tests.json").read_text())
    assert tests["rc"] == 0 and tests["tests"] >= 8
    assert tests["skipped"] == tests["tests"] and tests["passed"] == 0
    for case in tests["cases"]:
        assert case["test"].startswith("tests.test_cuda")
        assert "CUDA not available" in case["message"], case


def test_speed_lines(rehearsal):
    """Every line has the keys of its kind; unless the part ran out of time on a busy machine,
    the peak and the detector's eager variants were measured."""
    lines = [json.loads(x) for x in (rehearsal / "gpu_speed.jsonl").read_text().splitlines()]
    summary = json.loads((rehearsal / "summary.json").read_text())
    finished = next(p for p in summary["parts"] if p["part"] == "gpu_speed")["rc"] == 0
    assert lines[0]["benchmark"] == "environment" and lines[0]["device"] == "cpu"
    assert lines[0]["tiny"] is True
    measured = [x for x in lines[1:] if "error" not in x and "skipped" not in x]
    assert not [x for x in lines if "error" in x], lines
    keys = {
        "bf16_matmul": {"tflops", "seconds", "n"},
        "detector_inference": {"precision", "mode", "batch", "images_per_s", "achieved_tflops"},
        "student_training": {"p", "image", "images_per_s", "ms_per_student_step"},
        "teacher_step": {"p", "batch", "iterations_per_s"},
        "triplet_sampling": {"p", "ms_per_batch"},
        "teacher_pretrain": {"p", "iterations_per_s", "workers"},
        "done": {"seconds"},
    }
    for x in measured:
        assert keys[x["benchmark"]] <= set(x), x
    inference = [x for x in measured if x["benchmark"] == "detector_inference"]
    assert all(x["images_per_s"] > 0 for x in inference)
    if finished:
        assert lines[-1]["benchmark"] == "done"
        assert any(x["benchmark"] == "bf16_matmul" for x in measured)
        assert {x["precision"] for x in inference if x["mode"] == "eager"} == {
            "fp32",
            "tf32",
            "bf16",
        }
    bf16 = [x for x in inference if x["precision"] == "bf16" and x["mode"] == "eager"]
    assert all(0 < x["rel_l2_vs_fp32"] < 0.05 for x in bf16 if "rel_l2_vs_fp32" in x)


def test_evidence_record(rehearsal):
    record = json.loads((rehearsal / "evidence.json").read_text())
    assert record["profile"] == "smoke" and record["tiny"] is True
    assert record["substitutions"]["oneclass_train.igd_local_patch"]["run"] == 0
    names = [u["name"] for u in record["units"]]
    assert names[0] == "teacher@p17-mc"
    assert {"mvtec@brick-17", "mvtec_multiscale@brick", "bf16@brick", "oneclass@mnist-0"} <= set(
        names
    )
    statuses = {u["name"]: u.get("status") for u in record["units"]}
    assert "failed" not in statuses.values(), [u for u in record["units"] if "error" in str(u)]
    assert statuses["teacher@p17-mc"] == "done"
    for u in record["units"]:
        if u.get("status") == "not run":
            assert u["why"]
        if u.get("status") == "done":
            assert u["seconds"] >= 0 and u["result"]
    log = (rehearsal / "run.log").read_text()
    if (ROOT / "build" / "wheels").is_dir() and "environment" in record:
        # the rehearsal hid what the GPU image lacks: dvclive came from the carried wheels
        assert "packages the GPU image lacks are hidden" in log
        assert ".venv" not in (record["environment"]["modules"]["dvclive"] or "")


def test_gpu_profile_is_offline_full_with_gpu_budgets():
    """profiles/gpu_offline.yaml is written from offline_full.yaml (``gpu_evidence.py profile``):
    the same data and settings, the paper's 100 student epochs, 2,000 teacher iterations, CUDA."""
    ev = load_evidence_module()
    base = (ROOT / "profiles" / "offline_full.yaml").read_text()
    text = (ROOT / "profiles" / "gpu_offline.yaml").read_text()
    assert text == ev.gpu_profile_text(base), "run: python benchmarks/gpu_evidence.py profile"
    gpu = load_config(ROOT / "profiles" / "gpu_offline.yaml")
    full = load_config(ROOT / "profiles" / "offline_full.yaml")
    assert gpu.profile == "gpu_offline"
    assert (gpu.mvtec_data, gpu.photo_pool, gpu.mvtec_baselines) == (
        full.mvtec_data,
        full.photo_pool,
        full.mvtec_baselines,
    )
    assert gpu.teacher.iterations == 2000 and gpu.teacher.device == "cuda"
    assert gpu.mvtec.categories == ("brick", "rust", "moon")
    assert gpu.oneclass.datasets == ("mnist",)
    for category in gpu.mvtec.categories:
        train = gpu.mvtec_train_for(category)
        assert (train.epochs, train.device) == (100, "cuda")
        assert train.image_size == full.mvtec_train_for(category).image_size
    assert gpu.oneclass_train_for("mnist").epochs == 100


def test_cost_model_plans_the_gpu_profile():
    """The documented plan of profiles/gpu_offline.yaml at the assumed GPU rates: teachers
    (2,000 iterations, 99 s) and brick (three scales at 100 epochs, fusion, baselines, the bf16
    check: 263 s) fit the default budget of 405 s; all of the profile takes ~18 min."""
    ev = load_evidence_module()
    config = load_config(ROOT / "profiles" / "gpu_offline.yaml")
    assert config.mvtec_train.epochs == config.oneclass_train_for("mnist").epochs == 100
    units, cut = ev.plan_units(config, ev.GPU_ASSUMED, 405.0)
    assert cut == {}
    by_group: dict[str, float] = {}
    for u in units:
        by_group[u.group] = by_group.get(u.group, 0.0) + u.predicted_s
    teachers = sum(u.predicted_s for u in units if u.kind == "teacher")
    assert teachers == pytest.approx(99, abs=1)
    assert by_group["brick"] == pytest.approx(263, abs=1)
    assert by_group["mnist-0"] == pytest.approx(22, abs=1)
    assert sum(by_group.values()) / 60 == pytest.approx(18, abs=0.5)
    planned = ev.simulate(units, 405.0)
    assert planned == [u.name for u in units if u.kind == "teacher" or u.group == "brick"]
    # a budget too small for 2,000 iterations cuts them, equally for the three teachers
    small, cut = ev.plan_units(config, ev.GPU_ASSUMED, 150.0)
    assert cut["iterations_run"] < 2000 and cut["iterations_profile"] == 2000
    assert sum(u.predicted_s for u in small if u.kind == "teacher") <= 0.35 * 150 + 1


def test_measured_rates_replace_the_assumed_ones():
    ev = load_evidence_module()
    lines = [
        {"benchmark": "student_training", "p": 17, "image": 128, "ms_per_student_step": 2.0},
        {"benchmark": "student_training", "p": 17, "image": 256, "ms_per_student_step": 9.0},
        {
            "benchmark": "teacher_step",
            "p": 17,
            "batch": 64,
            "precision": "default",
            "iterations_per_s": 90.0,
        },
        {"benchmark": "triplet_sampling", "p": 65, "batch": 64, "ms_per_batch": 100.0},
        {"benchmark": "student_training", "p": 65, "image": 128, "error": "OutOfMemoryError"},
    ]
    rates = ev.measured_rates(ev.GPU_ASSUMED, lines, workers=10)
    assert rates.student_ms[17] == 2.0 and rates.student_ms[65] == ev.GPU_ASSUMED.student_ms[65]
    assert rates.teacher_its(17, 64) == 90.0  # below 10 workers × 1000 / 81 ms
    assert rates.teacher_its(65, 64) == pytest.approx(100.0)  # 10 workers × 1000 / 100 ms
    assert rates.source.startswith("measured")


def test_texture_folder_is_substituted_only_where_the_package_is_missing(tmp_path):
    """On the GPU machine (no Debian package) the set is checked against the carried sources."""
    ev = load_evidence_module()
    (tmp_path / "colobot_textures").mkdir()
    params = {"mvtec_data": {"texture_dir": str(tmp_path / "no-such-package")}}
    changes = ev.substitutions(params, tmp_path)
    assert params["mvtec_data"]["texture_dir"] == str(tmp_path / "colobot_textures")
    assert changes["mvtec_data.texture_dir"][0] == str(tmp_path / "no-such-package")
    present = {"mvtec_data": {"texture_dir": str(tmp_path)}}
    assert ev.substitutions(present, tmp_path) == {} and present["mvtec_data"][
        "texture_dir"
    ] == str(tmp_path)


def test_emulation_hides_what_the_gpu_image_lacks():
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu_evidence as g; "
        "g.emulate_gpu_image(None); import numpy, torch, yaml\n"
        "try:\n    import dvclive\nexcept ModuleNotFoundError as e:\n    print('hidden:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "hidden: No module named 'dvclive'" in done.stdout
    assert "GPU image does not hold it" in done.stdout


def test_pytest_summary_and_output_check(tmp_path):
    ev = load_evidence_module()
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" tests="2">'
        '<testcase classname="tests.test_cuda" name="test_a" time="0.5"/>'
        '<testcase classname="tests.test_cuda" name="test_b" time="0.1">'
        '<skipped message="CUDA not available: no GPU"/></testcase>'
        "</testsuite></testsuites>"
    )
    out = tmp_path / "out"
    out.mkdir()
    summary = ev.pytest_summary(junit, 0, out / "cuda_tests.json")
    assert (summary["tests"], summary["passed"], summary["skipped"]) == (2, 1, 1)
    assert summary["cases"][1]["message"].startswith("CUDA not available")
    assert ev.pytest_summary(tmp_path / "missing.xml", 2, out / "x.json")["error"]
    parts = tmp_path / "parts.tsv"
    parts.write_text("cuda_tests\t0\t3\t50\nevidence\t124\t420\t420\n")
    packed = ev.pack(out, parts, "gpu", 500.0)
    assert packed["parts"][1]["timed_out"] and packed["outputs"]["limits_ok"]
    for i in range(8):
        (out / f"extra{i}.txt").write_text("x")
    assert not ev.check_out(out)["limits_ok"]  # 11 files with summary.json
