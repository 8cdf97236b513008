"""Teacher pretraining: loss configurations, files, exact resume, missing ResNet weights."""

import csv
import hashlib
import json
import math

import pytest
import torch
import torchvision

from ust.data.transforms import imagenet_normalize
from ust.method import distillation
from ust.method.dense import dense_net
from ust.method.distillation import (
    RESNET18_FILENAME,
    DistillationTarget,
    load_resnet18,
    resnet18_cache_path,
)
from ust.method.losses import decorrelation_loss
from ust.method.teacher import (
    TeacherConfig,
    compute_losses,
    init_teacher,
    load_teacher,
    triplet_accuracy,
    weighted_terms,
)
from ust.train.teacher import pretrain

TINY = {"patch_size": 17, "device": "cpu", "log_every": 1, "eval_triplets": 16}


@pytest.fixture(scope="module")
def resnet():
    # A locally built, randomly initialised ResNet-18 passed explicitly: tests never need the weights.
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


@pytest.fixture(scope="module")
def target(resnet):
    return DistillationTarget(model=resnet, input_size=None)  # native 17×17: fast on CPU


@pytest.fixture(scope="module")
def fixed_batch():
    from ust.data.patches import PatchTriplets

    return PatchTriplets("embedded", 17, 32, seed=123).batch(range(32))


