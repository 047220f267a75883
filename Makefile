# chordflow: `make demo` runs the example pipeline, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## run the example ETL on a private Redis + local workers, with live progress
	CHORDFLOW_FORCE_PROGRESS=1 $(BIN)/chordflow run tasks/etl/pipeline.toml

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
	rm -rf $(VENV) artifacts .pytest_cache
