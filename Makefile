# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv when it is missing.
# `make demo` installs only what the demo runs (lvlmrec and a CPU torch); `make test` adds the
# extras the tests exercise. One pip call each (one dependency resolution), and no bytecode
# compilation of every installed module up front (`--no-compile`: Python compiles the modules a
# run imports, on first import) -- together they roughly halve a clean install
# (docs/benchmarks.md, "The demo from a clean clone").
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch; override (e.g. TORCH_SPEC="torch --index-url ...") for a GPU machine.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,ocr,ann,ray
WORKDIR ?= runs/demo
PIP_FLAGS ?= -q --disable-pip-version-check --no-compile

.PHONY: setup setup-core demo test clean

setup: $(VENV)/.installed

setup-core: $(VENV)/.installed-core

# lvlmrec with its runtime dependencies: all the demo needs.
$(VENV)/.installed-core: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)" -e .
	touch $@

# ... and the extras (tests, OCR, ANN index, Ray).
$(VENV)/.installed: $(VENV)/.installed-core
	$(PY) -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	touch $@

demo: setup-core
	$(VENV)/bin/lvlmrec demo --workdir $(WORKDIR)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
