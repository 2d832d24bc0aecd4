# The README's two commands: `make run` and `make test`. Both install what they need first.
#
# Everything runs in a project virtual environment, .venv, made with the first `python3` on PATH
# (PEP 668: a distribution's Python refuses `pip install` outside one). It is reused while it works,
# recreated when it is broken (e.g. its Python was removed), and refreshed when pyproject.toml changes.
#   make PYTHON=/path/to/python test   uses that interpreter as it is, with no virtual environment
#   make BASE_PYTHON=python3.12 test   builds .venv from another interpreter
#   make VENV_FLAGS=--system-site-packages test   lets .venv see the base interpreter's packages
VENV ?= .venv
BASE_PYTHON ?= python3
VENV_FLAGS ?=
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
USE_VENV := 1
endif
PIP ?= $(PYTHON) -m pip
STAMP := $(VENV)/.tunedesk-installed
export QT_QPA_PLATFORM ?= offscreen
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: install venv run demo app test test-fast lint bench screenshots bundle bundle-smoke

ifdef USE_VENV
# A venv whose interpreter no longer starts (base Python upgraded or removed, a half-made folder) is
# rebuilt from scratch; the install stamp goes with it.
venv:
	@if ! $(VENV)/bin/python -c "import sys" >/dev/null 2>&1; then \
	    if [ -e $(VENV) ]; then echo "$(VENV) is broken: recreating it"; rm -rf $(VENV); fi; \
	    echo "Creating the virtual environment $(VENV) with $$(command -v $(BASE_PYTHON))"; \
	    $(BASE_PYTHON) -m venv $(VENV_FLAGS) $(VENV) || { \
	        echo "error: '$(BASE_PYTHON) -m venv' failed."; \
	        echo "hint: on Debian/Ubuntu: sudo apt install python3-venv (Fedora: python3 -m ensurepip), or make PYTHON=... to use an interpreter as it is"; \
	        rm -rf $(VENV); exit 1; }; \
	fi

$(STAMP): pyproject.toml | venv
	$(PIP) install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $@

install: venv
	@$(PYTHON) -c "import tunedesk" >/dev/null 2>&1 || rm -f $(STAMP)
	@$(MAKE) --no-print-directory $(STAMP)
else
install:
	$(PIP) install --quiet --disable-pip-version-check -e ".[dev]"
endif

# Fine-tune the bundled demo model on the bundled data, on this machine, offline.
run: install
	$(PYTHON) -m tunedesk demo --compare-scratch

demo: run

# Open the desktop app.
app: install
	QT_QPA_PLATFORM= $(PYTHON) -m tunedesk

# PYTEST_ARGS narrows a run: make test PYTEST_ARGS="tests/engine/test_timm.py -k export"
test: install
	$(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

# ruff (lint + format), mypy (types), import-linter (Qt boundary, layers, no import cycles).
# Settings for all three live in pyproject.toml; .pre-commit-config.yaml runs the same before a commit.
lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()"

bench: install
	$(PYTHON) benchmarks/engine_vs_plain.py

screenshots: install
	for f in docs/screenshots/shoot_*.py; do $(PYTHON) $$f || exit 1; done

# The stand-alone app (PyInstaller one-folder, torch included) and its archive; slow: see packaging/README.md.
bundle: install
	$(PIP) install --quiet --disable-pip-version-check "pyinstaller>=6.10"
	$(PYTHON) packaging/bundle.py

# Start the bundled app offscreen and run its `tunedesk demo --json`; prints size and start time.
bundle-smoke:
	$(PYTHON) packaging/smoke_bundle.py
