"""Fitting one calibrated Student–Teacher scale (ust.train.fit), the recipe the MVTec protocol and
the Detector share: resume, reuse, and what a truncated file in the work folder does."""

import pytest
import torch

import ust.train.fit as fit_module
from ust.method.networks import patch_net
from ust.train.fit import CHECKPOINT, ENSEMBLE, FitData, FitSettings, fit_student_teacher
from ust.train.students import StudentTrainingConfig

SETTINGS = FitSettings(image_size=24, students=2, training=StudentTrainingConfig(epochs=2))


def _data() -> FitData:
    g = torch.Generator().manual_seed(0)
    train, val = torch.rand(4, 3, 24, 24, generator=g), torch.rand(2, 3, 24, 24, generator=g)
    return FitData(
        train, val, [f"t{i}.png" for i in range(4)], ["v0.png", "v1.png"], [(24, 24)] * 2
    )


def _teacher():
    torch.manual_seed(17)
    return patch_net(17, d=8).eval()


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_calibrates_and_reuses_a_finished_scale(tmp_path, monkeypatch):
    first = fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path)
    assert first.trained_now and first.model.calibrated
    assert (tmp_path / ENSEMBLE).is_file() and not (tmp_path / CHECKPOINT).exists()
    monkeypatch.setattr(fit_module, "train_students", lambda *a, **k: pytest.fail("retrained"))
    again = fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path)
    assert not again.trained_now and _same(first.model, again.model)
    assert again.model.score_stats == first.model.score_stats


def test_a_truncated_finished_model_is_set_aside_and_the_scale_fitted_again(tmp_path):
    reference = fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path / "ref").model
    fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path / "run")
    _truncate(tmp_path / "run" / ENSEMBLE)
    with pytest.warns(
        UserWarning, match=r"ensemble\.pt is truncated or corrupt.*fitting this scale"
    ):
        result = fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path / "run")
    assert result.trained_now and (tmp_path / "run" / f"{ENSEMBLE}.corrupt").is_file()
    assert _same(result.model, reference)  # refitted from scratch: the same model


def test_a_truncated_checkpoint_restarts_training_from_the_first_epoch(tmp_path):
    reference = fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path / "ref").model

    def stop(epoch, losses):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path / "run", on_epoch=stop)
    ckpt = tmp_path / "run" / CHECKPOINT
    assert ckpt.is_file()
    _truncate(ckpt)
    with pytest.warns(UserWarning, match=r"students\.ckpt is truncated or corrupt.*first epoch"):
        result = fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path / "run")
    assert (tmp_path / "run" / f"{CHECKPOINT}.corrupt").is_file()
    assert _same(result.model, reference)


def test_another_configuration_in_the_work_folder_is_refused(tmp_path):
    fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path)
    other = FitSettings(image_size=24, students=3, training=SETTINGS.training)
    with pytest.raises(ValueError, match="different configuration"):
        fit_student_teacher(_teacher(), _data(), other, tmp_path)


def test_a_padded_fit_is_saved_and_scored_with_its_padding(tmp_path):
    """training.padding reaches the targets, the students and the file: a reloaded reflect model
    scores like the fitted one, and differently from a zero-padded fit near the border."""
    from dataclasses import replace

    from ust.method.students import load_ensemble

    reflect = replace(SETTINGS, training=replace(SETTINGS.training, padding="reflect"))
    fitted = fit_student_teacher(_teacher(), _data(), reflect, tmp_path).model
    assert fitted.padding == "reflect"
    loaded, state = load_ensemble(tmp_path / ENSEMBLE)
    assert (state["padding"], loaded.padding) == ("reflect", "reflect")
    images = _data().val
    torch.testing.assert_close(loaded.anomaly_maps(images), fitted.anomaly_maps(images))
    zero = fit_student_teacher(_teacher(), _data(), SETTINGS, tmp_path / "zero").model
    assert zero.padding == "zero"
    assert not torch.equal(zero.target_mean, fitted.target_mean)
