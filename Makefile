# `make demo` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hal-installed
EXTRAS ?= all,dev,docs

.PHONY: demo test venv lint docs clean pynq-env bitstreams rtl-lint fuzz soak

demo: $(STAMP)
	$(BIN)/hal compare

# The pynq environment is built first when it can be (tests/test_pynq_env.py runs the pynq
# transport's tests in it, or skips saying why); -rs prints every skip reason.
test: $(STAMP)
	@$(MAKE) --no-print-directory pynq-env || echo "make test: .venv-pynq could not be built;" \
	    "the pynq-environment test (tests/test_pynq_env.py) will be skipped"
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

# A second environment for the real pynq classes: pynq 4 pins numpy<2, and its grpcio-tools
# protobuf<6, hence onnx 1.18 (the last on protobuf 5). HAL core only: no jax/tf/torch/ort.
PYNQ_VENV  := .venv-pynq
PYNQ_STAMP := $(PYNQ_VENV)/.hal-installed
PYNQ_PINS  := "pynq==4.0.0" "numpy==1.26.4" "protobuf>=5.26.1,<6" "onnx==1.18.0" "pytest>=8"

pynq-env: $(PYNQ_STAMP)

$(PYNQ_STAMP): pyproject.toml setup.py
	test -x $(PYNQ_VENV)/bin/python || $(PYTHON) -m venv $(PYNQ_VENV)
	$(PYNQ_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYNQ_VENV)/bin/python -m pip install -q $(PYNQ_PINS) -e .
	$(PYNQ_VENV)/bin/python -m pip check
	touch $@

# The long fuzz run (bench/fuzz.py): FUZZ_CASES mutated models through load, compile and call
# on every usable CPU backend; prints cases per second and findings by exception type
FUZZ_CASES ?= 20000
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --cases $(FUZZ_CASES)

# The long run (bench/soak.py): SOAK_CYCLES compile -> call -> release cycles of lenet on every
# usable CPU backend, each in its own process; fails on > 5% resident growth after cycle 100,
# or a descriptor, temporary file or process left behind
SOAK_CYCLES ?= 1000
soak: $(STAMP)
	$(BIN)/python bench/soak.py --cycles $(SOAK_CYCLES)

lint: $(STAMP)
	$(BIN)/ruff check hal backends models tests bench setup.py docs/hooks

# The documentation site (mkdocs.yml, docs/) into site/, strict: a broken link or an API
# reference that does not resolve fails the build. NO_MKDOCS_2_WARNING: the theme's notice
# about its end of life, printed on every build, is not a warning about these docs.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# hal_int8's RTL: iCE40 / ECP5 bitstreams from open toolchains (installed when missing), recorded
# in bitstreams/hal_int8/manifest.json; outputs under bitstreams/hal_int8/build/rtl (ignored)
bitstreams: $(STAMP)
	$(MAKE) -C bitstreams/hal_int8/rtl bitstreams PYTHON=$(abspath $(BIN)/python)

rtl-lint: $(STAMP)
	$(MAKE) -C bitstreams/hal_int8/rtl lint PYTHON=$(abspath $(BIN)/python)

clean:
	rm -rf $(VENV) $(PYNQ_VENV) build site *.egg-info
