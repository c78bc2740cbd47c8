# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch from the local wheel first: a plain `torch` requirement would pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	LSLAPICFG=$(CURDIR)/configs/lsl_api.cfg $(BIN)/exoloop demo

test: $(STAMP)
	LSLAPICFG=$(CURDIR)/configs/lsl_api.cfg $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
