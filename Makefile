# Two commands on a fresh machine: `make all` (the pipeline) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= cifar10
EPOCHS ?=
ARTIFACTS ?= artifacts
EDGEFIRE_ARGS ?=
EPOCHS_ARG := $(if $(EPOCHS),--epochs $(EPOCHS))

.PHONY: install test train all bench-train clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(BIN)/ruff check edgefire tests
	$(BIN)/pytest -q

train: install
	$(BIN)/edgefire train --data $(DATA) $(EPOCHS_ARG) --artifacts $(ARTIFACTS) $(EDGEFIRE_ARGS)

all: install
	$(BIN)/edgefire build --quantize int8 --data $(DATA) $(EPOCHS_ARG) --artifacts $(ARTIFACTS) $(EDGEFIRE_ARGS)

bench-train: install
	$(BIN)/python -m edgefire.bench --data $(DATA) --out $(ARTIFACTS)/bench-train.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
	find $(ARTIFACTS) -mindepth 1 -name '.*tmp*' -delete 2>/dev/null || true
