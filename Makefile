# ust: two entry points, `make reproduce` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?=
TORCH := torch==2.14.1 torchvision==0.29.1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv test reproduce report system-data lint format benchmarks

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --no-cache-dir --disable-pip-version-check -e ".[dev]"
	touch $@

# Offline data from Debian packages: Fashion-MNIST (dataset-fashion-mnist), the colour texture
# photographs of the MVTec-layout texture set (colobot-common-textures) and the photographs of the
# teachers' photo pool (mate-backgrounds, lomiri-wallpapers-16.04); each entry is path:package.
SYSTEM_DATA := /usr/share/datasets/fashion-mnist:dataset-fashion-mnist \
	/usr/share/games/colobot/textures:colobot-common-textures \
	/usr/share/backgrounds/mate/nature:mate-backgrounds \
	/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg:lomiri-wallpapers-16.04
system-data:
	@missing=""; for entry in $(SYSTEM_DATA); do \
	  [ -e "$${entry%%:*}" ] || missing="$$missing $${entry##*:}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "note: install Debian's$$missing package(s) for the offline profiles"; fi

# Runs the DVC pipeline on the active profile, or on PROFILE=<name> (smoke, default, offline_full, paper).
reproduce: venv system-data
	$(if $(PROFILE),$(BIN)/python -m ust.experiments.params use $(PROFILE),)
	$(BIN)/dvc repro
	$(BIN)/python -m ust.report.readme_sync snapshot
	$(BIN)/python -m ust.report.readme_sync sync

# Renders the executed notebooks of results/notebooks to HTML in results/html (the `html` stage).
report: venv
	$(BIN)/dvc repro html

test: venv
	$(BIN)/python -m pytest -n 2 -q

lint:
	$(BIN)/ruff check ust tests benchmarks notebooks
	$(BIN)/ruff format --check ust tests benchmarks notebooks

format:
	$(BIN)/ruff format ust tests benchmarks notebooks

benchmarks: venv
	$(BIN)/python benchmarks/dense_speed.py
	$(BIN)/python benchmarks/metrics_scale.py