def _losses(path):
    with open(path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("lambdas", [(1, 0, 1), (1, 1, 1), (0, 1, 1), (1, 0, 0)])
def test_short_run_lowers_loss_and_writes_loadable_teacher(tmp_path, target, fixed_batch, lambdas):
    lk, lm, lc = lambdas
    # The mean L_c: at batch 8 the raw sum is ≥ 2212 (rank bound) and only adds noise to this check
    # of the loop (the forms are compared in docs/decisions.md#decorrelation-normalisation).
    cfg = TeacherConfig(
        **TINY,
        iterations=24,
        batch_size=8,
        lambda_k=lk,
        lambda_m=lm,
        lambda_c=lc,
        decorrelation_normalized=True,
    )
    summary = pretrain(cfg, tmp_path / "t.pt", target=target if lk else None, progress=False)
    assert summary["steps"] == 24 and summary["iterations_per_s"] > 0
    assert 0.0 <= summary["triplet_accuracy_final"] <= 1.0
    # Every step is logged (log_every=1) with the columns DVC plots; unused terms are empty.
    with open(tmp_path / "t_loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "loss", "loss_k", "loss_m", "loss_c"] and len(rows) == 24
    assert (rows[0]["loss_m"] == "") == (lm == 0) and (rows[0]["loss_k"] == "") == (lk == 0)
    # The running loss drops: the median of the last 8 steps is below the mean of the first 3. (With
    # squared distances the triplet loss is heavy-tailed: after 24 steps the median triplet of a
    # fixed batch has loss 0 while a few high-contrast anchors reach 20-70, so a fixed-batch mean
    # of L_m measures those few triplets, not the loop.)
    losses = _losses(tmp_path / "t_loss.csv")
    assert sorted(losses[-8:])[3] < sum(losses[:3]) / 3
    net = load_teacher(tmp_path / "t.pt")
    if lk:  # L_k dominates: the loss on a fixed batch (no sampling noise) drops clearly too
        before = compute_losses(init_teacher(cfg), target, fixed_batch, cfg)[0].item()
        after = compute_losses(net, target, fixed_batch, cfg)[0].item()
        assert after < before
        assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    out = dense_net(net)(torch.rand(1, 3, 20, 23))
    assert out.shape == (1, 128, 20, 23) and not net.training
    blob = torch.load(tmp_path / "t.pt", weights_only=False)
    assert blob["net_config"]["p"] == 17 and blob["loss_config"]["lambda_m"] == lm
    assert not list(tmp_path.glob("*.tmp")) and (tmp_path / "t.ckpt").is_file()


def test_interrupted_run_resumes_bit_identical(tmp_path, target):
    cfg = dict(TINY, batch_size=4, lambda_k=1, lambda_m=1, lambda_c=1, checkpoint_every=2)
    full = pretrain(
        TeacherConfig(**cfg, iterations=6), tmp_path / "a" / "t.pt", target=target, progress=False
    )
    pretrain(
        TeacherConfig(**cfg, iterations=3), tmp_path / "b" / "t.pt", target=target, progress=False
    )
    resumed = pretrain(
        TeacherConfig(**cfg, iterations=6), tmp_path / "b" / "t.pt", target=target, progress=False
    )
    assert resumed["steps_this_call"] == 3 and resumed["steps"] == 6
    a = torch.load(tmp_path / "a" / "t.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "t.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["triplet_accuracy_init"] == full["triplet_accuracy_init"]
    # Changing a setting that alters the result is refused, with a way out.
    with pytest.raises(ValueError, match="different settings.*lr"):
        pretrain(
            TeacherConfig(**cfg, iterations=8, lr=1e-3),
            tmp_path / "b" / "t.pt",
            target=target,
            progress=False,
        )


def test_missing_resnet_weights_raise_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    assert (
        resnet18_cache_path()
        == tmp_path / "empty_torch_home" / "hub" / "checkpoints" / RESNET18_FILENAME
    )
    out = tmp_path / "run" / "t.pt"
    cfg = TeacherConfig(**TINY, iterations=2, batch_size=4, lambda_k=1)
    with pytest.raises(FileNotFoundError, match=f"{RESNET18_FILENAME}.*resnet_weights"):
        pretrain(cfg, out, progress=False)
    assert not (tmp_path / "run").exists()
    cfg.resnet_weights = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        pretrain(cfg, out, progress=False)
    assert not (tmp_path / "run").exists()


def test_resnet18_loads_from_file_and_hub_cache(tmp_path, monkeypatch, resnet):
    path = tmp_path / "weights.pth"
    torch.save(resnet.state_dict(), path)
    model = load_resnet18(path)
    assert isinstance(model.fc, torch.nn.Identity)
    assert torch.equal(model.conv1.weight, resnet.conv1.weight)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    # hub files are named after their SHA-256 prefix, and a mismatch is refused: name this one so
    monkeypatch.setattr(
        distillation,
        "RESNET18_FILENAME",
        f"resnet18-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth",
    )
    resnet18_cache_path().parent.mkdir(parents=True)
    resnet18_cache_path().write_bytes(path.read_bytes())
    assert torch.equal(load_resnet18().layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)


def test_distillation_target_is_frozen_resized_and_normalised(resnet):
    import torch.nn.functional as F

    from ust.data.transforms import imagenet_normalize

    target = DistillationTarget(model=resnet)  # default: resize to 224
    target.train()
    assert not target.model.training
    assert all(not p.requires_grad for p in target.parameters())
    x = torch.rand(2, 3, 17, 17)
    y = target(x)
    body = torch.nn.Sequential(*list(resnet.children())[:-1]).eval()  # up to the avgpool
    expected = body(imagenet_normalize(F.interpolate(x, (224, 224), mode="bilinear"))).flatten(1)
    assert y.shape == (2, 512) and torch.allclose(y, expected, atol=1e-5)
    assert isinstance(resnet.fc, torch.nn.Linear)  # the caller's model is not modified


def test_triplet_accuracy_counts_strict_wins():
    class Identity(torch.nn.Module):
        def forward(self, x):  # descriptor = raw normalised pixels
            return x.flatten(1)

    net = Identity()
    net.register_parameter("w", torch.nn.Parameter(torch.zeros(1)))  # so a device can be read
    a = torch.zeros(4, 3, 2, 2)
    p = torch.full((4, 3, 2, 2), 0.1)
    n = torch.tensor([0.5, 0.5, 0.05, 0.1]).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    # d(a,p) = d(a,n) for the last one: a tie is not a win → 2 of 4.
    assert triplet_accuracy(net, (a, p, n), batch_size=3) == 0.5


def test_config_from_params_section_and_bad_settings():
    cfg = TeacherConfig.from_dict({"patch_size": 65, "lambda_m": 1, "images": "embedded"})
    assert cfg.patch_size == 65 and cfg.lambda_m == 1 and cfg.iterations == 50_000
    with pytest.raises(ValueError, match="unknown teacher settings \\['lamda_k'\\]"):
        TeacherConfig.from_dict({"lamda_k": 1})
    with pytest.raises(ValueError, match="at least one > 0"):
        pretrain(TeacherConfig(lambda_k=0, lambda_c=0), "unused.pt")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pretrain(TeacherConfig(device="cuda", lambda_k=0), "unused.pt")


class _Recorder(torch.nn.Module):
    """A distillation target that remembers its input and returns zeros (B, 512)."""

    def forward(self, x):
        self.seen = x.clone()
        return torch.zeros(x.shape[0], 512)


@pytest.mark.parametrize("p", [17, 33, 65])
def test_distillation_target_sees_the_field_the_network_reads(p):
    """The target gets the anchor's centred rf×rf field, not the whole p×p patch (p = 65: the
    60×60 centre; before, ResNet saw 5 rows/columns the network never reads)."""
    cfg = TeacherConfig(patch_size=p, lambda_k=1, lambda_m=0, lambda_c=0, d=8)
    net, target = init_teacher(cfg), _Recorder()
    a = torch.rand(2, 3, p, p)
    compute_losses(net, target, (a, a, a), cfg)
    o, rf = net.offset, net.rf
    assert target.seen.shape == (2, 3, rf, rf) and (p != 65 or (o, rf) == (2, 60))
    assert torch.equal(target.seen, a[:, :, o : o + rf, o : o + rf])


def test_auto_decorrelation_is_raw_with_distillation_and_mean_without(fixed_batch, target):
    """decorrelation_normalized: auto = the raw Σ C² when λ_k > 0 (the (k, c) teachers as printed),
    the mean Σ C² / d(d − 1) when λ_k = 0 (docs/decisions.md#decorrelation-normalisation)."""
    # the default, as in the paper profile
    assert TeacherConfig().decorrelation_normalized == "auto"
    batch = tuple(x[:16] for x in fixed_batch)
    for lk, normalized in ((1.0, False), (0.0, True)):
        cfg = TeacherConfig(patch_size=17, lambda_k=lk, lambda_m=1, lambda_c=1)
        assert cfg.normalizes_decorrelation() is normalized
        assert cfg.loss_config()["decorrelation_normalized"] is normalized
        assert cfg.loss_config()["decorrelation_normalized_setting"] == "auto"
        net = init_teacher(cfg)
        _, terms = compute_losses(net, target, batch, cfg)
        with torch.no_grad():
            da = net(imagenet_normalize(batch[0]))
        expected = decorrelation_loss(da, normalized=normalized).item()
        assert terms["loss_c"] == pytest.approx(expected, rel=1e-5)
        assert (terms["loss_c"] > 100) is not normalized  # raw: above the rank bound ≈ 1117 at B=16
    for setting, expected in ((True, True), (False, False)):
        cfg = TeacherConfig(lambda_k=1, decorrelation_normalized=setting)
        assert cfg.normalizes_decorrelation() is expected
    with pytest.raises(ValueError, match="true, false or 'auto'"):
        TeacherConfig(decorrelation_normalized="sometimes")


def test_summary_and_dvclive_record_the_weighted_terms(tmp_path, target):
    """λ·L of each term (the balance of the loss) is in the summary and in dvclive's metrics.json."""
    cfg = TeacherConfig(
        **TINY, iterations=2, batch_size=4, lambda_k=0.5, lambda_m=2.0, lambda_c=3.0
    )
    summary = pretrain(
        cfg, tmp_path / "t.pt", target=target, progress=False, live_dir=tmp_path / "live"
    )
    assert summary["decorrelation_normalized"] is False  # auto with λ_k > 0
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    for when in ("init", "final"):
        row, weighted = summary[f"loss_{when}"], summary[f"loss_weighted_{when}"]
        assert weighted == {
            "k": 0.5 * row["loss_k"],
            "m": 2.0 * row["loss_m"],
            "c": 3.0 * row["loss_c"],
        }
        assert sum(weighted.values()) == pytest.approx(row["loss"], rel=1e-5)
        for term in "kmc":
            assert live[f"weighted_loss_{term}_{when}"] == pytest.approx(weighted[term])
    only_m = TeacherConfig(lambda_k=0, lambda_m=1, lambda_c=0)
    off = weighted_terms({"loss_k": math.nan, "loss_m": 1.5, "loss_c": 2.0}, only_m)
    assert off == {"k": None, "m": 1.5, "c": None}
