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
# `make gpu-check`: offline (the node's own torch + this folder, made by `make wheelhouse`) when
# WHEELHOUSE/requirements.txt exists, else online (a torch build that fits the driver).
WHEELHOUSE ?= wheelhouse
GPU_OUT ?= benchmarks/results/gpu
GPU_CHECK_ARGS ?=
PY_VERSION ?= 3.12
WHEELHOUSE_ARGS ?=

.PHONY: demo test venv clean-demo gpu-check wheelhouse

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

# On a GPU node: set up .venv for the driver (or refuse in one line, exit 2), then the check's
# steps, each under its own timeout; results in $(GPU_OUT)/<device>/ with SUMMARY.md.
#   make gpu-check                                   # online: torch wheel chosen by driver version
#   PYTHON=/usr/bin/python3 make gpu-check           # offline: that python's torch + $(WHEELHOUSE)/
gpu-check:
	@$(PYTHON) benchmarks/gpu_env.py --venv $(VENV) --python "$$(command -v $(PYTHON))" --wheelhouse $(WHEELHOUSE) --torch-pin "$(TORCH_PIN)"
	$(PY) -m tte_scale.benchmarks.gpu_check --out $(GPU_OUT) $(GPU_CHECK_ARGS)

# On a connected machine: the wheels an offline GPU node needs for `make gpu-check` (binary wheels
# for Python $(PY_VERSION), manylinux x86_64, + DeepSpeed's sdist), pinned to this venv's versions.
wheelhouse: $(STAMP)
	$(PY) -m tte_scale.benchmarks.wheelhouse --python-version $(PY_VERSION) --out $(WHEELHOUSE) $(WHEELHOUSE_ARGS)
