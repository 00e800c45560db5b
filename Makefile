# AniLA: one command to learn (make lab), one to check (make test).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.anila-installed
# pip's own output shows what it is downloading and installing; on these machines it also prints a warning
# per missing local index entry, which this drops (real errors still show)
PIP_FILTER := 2> >(grep --line-buffered -v "is ignored: it is neither a file nor a directory" >&2)

.PHONY: help install lab test test-fast test-browser demo explore bench gpu-check study site reliability clean

help:
	@echo "make lab    set up .venv and open the tutorials in JupyterLab"
	@echo "make demo   set up .venv and run the headless demo (rings, the study's seed 0: Langevin and AniLA at their best, both at eps 0.05, AniLA at b 3)"
	@echo "make test   set up .venv and run all tests, notebooks included (ANILA_BUDGET=smoke)"
	@echo "make test-browser  drive JupyterLab and Voila in headless Chromium (installs chromium with apt)"
	@echo "make explore       the two live panels as a web app (Voila)"
	@echo "make bench         the speed table: samplers against the autograd floor, TorchEBM, JAX and BlackJAX"
	@echo "make gpu-check     the GPU check (tests, CUDA benchmark, training speed); without a GPU its CPU dry run"
	@echo "make study         the sampler studies behind notebook 06 (docs/study/; resumable, about 6-7 hours on 2 idle cores)"
	@echo "make reliability   rewrite docs/RELIABILITY.md from a fresh run of the reliability and hostile-use tests"
	@echo "make site          the course as a website: the notebooks run at the smoke budget, in $(SITE_HTML)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "install: $(VENV) with torch, Jupyter and the test tools (a few minutes the first time: torch is large)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[notebooks,test]" $(PIP_FILTER)
	touch $(STAMP)
	@echo "install: done; the command line is $(PY) -m anila_core, or anila after source $(VENV)/bin/activate"

# Jupyter refuses to start as root without being told (containers often run as root)
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks/

# notebook 04 runs in CI on tiny CIFAR-10 / Flowers102 files written in the real formats (without them, on its offline stand-in)
CI_DATA := $(CURDIR)/.ci-data

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) tests/make_tiny_datasets.py $(CI_DATA)
	ANILA_BUDGET=smoke ANILA_DATA=$(CI_DATA) ANILA_DATA_VERIFY=0 MPLBACKEND=Agg OMP_NUM_THREADS=1 \
		$(PY) -m pytest -q -rs -m "not browser" --durations=15 --nbmake tests notebooks apps

# Chromium from the distribution: Playwright's own browser download needs the open internet
CHROMIUM ?= /usr/bin/chromium

# the site's pages are opened too: it is built first (only what changed since the last build runs again)
test-browser: $(STAMP) site
	if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium; fi
	$(PY) -c "import playwright, voila" 2>/dev/null || { echo "test-browser: installing the browser extra"; \
		$(PY) -m pip install -e ".[browser]" $(PIP_FILTER); }
	ANILA_BUDGET=smoke ANILA_CHROMIUM=$(CHROMIUM) ANILA_SITE=$(CURDIR)/$(SITE_HTML) $(PY) -m pytest -q -rs -m browser tests/browser

# The course as a website (Jupyter Book; book/_config.yml and book/_toc.yml): the README as its landing page,
# every notebooks/NN_*.ipynb executed at the smoke budget (04 on the tiny datasets of make test), docs/.
# Jupyter Book keeps each executed notebook until its code changes, and Sphinx each page until its source
# changes; neither sees the package, so a change there (or to the tiny datasets or the book's settings) starts
# the build afresh. The kernels draw their figures inline, as in JupyterLab: MPLBACKEND (make test sets Agg)
# is not passed on.
SITE := build/site
SITE_HTML := $(SITE)/_build/html
SITE_INPUTS := $(shell find anila_core -name '*.py') tests/make_tiny_datasets.py book/_config.yml pyproject.toml

site: $(STAMP) $(SITE)/.inputs-seen
	$(PY) -c "import jupyter_book" 2>/dev/null || { echo "site: installing the site extra (Jupyter Book)"; \
		$(PY) -m pip install -e ".[site]" $(PIP_FILTER); }
	$(PY) tests/make_tiny_datasets.py $(CI_DATA)
	@echo "site: running the notebooks at the smoke budget and writing the pages (a few minutes when they must run)"
	env -u MPLBACKEND ANILA_BUDGET=smoke ANILA_DATA=$(CI_DATA) ANILA_DATA_VERIFY=0 OMP_NUM_THREADS=1 \
		$(VENV)/bin/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output $(SITE)
	@echo "site: open $(SITE_HTML)/index.html"

$(SITE)/.inputs-seen: $(SITE_INPUTS)
	rm -rf $(SITE)/_build
	mkdir -p $(SITE) && touch $@

# the speed table (benchmarks/RESULTS.md); TorchEBM, JAX and BlackJAX are compared when the bench extra is installed
bench: $(STAMP)
	$(PY) -c "import torchebm, jax, blackjax" 2>/dev/null || { echo "bench: installing the bench extra (TorchEBM, JAX, BlackJAX)"; \
		$(PY) -m pip install -e ".[bench]" $(PIP_FILTER) || true; }
	$(PY) benchmarks/bench.py

# The GPU check: on a GPU machine every step at full size and benchmarks/RESULTS-cuda.md; without a GPU the
# CPU dry run (seconds; its report goes to a temporary folder). With .venv, or where none can be built but
# python3 has torch (the bare GPU machine, no package registry), that python3 as it is; there the command is
#   PYTHONPATH=. python3 benchmarks/gpu_check.py
GPU_CHECK_ARGS ?=
gpu-check:
	if [ -x "$(PY)" ] || ! $(PYTHON) -c "import torch, torchvision" 2>/dev/null; then \
		$(MAKE) --no-print-directory install; py="$(PY)"; else py="$(PYTHON)"; fi; \
	echo "gpu-check: $$py"; \
	PYTHONPATH="$(CURDIR)" MPLBACKEND=Agg "$$py" benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# The sampler studies behind notebook 06 and the README's verdicts (about 6-7 hours on 2 idle cores in all). Finished
# cells are kept (docs/study/*/cells/, committed): rerunning after an interruption only computes what is missing.
study: $(STAMP)
	$(PY) -m anila_core sweep --study rings --out docs/study/rings --no-progress
	$(PY) -m anila_core sweep --study digits --out docs/study/digits --no-progress
	$(PY) -m anila_core sweep --study rings_paper --out docs/study/rings_paper --no-progress

# docs/RELIABILITY.md: the tests only check it; this renders it from a fresh run of both files (minutes: 25 killed
# runs, the bad-input table, the hostile-use cases) into build/, then moves it into place once every test passed
RELIABILITY_NOTE := build/RELIABILITY.md

reliability: $(STAMP)
	mkdir -p build && rm -f $(RELIABILITY_NOTE)
	ANILA_BUDGET=smoke MPLBACKEND=Agg OMP_NUM_THREADS=1 ANILA_RELIABILITY_NOTE=$(CURDIR)/$(RELIABILITY_NOTE) \
		$(PY) -m pytest -q tests/test_hostile.py tests/test_reliability.py
	mv $(RELIABILITY_NOTE) docs/RELIABILITY.md
	@echo "reliability: docs/RELIABILITY.md rewritten"

explore: $(STAMP)
	$(VENV)/bin/voila --show_tracebacks=True apps/explore.ipynb

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(PY) -m anila_core demo

clean:
	rm -rf $(VENV) .pytest_cache $(SITE)
