# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv on first
# use (torch pinned to the CPU build that pip finds locally; pyproject keeps a loose range for
# GPU clusters) and reinstalls only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tte-scale demo --out $(DEMO_OUT)

# As root, the set-up step installs SLURM + munge (Debian) for the real-cluster tests in tests/slurm.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@bash tests/support/slurm_setup.sh
	$(PY) -m pytest $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_OUT)
