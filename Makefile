# Sparsity and optimizer experiments, configured like a kernel. `make help` lists the targets.
# Thin on purpose: every recipe calls one Python module; the logic lives there.

SHELL := /bin/bash
.DEFAULT_GOAL := all

# What a user types reaches the shell as text, never as code. `$(call quote,NAME)` is variable NAME's raw
# text ($(value): make expands nothing in it) as one single-quoted shell word (`*`: a pattern rule's stem), so
# `make sample PROMPT='$(shell date); id'` samples after that very text. Conditions read user variables
# through $(value) too, and none is exported (see below).
quote = '$(subst ','\'',$(value $(1)))'
# `FLAG 'value'` when variable NAME is set, else nothing: $(call option,FLAG,NAME).
option = $(if $(value $(2)),$(1) $(call quote,$(2)))

# The environment: the active virtualenv if there is one, else ./.venv (created on first use).
TORCH ?= 2.13.0
PYTHON3 ?= python3
ifdef VIRTUAL_ENV
VENV := $(value VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(call quote,VENV)/bin/python
STAMP := $(VENV)/.sparsity-lab-installed
# As in kbuild: the configuration file every target reads and writes.
KCONFIG_CONFIG ?= .config
CONFIG_ARG := --config $(call quote,KCONFIG_CONFIG)

# Command-line overrides (`make EPOCHS=3 JOBS=2 SET="SEEDS='0 1'"`), taken only from the command line so a
# stray environment variable never changes an experiment. They are validated against Kconfig; each value is
# quoted inside the override string too, so `EPOCHS='1 2'` is one (bad) value, not two assignments.
OVERRIDES :=
ifeq ($(origin MAX_ITERS),command line)
OVERRIDES += GPT2_MAX_ITERS=$(call quote,MAX_ITERS)
endif
ifeq ($(origin EPOCHS),command line)
OVERRIDES += EPOCHS=$(call quote,EPOCHS)
endif
ifeq ($(origin JOBS),command line)
OVERRIDES += JOBS=$(call quote,JOBS)
endif
ifeq ($(origin SET),command line)
OVERRIDES += $(value SET)
endif
MATRIX_ARG := $(call option,--matrix,MATRIX)
CONTINUE_JOBS := $(if $(filter command line,$(origin JOBS)),--jobs $(call quote,JOBS))
# `make continue`, `status`, `estimate` and `sample` take SET= alone (for continue and estimate JOBS= is --jobs; the
# ledger fixes the rest): SET="RESULTS_DIR=<dir>" says where the latest matrix is.
SET_ARG := $(if $(filter command line,$(origin SET)),$(call option,--set,SET))
# YES is one word, 1, y or yes: a destructive flag is never read out of a longer value.
YES_ARG := $(if $(filter 1,$(words $(value YES))),$(if $(filter 1 y yes,$(value YES)),--yes))
# EXTRAS (command line only): optional dependency groups of pyproject.toml, words from a fixed set. Any other
# word is one `error:` line before anything is installed (CHECK_EXTRAS, at the head of a recipe line), and only
# the known words reach pip: `make env EXTRAS="trackio wandb"` installs `.[dev,trackio,wandb]`.
EXTRA_NAMES := trackio wandb hf notebook slurm
EXTRAS_WORDS := $(if $(filter command line,$(origin EXTRAS)),$(value EXTRAS))
empty :=
comma := ,
EXTRAS_SPEC := $(subst $(empty) $(empty),$(comma),dev $(sort $(filter $(EXTRA_NAMES),$(EXTRAS_WORDS))))
CHECK_EXTRAS = $(if $(filter-out $(EXTRA_NAMES),$(EXTRAS_WORDS)),extras=$(call quote,EXTRAS); \
	echo "error: EXTRAS=$$extras: each word must be one of: $(EXTRA_NAMES) (e.g. EXTRAS=\"trackio wandb\")" >&2; exit 2;)
# make would expand a command-line variable to put it in the recipes' environment. After the `?=` defaults:
# `unexport` defines a variable, and `?=` leaves a defined one alone.
unexport TOKENS TEMPERATURE TOP_K SEED PROMPT RUN METHOD SPARSITY PATTERN CALIBRATION SAMPLES BLOCKS JOBS EPOCHS MAX_ITERS SET MATRIX DEFCONFIG KCONFIG_CONFIG TORCH \
	YES PYTHON3 EXTRAS SQL

# The runner names make (the recipe shell's parent) as its starter: if make is killed before the runner has
# tied itself to it (PR_SET_PDEATHSIG, in lib/process.py), the runner sees a stranger as its parent and exits.
TIED := SPARSITY_LAB_PARENT=$$PPID

.PHONY: all run plan continue status estimate update-graphs quickstart menuconfig guiconfig defconfig savedefconfig \
	olddefconfig alldefconfig list-defconfigs test bench lint clean mrproper clean-results help env sample prune analyze \
	trackio-test wandb-test trackio-view query bench-kernels test-slurm

all: run ## Run the matrix of .config (same as `make run`)

# TORCH is checked first, so a value that is not a PEP 440 version (2.13.0, 2.14.1+cpu, 2.5.0rc1) stops
# before anything is created or installed.
$(STAMP): pyproject.toml
	@$(CHECK_EXTRAS)torch=$(call quote,TORCH); \
	pep440='^([0-9]+!)?[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$$'; \
	[[ $$torch =~ $$pep440 ]] || { echo "error: TORCH=$$torch is not a version (e.g. TORCH=2.13.0)" >&2; exit 2; }
	@test -x $(PY) || $(call quote,PYTHON3) -m venv $(call quote,VENV)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
		echo installing torch==$(call quote,TORCH) "(override with TORCH=<version>)"; \
		$(PY) -m pip install torch==$(call quote,TORCH); \
	elif [ "$(origin TORCH)" = "command line" ]; then \
		$(PY) -m pip install torch==$(call quote,TORCH); \
	fi
	$(PY) -m pip install -e ".[dev]"
	@touch $@

env: $(STAMP) ## Create or update the Python environment (.venv, or the active virtualenv; EXTRAS="trackio wandb")
	@$(CHECK_EXTRAS)$(if $(filter $(EXTRA_NAMES),$(EXTRAS_WORDS)),$(PY) -m pip install -e ".[$(EXTRAS_SPEC)]")

# The tests use both trackers, transformers and submitit: `make test` installs them once, with a stamp of its own.
TEST_STAMP := $(VENV)/.sparsity-lab-test-installed
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[dev,trackio,wandb,hf,slurm]"
	@touch $@

run: $(STAMP) ## Train every run of the matrix that is not done yet (EPOCHS= JOBS= SET= override)
	@$(TIED) exec $(PY) -m lib.runner run $(CONFIG_ARG) --set $(call quote,OVERRIDES)

plan: $(STAMP) ## Print the runs the matrix expands into, their steps and time, without running anything
	@$(TIED) exec $(PY) -m lib.runner plan $(CONFIG_ARG) --set $(call quote,OVERRIDES)

continue: $(STAMP) ## Resume the latest matrix (or MATRIX=<dir>) from its ledger
	@$(TIED) exec $(PY) -m lib.runner continue $(CONFIG_ARG) $(MATRIX_ARG) $(CONTINUE_JOBS) $(SET_ARG)

status: $(STAMP) ## Each run of the latest matrix (or MATRIX=<dir>): done, running with its ETA, failed and why, pending
	@$(TIED) exec $(PY) -m lib.runner status $(CONFIG_ARG) $(MATRIX_ARG) $(SET_ARG)

estimate: $(STAMP) ## Steps and estimated time of each run of the latest matrix (or MATRIX=<dir>; JOBS= what if)
	@$(TIED) exec $(PY) -m lib.runner estimate $(CONFIG_ARG) $(MATRIX_ARG) $(CONTINUE_JOBS) $(SET_ARG)

update-graphs: $(STAMP) ## Graphs, report.md/.html, results.csv of the latest matrix (or MATRIX=<dir>; "a b" compares)
	@exec $(PY) -m scripts.update_graphs $(CONFIG_ARG) --set $(call quote,OVERRIDES) $(MATRIX_ARG)

# `--`: the query is the last argument even when it starts with a dash (a `--` comment).
query: $(STAMP) ## Print what SQL="select ..." returns from RESULTS_DIR/results.duckdb (see docs/results.md)
	@exec $(PY) -m scripts.query $(CONFIG_ARG) $(SET_ARG) -- $(call quote,SQL)

SAMPLE_ARGS := $(call option,--prompt,PROMPT) $(call option,--tokens,TOKENS) \
	$(call option,--temperature,TEMPERATURE) $(call option,--top-k,TOP_K) $(call option,--seed,SEED)
sample: $(STAMP) ## Text from a GPT-2 run: RUN=<run dir or id> [MATRIX= SET= PROMPT= TOKENS= TEMPERATURE= TOP_K= SEED=]
	@exec $(PY) -m scripts.sample $(call quote,RUN) $(CONFIG_ARG) $(MATRIX_ARG) $(SET_ARG) $(SAMPLE_ARGS)

PRUNE_ARGS := $(call option,--method,METHOD) $(call option,--sparsity,SPARSITY) $(call option,--pattern,PATTERN) \
	$(call option,--calibration,CALIBRATION) $(call option,--samples,SAMPLES)
prune: $(STAMP) ## One-shot prune a GPT-2 run or HF model: RUN= METHOD=magnitude|wanda|sparsegpt SPARSITY= [PATTERN=2:4 CALIBRATION= SAMPLES=]
	@exec $(PY) -m scripts.prune $(call quote,RUN) $(CONFIG_ARG) $(MATRIX_ARG) $(SET_ARG) $(PRUNE_ARGS)

ANALYZE_ARGS := $(call option,--sparsity,SPARSITY) $(call option,--samples,SAMPLES) $(call option,--blocks,BLOCKS)
analyze: $(STAMP) ## One-shot grid, co-activation and mask agreement of a model: RUN= [SPARSITY=0.9 (activations) SAMPLES=8 BLOCKS=4,16]
	@exec $(PY) -m scripts.analyze $(call quote,RUN) $(CONFIG_ARG) $(MATRIX_ARG) $(SET_ARG) $(ANALYZE_ARGS)

quickstart: $(STAMP) ## Set up, then run the embedded `quickstart` defconfig through to graphs and report
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) defconfig quickstart
	@$(TIED) exec $(PY) -m lib.runner run $(CONFIG_ARG) --set $(call quote,OVERRIDES)
	@exec $(PY) -m scripts.update_graphs $(CONFIG_ARG) --set $(call quote,OVERRIDES)

