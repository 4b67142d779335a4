# Runnable documentation: `make run` sets up and runs the default experiment, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The exact versions the README was measured with (make lock writes it); LOCK=none takes the newest releases
# pyproject.toml allows instead: make setup LOCK=none (or make run LOCK=none).
LOCK ?= requirements.lock
# torch first, pinned: a CPU wheel here; an unpinned torch would pull several GB of CUDA packages. The lock
# leaves torch out for that reason and pins everything else, torch's own dependencies included.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(if $(filter none,$(LOCK)),latest,locked)

.PHONY: setup setup-cuda lock run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(filter-out none,$(LOCK))
	$(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed-*
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
ifeq ($(LOCK),none)
	$(BIN)/pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" "$(TORCH)"
else
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
endif
	touch $(STAMP)

# On a GPU machine, instead of `setup` or after it: torch 2.13.0 built for CUDA from PyTorch's index (CUDA=cu130
# by default; cu126 or cu128 for an older driver), then `setup`, whose torch pin the CUDA build already meets.
# Any other torch in the venv (`setup`'s CPU wheel, 2.13.0+cpu, meets that pin too) is uninstalled first;
# torch's other dependencies stay as the lock has them.
CUDA ?= cu130
setup-cuda:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+$(CUDA)')" 2>/dev/null || { \
		$(BIN)/pip uninstall -q -y torch; \
		$(BIN)/pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/$(CUDA); }
	$(MAKE) setup
	$(BIN)/python -c "import torch; assert torch.version.cuda, torch.__version__; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU', torch.cuda.is_available())"

# Rewrite the lock from pyproject.toml, keeping its pins where they still fit (LOCK_ARGS=--upgrade: the newest
# releases), resolved against the torch installed in the venv so that no CUDA package enters it.
lock: setup
	$(BIN)/python -c 'import torch; print(f"torch=={torch.__version__}")' > $(VENV)/torch-constraint.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile -q --extra dev --strip-extras --unsafe-package torch \
		--no-emit-index-url --no-emit-find-links -c $(VENV)/torch-constraint.txt $(LOCK_ARGS) \
		-o requirements.lock pyproject.toml

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
