"""Parameters of the pipeline: ``params.yaml`` is the active configuration that DVC tracks; the
complete parameter sets live in ``profiles/<name>.yaml`` (smoke, default, offline_full, paper).

``make reproduce PROFILE=paper`` runs ``python -m ust.experiments.params use paper`` (copies the profile to
``params.yaml``) and then ``dvc repro``. Sweeps edit ``params.yaml`` through ``dvc exp run -S``.

This module reads the YAML; :mod:`ust.experiments.config` validates it and gives it types.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

import yaml

from ust.io import atomic_write_text
from ust.paths import ROOT, resolve

PARAMS_FILE = "params.yaml"
PROFILES_DIR = "profiles"


def profile_names() -> list[str]:
    return sorted(p.stem for p in resolve(PROFILES_DIR).glob("*.yaml"))


def active_params_file() -> Path:
    """``params.yaml`` at the repository root, or the file named by ``UST_PARAMS`` (tests use it to
    run notebooks on ``profiles/smoke.yaml`` without touching the tracked ``params.yaml``)."""
    return resolve(os.environ.get("UST_PARAMS") or PARAMS_FILE)


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole active parameter set (see :func:`active_params_file`)."""
    file = resolve(path) if path is not None else active_params_file()
    if not file.exists():
        raise FileNotFoundError(
            f"{file} not found: run `python -m ust.experiments.params use default` in {ROOT} to create it"
        )
    with open(file) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{file} must hold a mapping of sections, got {type(params).__name__}")
    return params


def section(
    name: str, *, overrides: str | None = None, path: str | os.PathLike | None = None
) -> dict:
    """One section of the active parameters as a plain dict, e.g. ``section("teacher")``.

    Unvalidated and untyped: the stages read the typed sections of
    :func:`ust.experiments.config.load_config` instead.

    ``overrides="mvtec_category.carpet"`` merges a per-item mapping (if present and non-empty) over
    the section, so one category can deviate without touching the others' stages.
    """
    params = load_params(path)
    if name not in params:
        raise KeyError(
            f"section {name!r} missing from {resolve(path or PARAMS_FILE)}; "
            f"known sections: {sorted(params)}"
        )
    out = copy.deepcopy(params[name])
    if overrides:
        node: Any = params
        for key in overrides.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node:
            out.update(copy.deepcopy(node))
    return out


def use_profile(name: str, *, root: str | os.PathLike | None = None) -> Path:
    """Make ``profiles/<name>.yaml`` the active ``params.yaml`` (atomic copy); returns its path."""
    base = Path(root) if root is not None else ROOT
    src = base / PROFILES_DIR / f"{name}.yaml"
    if not src.exists():
        known = sorted(p.stem for p in (base / PROFILES_DIR).glob("*.yaml"))
        raise ValueError(f"unknown profile {name!r}: expected one of {known}")
    text = src.read_text()
    data = yaml.safe_load(text)
    if data.get("profile") != name:
        raise ValueError(f"{src} must declare `profile: {name}`, found {data.get('profile')!r}")
    return atomic_write_text(base / PARAMS_FILE, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ust.experiments.params", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    use = sub.add_parser("use", help="copy profiles/<name>.yaml to params.yaml")
    use.add_argument("profile")
    sub.add_parser("show", help="print the active profile name")
    args = parser.parse_args(argv)
    if args.cmd == "use":
        print(f"active profile: {args.profile} ({use_profile(args.profile)})")
    else:
        print(load_params().get("profile"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
