# Two commands do all the set-up on a fresh machine:
#   make train OPT=nadam   set up on first use, then one blog-faithful run
#   make test              set up on first use, then the test suite
# Set-up is skipped once .venv/.installed exists and is newer than pyproject.toml.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
OPT         ?= nadam
ARGS        ?=
# The torch build pip installs here; the GPU machine's torch 2.11 also works (pip install --no-deps -e .).
TORCH_PINS  ?= torch==2.14.1 torchvision==0.29.1
DATA_PKG    := dataset-fashion-mnist
DATA_MARK   := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data train review report readme-results bench test test-dataset test-slow test-slurm slurm tensorboard clean help

help:
	@echo "make train OPT=nadam [ARGS='--epochs 5']   one run (sets up on first use)"
	@echo "make review [ARGS='--seeds 0-1']           every optimizer x seeds, then the report"
	@echo "make test                                  the test suite (no dataset, no network)"
	@echo "make test-dataset                          tests that read the real Fashion-MNIST"
	@echo "make test-slurm                            the review on a real two-node SLURM (installs slurm-wlm; root)"
	@echo "make bench ARGS=optim|epoch|review          benchmarks"
	@echo "make tensorboard                           TensorBoard on localhost:6006 over runs/"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]' $(TORCH_PINS)
	@touch $@

# Fashion-MNIST from Debian's package (needs root or sudo). Skip it by passing --data-dir
# (ARGS='--data-dir DIR') or TORCHOPT_DATA_DIR=DIR pointing at the four IDX files.
data:
	@if [ -f $(DATA_MARK) ] || [ -n "$$TORCHOPT_DATA_DIR" ]; then exit 0; fi; \
	echo "Installing the Debian package $(DATA_PKG) (Fashion-MNIST IDX files)..."; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null; then SUDO=sudo; echo "(needs root: using sudo)"; \
	else echo "error: installing $(DATA_PKG) needs root; run 'apt-get install $(DATA_PKG)' as root, or set TORCHOPT_DATA_DIR=DIR / pass ARGS='--data-dir DIR' with the four IDX files" >&2; exit 2; fi; \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(DATA_PKG)

train: setup data
	$(PY) -m torchopt_review.train --opt $(OPT) $(ARGS)

review: setup data
	$(PY) -m torchopt_review.review $(ARGS)

report: setup
	$(PY) -m torchopt_review.report $(ARGS)

# README's results section and figure, from runs/blog (after make review)
readme-results: setup
	$(PY) tools/readme_results.py runs/blog

bench: setup
	$(PY) -m torchopt_review.bench $(ARGS)

# The test suite makes its own small IDX files: it needs neither the dataset nor the network.
test: setup
	$(PY) -m pytest $(ARGS)

test-dataset: setup data
	$(PY) -m pytest -m dataset $(ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(ARGS)

# Debian's SLURM (slurmctld, slurmd, the client commands); the tests start and stop the cluster.
slurm:
	@if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then exit 0; fi; \
	echo "Installing the Debian package slurm-wlm (a real SLURM for the slurm tests)..."; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "error: installing slurm-wlm needs root" >&2; exit 2; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq slurm-wlm

test-slurm: setup slurm
	$(PY) -m pytest -m slurm tests/slurm $(ARGS)

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs --host localhost

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
