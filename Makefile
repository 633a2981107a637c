# laretrieval: `make demo` (the main job) and `make test` (every check). Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# GPU machines install hear21passt with its dependencies (timm, torchaudio); CPU machines without them,
# because those packages have no CPU build here and break transformers.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: demo test lab install check-sync nbtest pytest bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
ifeq ($(HAS_GPU),1)
	$(BIN)/python -m pip install --quiet -e ".[passt]"
else
	$(BIN)/python -m pip install --quiet --no-deps "hear21passt>=0.0.26"
endif
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/laretrieval experiment --log-output $(if $(RUN_ID),--run-id $(RUN_ID)) $(foreach p,$(PARAMS),--set $(p))

test: $(STAMP) check-sync nbtest pytest

# nbdev-export and nbdev-clean must leave the notebooks and the library exactly as committed
check-sync: $(STAMP)
	@bash .ci/check_sync.sh $(BIN)

# every component notebook; experiment and study notebooks run from tests/ with tiny parameters
nbtest: $(STAMP)
	$(BIN)/nbdev-test --n-workers 2 --skip-folder-re '^(experiments|studies|[_.].*)$$'

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=nbs

clean-venv:
	rm -rf $(VENV)
