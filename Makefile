# spatial_mllm — two commands for a newcomer: `make demo` and `make test` (both run `make setup` first).
#
#   make setup   idempotent: .venv, torch/torchvision FIRST, `pip install -e .[dev,lmms-eval,deepspeed]`,
#                open3d's libusb,
#                the `spatial-mllm` Jupyter kernel, nbdime's git integration. Seconds when ready.
#   make demo    every notebook on the tiny preset, in order, into outputs/tiny/
#   make mini    the mini study (notebook 07 on the mini preset: pretrained tiny encoders, a grounding stage, 3 variants x
#                3 seeds, bootstrap intervals), 75-100 minutes on 2 CPU cores, into outputs/mini/
#   make test    the whole test suite (notebooks included)
#   make lint    ruff
#   make lab     JupyterLab on the project with the spatial-mllm kernel

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PRESET ?= tiny
PYTEST_ARGS ?=

# torch/torchvision go in before anything that depends on them, so pip never pulls a second build.
# x86_64: the CUDA build that also runs on CPU (it lies on this kind of machine's disk and ships a
# working torchvision); aarch64: the CPU build. Override with `make setup TORCH_SPEC="torch==... ..."`.
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
endif

STAMP := $(VENV)/.spatial-mllm-installed
KERNEL_STAMP := $(VENV)/share/jupyter/kernels/spatial-mllm/kernel.json

.PHONY: setup demo mini test lint lab clean-outputs check-open3d check-java nbdime-git help

help:
	@sed -n '1,12p' Makefile

setup: $(STAMP) check-open3d check-java $(KERNEL_STAMP) nbdime-git
	@echo "setup: ready ($(PY))"

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), f"Python >= 3.10 needed, found {sys.version}"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The lmms-eval extra (the `lmms-eval --model spatial_mllm` plugin, tests/test_lmms_eval_plugin.py) comes with
# dev: it pins lmms-eval 0.7.3, which caps av below 16 and filelock below 4 (pyproject.toml says why).
# The deepspeed extra (ZeRO configs, tests/test_deepspeed.py) too; DS_BUILD_OPS=0: nothing compiled at install.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH_SPEC)
	DS_BUILD_OPS=0 $(PIP) install --quiet -e '.[dev,lmms-eval,deepspeed]'
	@touch $(STAMP)

# open3d 0.20 needs Debian's libusb-1.0-0 to import. As root we install it; otherwise we say what to run.
check-open3d: $(STAMP)
	@if ! $(PY) -c 'import open3d' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "setup: installing libusb-1.0-0 for open3d (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	  else \
	    echo "setup: open3d cannot import (missing libusb-1.0). Run:"; \
	    echo "    sudo apt-get update && sudo apt-get install -y libusb-1.0-0"; \
	    echo "then run make again."; exit 1; \
	  fi; \
	  $(PY) -c 'import open3d' || { echo "setup: open3d still does not import"; exit 1; }; \
	fi

# The COCO caption scorer (ScanQA/SQA3D METEOR and its PTB tokenizer) runs Java. As root we install
# Debian's headless JRE; otherwise we say what to run (everything but METEOR works without it).
check-java:
	@if ! command -v java >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "setup: installing a headless Java runtime for the COCO caption scorer (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null; \
	  else \
	    echo "setup: no java found; METEOR (ScanQA/SQA3D) will be skipped. To enable it run:"; \
	    echo "    sudo apt-get update && sudo apt-get install -y default-jre-headless"; \
	  fi; \
	fi

$(KERNEL_STAMP): $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name spatial-mllm --display-name "Python (spatial-mllm)" >/dev/null
	@echo "setup: registered Jupyter kernel spatial-mllm"

# nbdime's diff/merge drivers for this repository only (.git/config + .gitattributes). The drivers are
# written with the venv's absolute path so `git diff` works without activating .venv.
nbdime-git: $(STAMP)
	@if [ -d .git ] && [ "$$(git config --get diff.jupyternotebook.command)" != "$(CURDIR)/$(VENV)/bin/git-nbdiffdriver diff" ]; then \
	  $(VENV)/bin/nbdime config-git --enable >/dev/null && \
	  git config diff.jupyternotebook.command "$(CURDIR)/$(VENV)/bin/git-nbdiffdriver diff" && \
	  git config merge.jupyternotebook.driver "$(CURDIR)/$(VENV)/bin/git-nbmergedriver merge %O %A %B %L %P" && \
	  echo "setup: enabled nbdime git integration"; \
	fi

demo: setup
	SPATIAL_MLLM_ROOT=$(CURDIR) $(VENV)/bin/spatial-mllm run-notebooks --preset $(PRESET)

mini: setup
	SPATIAL_MLLM_ROOT=$(CURDIR) $(VENV)/bin/spatial-mllm run-notebooks --preset mini

# pytest's exit code 5 (no tests collected) is a failure here, said plainly.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: FAILED — pytest collected no tests (exit code 5)"; fi; \
	exit $$rc

lint: setup
	$(VENV)/bin/ruff check spatial_mllm tests benchmarks

lab: setup
	SPATIAL_MLLM_ROOT=$(CURDIR) $(VENV)/bin/jupyter lab --notebook-dir=$(CURDIR)

clean-outputs:
	rm -rf outputs/
