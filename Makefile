# chordflow: `make demo` runs the example pipeline, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK_VENV := .venv-lock
UV_VERSION := 0.13.9
LOCK_FLAGS := --quiet --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock"

.PHONY: install lock demo demo-map webapp test unit lint bench bench-quick clean

# Every package (transitive ones too, and the build backend) comes from requirements/dev.lock, pinned and
# hash-checked; then chordflow itself is installed editable without touching the network again.
$(STAMP): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lock:  ## regenerate requirements/{dev,runtime}.lock (pinned + hashes) from pyproject.toml; commit the result
	test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet uv==$(UV_VERSION))
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_FLAGS) --extra dev -o requirements/dev.lock pyproject.toml requirements/build.in
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_FLAGS) -o requirements/runtime.lock pyproject.toml requirements/build.in

demo: $(STAMP)  ## run the example ETL on a private Redis + local workers, with live progress
	CHORDFLOW_FORCE_PROGRESS=1 $(BIN)/chordflow run tasks/etl/pipeline.toml

demo-map: $(STAMP)  ## the map example: a generated 1,000,000-row CSV split into byte ranges, one bar per map
	CHORDFLOW_FORCE_PROGRESS=1 $(BIN)/chordflow run tasks/csvstats/pipeline.toml

webapp: $(STAMP)  ## the HTTP API + example web app on a private Redis + local workers (prints the page's address)
	$(BIN)/chordflow serve

test: $(STAMP)  ## the whole suite: unit tests, then integration against real Redis + Celery workers
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check orchestrator workers tasks tests bench
	$(BIN)/chordflow validate tasks/etl/pipeline.toml

bench: $(STAMP)  ## chordflow vs raw Celery (and Dask), medians of 5 runs -> BENCHMARKS.md
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) $(LOCK_VENV) artifacts .pytest_cache
