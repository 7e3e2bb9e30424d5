# `make demo` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hal-installed
EXTRAS ?= all,dev

.PHONY: demo test venv lint clean bitstreams rtl-lint

demo: $(STAMP)
	$(BIN)/hal compare

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check hal backends models tests bench

# hal_int8's RTL: iCE40 / ECP5 bitstreams from open toolchains (installed when missing), recorded
# in bitstreams/hal_int8/manifest.json; outputs under bitstreams/hal_int8/build/rtl (ignored)
bitstreams: $(STAMP)
	$(MAKE) -C bitstreams/hal_int8/rtl bitstreams PYTHON=$(abspath $(BIN)/python)

rtl-lint: $(STAMP)
	$(MAKE) -C bitstreams/hal_int8/rtl lint PYTHON=$(abspath $(BIN)/python)

clean:
	rm -rf $(VENV) build *.egg-info
