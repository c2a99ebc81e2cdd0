# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch; override (e.g. TORCH_SPEC="torch --index-url ...") for a GPU machine.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,ocr,ann,ray
WORKDIR ?= runs/demo

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(VENV)/bin/lvlmrec demo --workdir $(WORKDIR)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