menuconfig: $(STAMP) ## Edit .config in the terminal UI
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) menuconfig

guiconfig: $(STAMP) ## Edit .config in the Tk UI
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) guiconfig

defconfig: $(STAMP) ## Write .config from defconfigs/$(DEFCONFIG) (see list-defconfigs)
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) defconfig $(call quote,DEFCONFIG)

defconfig-%: $(STAMP) ## Same as `make defconfig DEFCONFIG=%`
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) defconfig $(call quote,*)

savedefconfig: $(STAMP) ## Write ./defconfig, the minimal file that reproduces .config
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) savedefconfig

olddefconfig: $(STAMP) ## Update .config to the Kconfig tree, new symbols at their defaults
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) olddefconfig

alldefconfig: $(STAMP) ## Write .config with every symbol at its default
	@exec $(PY) -m lib.kconfig_cli $(CONFIG_ARG) alldefconfig

list-defconfigs: $(STAMP) ## List the defconfigs with their descriptions
	@exec $(PY) -m lib.kconfig_cli list-defconfigs

# Two pytest workers (at most four on bigger machines): many tests wait on subprocesses they start and kill, so
# two run side by side on 2 cores. A file's tests stay on one worker, so its module fixtures are built once.
test: $(TEST_STAMP) ## Run the test suite (pytest, 2-4 workers; under 10 minutes on 2 CPU cores)
	@exec $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# A real single-node Slurm (Debian's slurm-wlm and munge, installed when missing: needs root), started for the
