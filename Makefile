# The course's commands. Each target creates .venv on first use and reinstalls only when
# pyproject.toml changed. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODE ?= auto
KERNEL ?= python3

ifneq ($(filter course,$(MAKECMDGOALS)),)
ifeq ($(filter $(MODE),auto smoke full),)
$(error unknown MODE '$(MODE)': use MODE=auto (full on a CUDA GPU, smoke otherwise), MODE=smoke or MODE=full)
endif
endif

.PHONY: help course test test-release test-scale lab slides venv clean

help:
	@echo "make course   run the whole course: data, every notebook (papermill), slides, HTML pages; MODE=auto|smoke|full"
	@echo "make test     unit, notebook, hygiene and browser tests (browser tests need chromium)"
	@echo "make test-release  every notebook on a copy laid out like the real s-Aff-Wild2 release"
	@echo "make test-scale    every notebook in full mode at a small scale (COURSE_SCALE, default 0.05) on a CPU"
	@echo "make lab      JupyterLab in the course environment"
	@echo "make slides   build the slide decks into build/slides/"
	@echo "make clean    remove build/ (keeps .venv and data/)"

$(STAMP): pyproject.toml
	@echo "Setting up $(VENV) (first run, or pyproject.toml changed); this downloads PyTorch once."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed: install Python's venv module (Debian: apt-get install python3-venv)" >&2; exit 1; }
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
	@$(PY) -c "import torch, torchvision, timm; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__)"
	@touch $(STAMP)

venv: $(STAMP)

course: $(STAMP)
	@$(PY) -m course_lib.tooling.runner --mode $(MODE) --kernel $(KERNEL)

test: $(STAMP)
	@HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

test-release: $(STAMP)
	@HF_HUB_OFFLINE=1 $(PY) -m pytest -m release $(PYTEST_ARGS)

test-scale: $(STAMP)
	@HF_HUB_OFFLINE=1 $(PY) -m pytest -m scale $(PYTEST_ARGS)

lab: $(STAMP)
	@$(VENV)/bin/jupyter lab --notebook-dir=notebooks

slides: $(STAMP)
	@$(PY) -m course_lib.tooling.slides

clean:
	rm -rf build
