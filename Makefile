# The README's two commands: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export QT_QPA_PLATFORM ?= offscreen
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: install run demo app test test-fast lint bench screenshots

install:
	$(PIP) install --quiet --disable-pip-version-check -e ".[dev]"

# Fine-tune the bundled demo model on the bundled data, on this machine, offline.
run: install
	$(PYTHON) -m tunedesk demo --compare-scratch

demo: run

# Open the desktop app.
app: install
	QT_QPA_PLATFORM= $(PYTHON) -m tunedesk

test: install
	$(PYTHON) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow"

# ruff (lint + format), import-linter (Qt boundary, layers, no import cycles).
lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	lint-imports

bench: install
	$(PYTHON) benchmarks/engine_vs_plain.py

screenshots: install
	for f in docs/screenshots/shoot_*.py; do $(PYTHON) $$f || exit 1; done