# test and stopped after it; the Slurm launcher submits the quickstart matrix to it (tests/slurm). CI runs it.
test-slurm: $(TEST_STAMP) ## Test the Slurm launcher against a real local Slurm it starts (root; installs slurm-wlm, munge)
	@SPARSITY_LAB_SLURM=1 exec $(PY) -m pytest -q -p no:xdist tests/slurm

trackio-test: $(STAMP) ## Log a short synthetic run to trackio through the trainer's fan-out; say where it is
	@exec $(PY) -m lib.tracking test trackio

wandb-test: $(STAMP) ## Log a short synthetic run to wandb (`wandb login`, or WANDB_MODE=offline); say where it is
	@exec $(PY) -m lib.tracking test wandb

trackio-view: $(STAMP) ## Open trackio's local dashboard (runs under TRACKIO_DIR, default ~/.cache/huggingface/trackio)
	@exec $(PY) -m lib.tracking view

bench: $(STAMP) ## Run the benchmarks; tables go to docs/benchmarks/ (not part of make test)
	@$(PY) -m scripts.bench_optimizers
	@$(PY) -m scripts.bench_pruning
	@$(PY) -m scripts.bench_resnet
	@$(PY) -m scripts.bench_lenet5
	@$(PY) -m scripts.bench_memory
	@$(PY) -m scripts.bench_gpt2
	@exec $(PY) -m scripts.bench_variants

lint: $(STAMP) ## ruff check and format check
	@$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean: ## Remove caches and build products (never results, .config or the environment)
	@exec $(call quote,PYTHON3) -m lib.housekeeping clean

mrproper: ## clean, and remove .config, ./defconfig and ./.venv (never an active virtualenv)
	@exec $(call quote,PYTHON3) -m lib.housekeeping mrproper

clean-results: $(STAMP) ## Delete one matrix's results: MATRIX=<dir> (asks first; YES=1 skips the question)
	@$(TIED) exec $(PY) -m lib.runner clean-results $(MATRIX_ARG) $(YES_ARG)

bench-kernels: $(STAMP) ## Kernel speed vs dense (CPU: banded layer on both paths, GPT-2 tiny and small steps); docs/benchmarks/kernels.{csv,md}
	@exec $(PY) -m scripts.bench_kernels

help: ## List the targets
	@echo "Targets (variables: EPOCHS= MAX_ITERS= JOBS= SET=\"SYM=VALUE ...\" MATRIX=<dir> DEFCONFIG=<name> TORCH=<version>"
	@echo "         YES=1 SQL=\"<query>\" EXTRAS=\"trackio wandb\" KCONFIG_CONFIG=<file, default .config>):"
	@sed -nE 's/^([a-z%-]+):.*## (.*)$$/  \1\t\2/p' $(MAKEFILE_LIST) | expand -t 20
