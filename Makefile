# Sparsity and optimizer experiments, configured like a kernel. `make help` lists the targets.
# Thin on purpose: every recipe calls one Python module; the logic lives there.

SHELL := /bin/bash
.DEFAULT_GOAL := all

quote = '$(subst ','\'',$(strip $(1)))'

# The environment: the active virtualenv if there is one, else ./.venv (created on first use).
TORCH ?= 2.13.0
PYTHON3 ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sparsity-lab-installed
# As in kbuild: the configuration file every target reads and writes.
KCONFIG_CONFIG ?= .config
CONFIG_ARG := --config $(call quote,$(KCONFIG_CONFIG))

# Command-line overrides (`make EPOCHS=3 JOBS=2 SET="SEEDS='0 1'"`), taken only from the command line so a
# stray environment variable never changes an experiment. They are validated against Kconfig.
OVERRIDES :=
ifeq ($(origin MAX_ITERS),command line)
OVERRIDES += GPT2_MAX_ITERS=$(MAX_ITERS)
endif
ifeq ($(origin EPOCHS),command line)
OVERRIDES += EPOCHS=$(EPOCHS)
endif
ifeq ($(origin JOBS),command line)
OVERRIDES += JOBS=$(JOBS)
endif
ifeq ($(origin SET),command line)
OVERRIDES += $(SET)
endif
MATRIX_ARG := $(if $(MATRIX),--matrix $(call quote,$(MATRIX)))
CONTINUE_JOBS := $(if $(filter command line,$(origin JOBS)),--jobs $(JOBS))
YES_ARG := $(if $(filter 1 y yes,$(YES)),--yes)

.PHONY: all run plan continue update-graphs quickstart menuconfig guiconfig defconfig savedefconfig \
	olddefconfig alldefconfig list-defconfigs test bench lint clean mrproper clean-results help env sample

all: run ## Run the matrix of .config (same as `make run`)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
		echo "installing torch==$(TORCH) (override with TORCH=<version>)"; \
		$(PY) -m pip install "torch==$(TORCH)"; \
	elif [ "$(origin TORCH)" = "command line" ]; then \
		$(PY) -m pip install "torch==$(TORCH)"; \
	fi
	$(PY) -m pip install -e ".[dev]"
	@touch $@

env: $(STAMP) ## Create or update the Python environment (.venv, or the active virtualenv)

run: $(STAMP) ## Train every run of the matrix that is not done yet (EPOCHS= JOBS= SET= override)
	@exec $(PY) -m lib.runner run $(CONFIG_ARG) --set $(call quote,$(OVERRIDES))

plan: $(STAMP) ## Print the runs the matrix expands into, without running anything
	@exec $(PY) -m lib.runner plan $(CONFIG_ARG) --set $(call quote,$(OVERRIDES))

continue: $(STAMP) ## Resume the latest matrix (or MATRIX=<dir>) from its ledger
	@exec $(PY) -m lib.runner continue $(CONFIG_ARG) $(MATRIX_ARG) $(CONTINUE_JOBS)

update-graphs: $(STAMP) ## Write graphs/*.png and report.md of the latest matrix (or MATRIX=<dir>)
	@exec $(PY) -m scripts.update_graphs $(MATRIX_ARG)

SAMPLE_ARGS := $(if $(PROMPT),--prompt $(call quote,$(PROMPT))) $(if $(TOKENS),--tokens $(TOKENS)) \
	$(if $(TEMPERATURE),--temperature $(TEMPERATURE)) $(if $(TOP_K),--top-k $(TOP_K)) $(if $(SEED),--seed $(SEED))
sample: $(STAMP) ## Generate text from a GPT-2 run: RUN=<run dir> [PROMPT= TOKENS= TEMPERATURE= TOP_K= SEED=]
	@exec $(PY) -m scripts.sample $(call quote,$(RUN)) $(SAMPLE_ARGS)

quickstart: $(STAMP) ## Set up, then run the embedded `quickstart` defconfig through to graphs and report
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) defconfig quickstart
	@exec $(PY) -m lib.runner run $(CONFIG_ARG) --set $(call quote,$(OVERRIDES))
	@exec $(PY) -m scripts.update_graphs

menuconfig: $(STAMP) ## Edit .config in the terminal UI
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) menuconfig

guiconfig: $(STAMP) ## Edit .config in the Tk UI
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) guiconfig

defconfig: $(STAMP) ## Write .config from defconfigs/$(DEFCONFIG) (see list-defconfigs)
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) defconfig $(call quote,$(DEFCONFIG))

defconfig-%: $(STAMP) ## Same as `make defconfig DEFCONFIG=%`
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) defconfig $(call quote,$*)

savedefconfig: $(STAMP) ## Write ./defconfig, the minimal file that reproduces .config
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) savedefconfig

olddefconfig: $(STAMP) ## Update .config to the Kconfig tree, new symbols at their defaults
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) olddefconfig

alldefconfig: $(STAMP) ## Write .config with every symbol at its default
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) alldefconfig

list-defconfigs: $(STAMP) ## List the defconfigs with their descriptions
	@exec $(PY) -m lib.kconfig_cli list-defconfigs

test: $(STAMP) ## Run the test suite (pytest; under 10 minutes on 2 CPU cores)
	@exec $(PY) -m pytest -q

bench: $(STAMP) ## Run the benchmarks; tables go to docs/benchmarks/ (not part of make test)
	@$(PY) -m scripts.bench_optimizers
	@$(PY) -m scripts.bench_pruning
	@$(PY) -m scripts.bench_resnet
	@exec $(PY) -m scripts.bench_gpt2

lint: $(STAMP) ## ruff check and format check
	@$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean: ## Remove caches and build products (never results, .config or the environment)
	@exec $(PYTHON3) -m lib.housekeeping clean

mrproper: ## clean, and remove .config, ./defconfig and ./.venv (never an active virtualenv)
	@exec $(PYTHON3) -m lib.housekeeping mrproper

clean-results: $(STAMP) ## Delete one matrix's results: MATRIX=<dir> (asks first; YES=1 skips the question)
	@exec $(PY) -m lib.runner clean-results $(MATRIX_ARG) $(YES_ARG)

help: ## List the targets
	@echo "Targets (variables: EPOCHS= MAX_ITERS= JOBS= SET=\"SYM=VALUE ...\" MATRIX=<dir> DEFCONFIG=<name> TORCH=<version>"
	@echo "         YES=1 KCONFIG_CONFIG=<file, default .config>):"
	@sed -nE 's/^([a-z%-]+):.*## (.*)$$/  \1\t\2/p' $(MAKEFILE_LIST) | expand -t 20
