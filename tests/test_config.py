"""Typed configuration (ust.experiments.config): every profile loads; a misspelt or missing key, an
unknown section and a value of the wrong type are refused with one line naming key, section and
file; defaults are the paper's; the stage glue turns sections into the experiments' settings."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from ust.experiments.config import (
    MDSConfig,
    MVTecBaselinesConfig,
    MVTecTrainConfig,
    OneClassTrainConfig,
    PipelineConfig,
    load_config,
)
from ust.experiments.params import load_params
from ust.paths import ROOT

PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


@pytest.fixture
def smoke() -> dict:
    return load_params(ROOT / "profiles/smoke.yaml")


def _write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _set(params: dict, dotted: str, value) -> dict:
    """A copy of ``params`` with ``value`` at ``a.b.c`` (``...`` deletes the key)."""
    out = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


def assert_refused(tmp_path: Path, params: dict, pattern: str) -> str:
    """Assert that load_config refuses ``params`` with one line that names the file and matches
    ``pattern``; returns the message."""
    path = _write(tmp_path, params)
    with pytest.raises(ValueError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert re.search(pattern, msg), msg
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------ profiles
@pytest.mark.parametrize("path", [*PROFILES, ROOT / "params.yaml"], ids=lambda p: p.name)
def test_every_profile_loads(path):
    config = load_config(path)
    raw = load_params(path)
    assert config.profile == raw["profile"]
    assert config.source == path.relative_to(ROOT).as_posix()
    assert set(config.teachers) == set(raw["teachers"])
    assert config.mvtec.patch_sizes == tuple(raw["mvtec"]["patch_sizes"])
    assert config.mvtec_baselines.p == raw["mvtec_baselines"].get("p", 65)
    for category in raw["mvtec"]["categories"]:
        assert isinstance(config.mvtec_train_for(category), MVTecTrainConfig)
    # every value equals the YAML one, with the declared type (lists become tuples)
    for name in ("oneclass_train", "mds", "mvtec_data", "mvtec_train", "mvtec_baselines"):
        for key, value in raw[name].items():
            typed = getattr(getattr(config, name), key)
            expected = tuple(value) if isinstance(value, list) else value
            assert typed == expected and type(typed) is type(expected), (name, key)


def test_defaults_are_the_paper_profile_values():
    paper = load_params(ROOT / "profiles/paper.yaml")
    for cls, name in (
        (OneClassTrainConfig, "oneclass_train"),
        (MDSConfig, "mds"),
        (MVTecTrainConfig, "mvtec_train"),
        (MVTecBaselinesConfig, "mvtec_baselines"),
    ):
        assert cls.from_params({}, source="x") == cls.from_params(paper[name], source="x"), name
    assert MVTecBaselinesConfig.from_params({}, source="x").p == 65


def test_missing_file_names_the_way_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="ust.experiments.params use default"):
        load_config(tmp_path / "none.yaml")


# ----------------------------------------------------------------------------- unknown keys
MISSPELT = [
    ("teacher", "teacher"),
    ("teachers.p17-mc", "teachers.p17-mc"),
    ("oneclass", "oneclass"),
    ("mvtec", "mvtec"),
    ("oneclass_data.mnist", "oneclass_data.mnist"),
    ("oneclass_train", "oneclass_train"),
    ("mds", "mds"),
    ("mvtec_data", "mvtec_data"),
    ("mvtec_train", "mvtec_train"),
    ("mvtec_category.brick", "mvtec_category.brick"),
    ("mvtec_baselines", "mvtec_baselines"),
    ("oneclass_dataset.mnist", "oneclass_dataset.mnist"),
]


@pytest.mark.parametrize("where, section", MISSPELT)
def test_a_misspelt_key_names_key_section_and_file(tmp_path, smoke, where, section):
    params = _set(smoke, f"{where}.epochz", 3)
    msg = assert_refused(
        tmp_path, params, rf"unknown key 'epochz' in section '{re.escape(section)}'; valid keys: "
    )
    assert "epochz" in msg


def test_a_close_misspelling_suggests_the_key(tmp_path, smoke):
    params = _set(smoke, "mvtec_train.epochz", 3)
    assert_refused(tmp_path, params, r"; valid keys: .*; did you mean 'epochs'\?$")


@pytest.mark.parametrize("key", ["patch_size", "lambda_k", "lambda_m", "lambda_c"], ids=lambda k: k)
def test_stage_owned_teacher_keys_are_refused(tmp_path, smoke, key):
    assert_refused(
        tmp_path,
        _set(smoke, f"teacher.{key}", 1),
        rf"key '{key}' in section 'teacher' is set by each teacher stage",
    )


def test_an_unknown_or_missing_section_is_refused(tmp_path, smoke):
    assert_refused(
        tmp_path,
        _set(smoke, "mvtec_trian", {"epochs": 1}),
        r"unknown section 'mvtec_trian'; valid sections: .*; did you mean 'mvtec_train'\?$",
    )
    assert_refused(tmp_path, _set(smoke, "mds", ...), r"missing section 'mds'$")
    # mvtec_category may be left out: no category deviates then
    config = load_config(_write(tmp_path, _set(smoke, "mvtec_category", ...)))
    assert config.mvtec_train_for("brick") == config.mvtec_train


# ------------------------------------------------------------------------- missing required
@pytest.mark.parametrize(
    "where, section, key",
    [
        ("teachers.p17-mc.p", "teachers.p17-mc", "p"),
        ("teachers.p33-mc.losses", "teachers.p33-mc", "losses"),
        ("oneclass.datasets", "oneclass", "datasets"),
        ("oneclass.classes", "oneclass", "classes"),
        ("mvtec.categories", "mvtec", "categories"),
        ("mvtec.patch_sizes", "mvtec", "patch_sizes"),
        ("oneclass_data.mnist.source", "oneclass_data.mnist", "source"),
        ("oneclass_data.mnist.root", "oneclass_data.mnist", "root"),
        ("mvtec_data.root", "mvtec_data", "root"),
    ],
)
def test_a_missing_required_key_names_key_section_and_file(tmp_path, smoke, where, section, key):
    assert_refused(
        tmp_path,
        _set(smoke, where, ...),
        rf"missing required key '{key}' in section '{re.escape(section)}'$",
    )


def test_a_missing_optional_key_takes_its_default(tmp_path, smoke):
    config = load_config(_write(tmp_path, _set(smoke, "mvtec_train.students", ...)))
    assert config.mvtec_train.students == 3
    config = load_config(_write(tmp_path, _set(smoke, "oneclass_data.mnist.download", ...)))
    assert config.oneclass_data["mnist"].download is False


# ------------------------------------------------------------------------------------ types
@pytest.mark.parametrize(
    "where, value, pattern",
    [
        ("mvtec_train.epochs", "3", r"key 'epochs' in section 'mvtec_train' must be int, got str"),
        ("mvtec_train.epochs", 3.0, r"must be int, got float 3.0"),
        ("mvtec_train.epochs", True, r"must be int, got bool True"),
        ("mvtec_train.lr", "1e-4", r"must be float, got str '1e-4' \(PyYAML reads .* 1.0e-4\)"),
        ("mvtec_data.synthetic", "yes", r"key 'synthetic' .* must be bool"),
        ("mvtec_data.root", 3, r"key 'root' .* must be str, got int"),
        ("mvtec.patch_sizes", 17, r"key 'patch_sizes' .* must be a list of int"),
        ("mvtec.patch_sizes", [17, "33"], r"'patch_sizes' in section 'mvtec' \(item 1\) must be"),
        ("oneclass_train.max_train", "all", r"key 'max_train' .* must be int, got str"),
        ("teacher.iterations", 2.5, r"key 'iterations' in section 'teacher' must be int"),
        ("mvtec_category.brick.seed", "0", r"'seed' in section 'mvtec_category.brick' must be int"),
        ("mvtec_train", [1, 2], r"section 'mvtec_train' must be a mapping"),
        ("mvtec_category.brick", 3, r"section 'mvtec_category.brick' must be a mapping"),
        ("teachers", ["p17-mc"], r"section 'teachers' must be a mapping"),
    ],
)
def test_values_of_the_wrong_type_are_refused(tmp_path, smoke, where, value, pattern):
    assert_refused(tmp_path, _set(smoke, where, value), pattern)


def test_values_are_converted_once(tmp_path, smoke):
    params = _set(smoke, "mvtec_train.lr", 1)
    params = _set(params, "oneclass_train.max_train", None)
    config = load_config(_write(tmp_path, params))
    assert config.mvtec_train.lr == 1.0 and type(config.mvtec_train.lr) is float
    assert config.oneclass_train.max_train is None
    assert config.oneclass.classes == (0,) and config.mvtec.categories == ("brick", "grass")
    assert config.teacher.iterations == smoke["teacher"]["iterations"]


@pytest.mark.parametrize(
    "where", ["teachers.p17-mc.losses", "mvtec_train.teacher_losses", "mds.teacher_losses"]
)
def test_unknown_loss_letters_are_refused(tmp_path, smoke, where):
    *_, key = where.split(".")
    assert_refused(tmp_path, _set(smoke, where, "kx"), rf"key '{key}' .*: loss configuration 'kx'")


def test_a_dataset_without_data_entry_is_refused(tmp_path, smoke):
    assert_refused(
        tmp_path,
        _set(smoke, "oneclass.datasets", ["mnist", "svhn"]),
        r"dataset 'svhn' .* has no entry in section 'oneclass_data'",
    )


# ------------------------------------------------------------------------------- overrides
def test_category_overrides_merge_over_mvtec_train(tmp_path, smoke):
    params = _set(smoke, "mvtec_category.brick", {"seed": 3, "epochs": 5})
    config = load_config(_write(tmp_path, params))
    brick, grass = config.mvtec_train_for("brick"), config.mvtec_train_for("grass")
    assert (brick.seed, brick.epochs) == (3, 5)
    assert grass == config.mvtec_train and grass.seed == 0
    assert config.mvtec_train_for("not_listed") == config.mvtec_train
    assert brick.image_size == config.mvtec_train.image_size


def test_dataset_overrides_merge_over_oneclass_train(tmp_path, smoke):
    params = _set(smoke, "oneclass_dataset.mnist", {"epochs": 100, "igd_epochs": 7})
    config = load_config(_write(tmp_path, params))
    mnist, fashion = config.oneclass_train_for("mnist"), config.oneclass_train_for("fashion_mnist")
    assert (mnist.epochs, mnist.igd_epochs) == (100, 7)
    assert fashion == config.oneclass_train
    assert mnist.batch_size == config.oneclass_train.batch_size


def test_a_bad_dataset_override_is_refused_with_its_section(tmp_path, smoke):
    assert_refused(
        tmp_path,
        _set(smoke, "oneclass_dataset.mnist", {"teacher_configs": ["mx"]}),
        r"oneclass_dataset\.mnist",
    )
    assert_refused(
        tmp_path,
        _set(smoke, "oneclass_dataset.mnist", {"epochs": "many"}),
        r"'epochs' in section 'oneclass_dataset.mnist' must be int",
    )


def test_teacher_for_sets_the_stage_fields(tmp_path, smoke):
    from ust.method.teacher import TeacherConfig

    config = load_config(_write(tmp_path, smoke))
    got = config.teacher_for(17, "kc", iterations=7)
    expected = TeacherConfig.from_dict(
        {
            **smoke["teacher"],
            "patch_size": 17,
            "lambda_k": 1.0,
            "lambda_m": 0.0,
            "lambda_c": 1.0,
            "iterations": 7,
        }
    )
    assert got == expected
    with pytest.raises(ValueError, match="unknown teacher settings"):
        config.teacher_for(17, "kc", itterations=7)


def test_a_raw_mapping_validates_like_a_file(smoke):
    config = PipelineConfig.from_params(smoke, source="here.yaml")
    assert config.source == "here.yaml" and config.profile == "smoke"
    with pytest.raises(ValueError, match=r"^here.yaml: unknown key 'x' in section 'mds'"):
        PipelineConfig.from_params(_set(smoke, "mds.x", 1), source="here.yaml")


# ------------------------------------------------------------------------------- stage glue
def test_stage_glue_uses_the_typed_sections(tmp_path, smoke, monkeypatch):
    from ust.experiments.mvtec_single import MVTecRunSettings
    from ust.stages import mvtec, mvtec_multiscale, oneclass, teacher
    from ust.train.fit import FitSettings
    from ust.train.students import StudentTrainingConfig

    params = _set(smoke, "mvtec.patch_sizes", [17, 65])
    params = _set(params, "mvtec_category.grass", {"seed": 4})
    params = _set(params, "mvtec_baselines.p", 33)
    monkeypatch.setenv("UST_PARAMS", str(_write(tmp_path, params)))
    dirs = mvtec.single_scale_dirs("grass", tmp_path / "single")
    assert dirs == {17: tmp_path / "single/grass/p17", 65: tmp_path / "single/grass/p65"}
    train = mvtec.mvtec_settings("grass")
    assert train.seed == 4
    expected_training = StudentTrainingConfig(
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        weight_decay=train.weight_decay,
        seed=4,
        batched=train.batched,
        crop=train.crop,
    )
    assert mvtec.run_settings(train) == MVTecRunSettings(
        FitSettings(
            image_size=train.image_size,
            students=train.students,
            training=expected_training,
            val_fraction=train.val_fraction,
            seed=4,
        )
    )
    base = load_config().mvtec_baselines
    assert base.p == 33
    feature = mvtec_multiscale.feature_baseline_settings(base, train)
    assert (feature.n_1nn, feature.n_fit, feature.seed) == (base.n_1nn, base.n_fit, 4)
    assert feature.methods == tuple(smoke["mvtec_baselines"]["methods"])
    ssim = mvtec_multiscale.ssim_ae_settings(base, train, progress=False)
    assert ssim.autoencoder.epochs == base.ssim_ae_epochs and ssim.stride == base.ssim_ae_stride
    one = load_config().oneclass_train
    assert oneclass.student_settings(one, students=7).students == 7
    assert "1nn_pixels" not in oneclass.baseline_settings(one).methods
    assert teacher.teacher_config(33, "mc").lambda_m == 1.0


# ------------------------------------------------------------------- baseline and IGD keys
def test_ssim_ae_protocol_keys_name_every_category_type():
    """docs/decisions.md#ssim-ae-protocol: the paper profile lists MVTec AD's five textures; the
    offline profiles also list the synthetic categories, so every offline category is cropped."""
    paper = load_config(ROOT / "profiles/paper.yaml").mvtec_baselines
    assert paper.texture_categories == ("carpet", "grid", "leather", "tile", "wood")
    assert set(paper.ssim_ae_vflip_categories) <= set(paper.ssim_ae_hflip_categories)
    assert not set(paper.ssim_ae_hflip_categories) & set(paper.texture_categories)
    assert (paper.ssim_ae_max_rotation, paper.ssim_ae_object_latent_dim) == (3.0, 128)
    for path in PROFILES:
        config = load_config(path)
        if config.mvtec_data.synthetic:
            assert set(config.mvtec.categories) <= set(config.mvtec_baselines.texture_categories)
            assert {"brick", "grass", "gravel"} <= set(config.mvtec_baselines.texture_categories)


def test_ocsvm_solver_is_checked_and_the_paper_profile_approximates(tmp_path, smoke):
    assert load_config(ROOT / "profiles/paper.yaml").mvtec_baselines.ocsvm_solver == "nystroem"
    assert load_config(ROOT / "profiles/smoke.yaml").mvtec_baselines.ocsvm_solver == "exact"
    params = _set(smoke, "mvtec_baselines.ocsvm_solver", "libsvm")
    assert_refused(
        tmp_path, params, r"key 'ocsvm_solver' in section 'mvtec_baselines' must be 'exact'"
    )
    params = _set(smoke, "mvtec_baselines.ocsvm_components", 10.5)
    assert_refused(
        tmp_path, params, r"key 'ocsvm_components' in section 'mvtec_baselines' must be int"
    )


def test_paper_profile_has_igds_published_budget_and_local_model():
    """docs/decisions.md#igd: 256 epochs, batch 64, every normal training image, global and local
    model (Eq. 13)."""
    igd = load_config(ROOT / "profiles/paper.yaml").oneclass_train
    assert (igd.igd_epochs, igd.igd_batch, igd.igd_max_train) == (256, 64, None)
    assert (igd.igd_local_patch, igd.igd_local_stride) == (16, 8)


# ------------------------------------------------------------------------------ teacher section
def test_paper_profile_pretrains_on_imagenet_with_the_printed_decorrelation():
    """The `paper` teachers see ImageNet, never the bundled photographs
    (docs/decisions.md#offline-teacher-images), and the (k, ·) teachers use the raw Σ C²
    (docs/decisions.md#decorrelation-normalisation)."""
    config = load_config(ROOT / "profiles/paper.yaml")
    assert config.teacher.images != "embedded"
    assert config.teacher.images == "data/imagenet/train"
    assert config.teacher.decorrelation_normalized == "auto"
    for name, stage in config.teachers.items():
        cfg = config.teacher_for(stage.p, stage.losses)
        assert cfg.normalizes_decorrelation() is ("k" not in stage.losses), name
    assert not config.teacher_for(65, "kc").loss_config()["decorrelation_normalized"]


@pytest.mark.parametrize("name", ["smoke", "default", "offline_full"])
def test_offline_profiles_keep_the_mean_decorrelation(name):
    config = load_config(ROOT / f"profiles/{name}.yaml")
    for stage in config.teachers.values():
        assert config.teacher_for(stage.p, stage.losses).normalizes_decorrelation()


def test_decorrelation_normalized_takes_true_false_or_auto(tmp_path, smoke):
    for value in (True, False, "auto"):
        params = _set(smoke, "teacher.decorrelation_normalized", value)
        config = load_config(_write(tmp_path, params))
        assert config.teacher.decorrelation_normalized == value
    where = "teacher.decorrelation_normalized"
    assert_refused(
        tmp_path, _set(smoke, where, "maybe"), r"section 'teacher': .*true, false or 'auto'"
    )
    assert_refused(
        tmp_path, _set(smoke, where, 1), r"'decorrelation_normalized' .* must be bool \| str"
    )


def test_student_choices_match_the_library():
    """The torch-free lists config checks params against equal the library's own."""
    from ust.experiments import config
    from ust.method.dense import PADDING_MODES
    from ust.train.students import SCHEDULES

    assert config.PADDING_MODES == PADDING_MODES
    assert config.SCHEDULES == SCHEDULES


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "padding",
            "circular",
            "'padding' in section 'mvtec_train' is 'circular'; expected one of "
            "zero, reflect, replicate",
        ),
        (
            "schedule",
            "cosine",
            "'schedule' in section 'mvtec_train' is 'cosine'; expected one of "
            "constant, warmup_cosine",
        ),
        ("warmup", 1.5, r"'warmup' in section 'mvtec_train' must lie in \[0, 1\)"),
    ],
)
def test_student_choices_are_checked_when_params_load(tmp_path, key, value, message):
    params = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    params["mvtec_train"][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=message):
        load_config(path)
