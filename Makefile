# The README's commands. CI calls `make test` (see .ci/run).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1

.PHONY: install run test test-fast bench lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: load the sample data (once) and open the dashboard on http://127.0.0.1:8501
run: $(STAMP)
	$(VENV)/bin/flywheel demo

## make test: the whole suite, browser tests included (they need Debian's chromium)
test: $(STAMP)
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the browser tests"; \
	  apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; fi
	$(PY) -m pytest
	@echo "the analytics tests that query a catalog, again on ClickHouse (chdb, in-process)"
	FLYWHEEL_TEST_ENGINE=clickhouse $(PY) -m pytest tests/analytics -q \
	  --ignore=tests/analytics/test_clickhouse_collector.py \
	  --ignore=tests/analytics/test_embeddings.py --ignore=tests/analytics/test_latency.py \
	  --ignore=tests/analytics/test_docstrings.py

## make test-fast: everything but the browser tests
test-fast: $(STAMP)
	$(PY) -m pytest -m "not browser"

## make bench: benchmarks; results go to bench/results/*.json and the README table
bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) flywheel-data .pytest_cache .mypy_cache .ruff_cache
