# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv if needed, then run the main job on the bundled data
#   (make demo-long: the same with longer pretraining and GRPO)
#   make test   - create .venv if needed, then run the test suite
#   (make test-fast: one quick test or more of every test file, under 90 s; CONTRIBUTING.md)
#
# TORCH_SPEC picks the PyTorch build. The default pin resolves to the CPU wheel
# that these machines carry locally; on a GPU machine use e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# or install torch yourself first: the package itself only needs torch>=2.6.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
RUN_DIR ?= runs/demo
LONG_PRETRAIN_TOKENS ?= 3000000
LONG_RL_STEPS ?= 200
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-long test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	RUN_DIR=$(RUN_DIR) PY=$(PY) bash scripts/demo.sh

demo-long: $(STAMP)
	RUN_DIR=runs/demo-long PY=$(PY) PRETRAIN_TOKENS=$(LONG_PRETRAIN_TOKENS) RL_STEPS=$(LONG_RL_STEPS) bash scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m fast

bench: $(STAMP)
	$(PY) bench/bench_tokenize.py

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache
