# ust: two entry points, `make reproduce` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?=
TORCH := torch==2.14.1 torchvision==0.29.1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv test reproduce preview report system-data browser lint format benchmarks

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

# The headless browser of tests/test_report_html.py (the page of `ust predict --report`, driven by
# selenium): Debian's chromium and chromedriver; each entry is path:package, as for system-data.
BROWSER_PACKAGES := /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver
browser:
	@missing=""; for entry in $(BROWSER_PACKAGES); do \
	  [ -x "$${entry%%:*}" ] || missing="$$missing $${entry##*:}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "note: install Debian's$$missing package(s) for the browser test of report.html"; fi

# Runs the DVC pipeline on the active profile, or on PROFILE=<name> (smoke, default, offline_full, paper).
reproduce: venv system-data
	$(if $(PROFILE),$(BIN)/python -m ust.experiments.params use $(PROFILE),)
	$(BIN)/dvc repro
	$(BIN)/python -m ust.report.readme_sync snapshot
	$(BIN)/python -m ust.report.readme_sync sync

# Lists the command of every stage `make reproduce` would run, computing nothing (also on a fresh
# clone: --force skips DVC's run-cache lookup, which needs the inputs to exist).
preview: venv
	$(BIN)/dvc repro --dry --force

# Renders the executed notebooks of results/notebooks to HTML in results/html (the `html` stage).
report: venv
	$(BIN)/dvc repro html

test: venv browser
	$(BIN)/python -m pytest -n 2 -q

lint:
	$(BIN)/ruff check ust tests benchmarks notebooks
	$(BIN)/ruff format --check ust tests benchmarks notebooks

format:
	$(BIN)/ruff format ust tests benchmarks notebooks

benchmarks: venv
	$(BIN)/python benchmarks/dense_speed.py
	$(BIN)/python benchmarks/metrics_scale.py
