# Runnable documentation: `make run` sets up and runs the default experiment, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-cuda run test lint bench clean

setup: $(STAMP)

# torch first, pinned: a CPU wheel here; an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# On a GPU machine, instead of `setup`: torch 2.13.0 built for CUDA from PyTorch's index (CUDA=cu130 by default;
# cu126 or cu128 for an older driver), then `setup`, whose torch pin the CUDA build already meets.
CUDA ?= cu130
setup-cuda:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/$(CUDA)
	$(MAKE) setup
	$(BIN)/python -c "import torch; assert torch.version.cuda, torch.__version__; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU', torch.cuda.is_available())"

run: setup
	$(BIN)/testbed run $(ARGS)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check testbed tests scripts

bench: setup
	$(BIN)/python scripts/bench_metrics.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
