# laretrieval: `make demo` (the main job), `make test` (every check, what CI runs) and `make test-fast` (the edit-test loop).
# All create .venv when missing.
#   make test       check-sync, every cell of every component notebook (nbdev `#| slow` cells too: --flags slow) and
#                   every pytest test (the `slow` marker too): about 30 min on 2 cores.
#   make test-fast  the component notebooks without their `#| slow` cells and the pytest tests not marked `slow`: no
#                   training run beyond a one-epoch tiny one, no papermill run, no DDP or training subprocess, no ESC-50
#                   run; 2-3 min on 2 cores (3 min 20 s with other jobs sharing them). Mark a new notebook cell `#| slow` and a new test
#                   `@pytest.mark.slow` when it trains, runs a notebook or a subprocess training, or takes more than ~5 s.
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

# pyproject.toml asks for a torch range; the exact torch this project is tested with comes from this constraints file.
# `make install CONSTRAINTS=` keeps the torch an environment already has.
CONSTRAINTS ?= constraints-cpu.txt
# `make lab` as root (a container) needs --allow-root
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: demo test test-fast lab kernel install check-sync nbtest nbtest-fast pytest pytest-fast bench clean-venv

# the environment, and a `laretrieval` Jupyter kernel for a JupyterLab that lives outside .venv
install: $(STAMP) kernel

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
ifeq ($(HAS_GPU),1)
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[passt]"
else
	$(BIN)/python -m pip install --quiet --no-deps "hear21passt>=0.0.26"
endif
	@touch $(STAMP)

# CPU kernels pinned to AVX2 (torch's own, oneDNN, MKL): the demo's numbers then agree on every x86-64 CPU with AVX2
# (AVX-512 kernels round differently; see nbs/00_config.ipynb, "What else the numbers depend on"). Same thread count
# and package versions assumed; `make demo KERNEL_PINS=` runs with the kernels the machine picks.
KERNEL_PINS ?= ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
demo: $(STAMP)
	$(if $(KERNEL_PINS),env $(KERNEL_PINS)) $(BIN)/laretrieval experiment --log-output $(if $(RUN_ID),--run-id $(RUN_ID)) $(foreach p,$(PARAMS),--set $(p))

test: $(STAMP) check-sync nbtest pytest

test-fast: $(STAMP) nbtest-fast pytest-fast

# nbdev-export and nbdev-clean must leave the notebooks and the library exactly as committed
check-sync: $(STAMP)
	@bash .ci/check_sync.sh $(BIN)

# every component notebook; experiment and study notebooks run from tests/ with tiny parameters.
# nbtest runs every cell (--flags slow); nbtest-fast skips the cells flagged `#| slow` (pyproject's tst_flags).
NBTEST := $(BIN)/nbdev-test --n-workers 2 --skip-folder-re '^(experiments|studies|[_.].*)$$'
# notebooks and tests write checkpoints and model folders into temporary folders; each target gives them one of its
# own (TMPDIR) and removes it afterwards, so a run leaves nothing behind in /tmp, failed or not
IN_TMP = tmp=$$(mktemp -d); TMPDIR=$$tmp; export TMPDIR; status=0;
CLEAN_TMP = || status=$$?; rm -rf "$$tmp"; exit $$status

nbtest: $(STAMP)
	@$(IN_TMP) $(NBTEST) --flags slow $(CLEAN_TMP)

nbtest-fast: $(STAMP)
	@$(IN_TMP) $(NBTEST) $(CLEAN_TMP)

# pytest runs every test; pytest-fast deselects those marked `slow` (pyproject's [tool.pytest.ini_options] markers)
pytest: $(STAMP)
	@$(IN_TMP) $(BIN)/python -m pytest -q tests $(CLEAN_TMP)

pytest-fast: $(STAMP)
	@$(IN_TMP) $(BIN)/python -m pytest -q -m 'not slow' tests $(CLEAN_TMP)

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=nbs $(ALLOW_ROOT)

# registers (or refreshes: it is idempotent) the user's `laretrieval` kernel, which runs .venv's python
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name laretrieval --display-name "Python (laretrieval)" >/dev/null
	@echo "Jupyter kernel 'laretrieval' -> $(abspath $(BIN))/python"

clean-venv:
	rm -rf $(VENV)
