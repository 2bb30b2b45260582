# churn — customer-churn training on Dask. `make` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
JOB    ?= jobs/train.yaml
CLUSTER ?= cluster/local.yaml

.DEFAULT_GOAL := help
.PHONY: help install install-test run test test-fast lint bench bench-ingest bench-ingest-10g bench-search bench-serve bench-score bench-quality bench-utilisation bench-faults bench-evaluate bench-learning-curve bench-scale bench-score-full-data bench-commands clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project

install-test: $(VENV)/.installed-test  ## install the project with its test extras

run: $(VENV)/.installed  ## train the default job (Telco, LocalCluster, local MLflow store)
	$(BIN)/churn train $(JOB) --cluster $(CLUSTER)

test: $(VENV)/.installed-test  ## lint, then run the test suite
	$(BIN)/ruff check churn tests bench
	$(BIN)/python -m pytest

test-fast: $(VENV)/.installed-test  ## only the fast, pure tests (no cluster, no server, no subprocess)
	$(BIN)/python -m pytest -m "not cluster"

lint: $(VENV)/.installed-test  ## ruff over the library, tests and benchmarks
	$(BIN)/ruff check churn tests bench

bench: bench-ingest bench-search bench-serve bench-score bench-quality bench-utilisation bench-faults bench-evaluate bench-commands  ## all benchmarks; tables land in bench/results/

bench-ingest: $(VENV)/.installed-test  ## CSV → Parquet ingest vs pandas and pyarrow
	$(BIN)/python -m bench.ingest

bench-ingest-10g: $(VENV)/.installed-test  ## ingest of >= 10 GiB of CSV on 2 workers x 1 GiB
	$(BIN)/python -m bench.ingest --gb 10.8 --files 16 --skip-baselines --repeat 1

bench-search: $(VENV)/.installed-test  ## grid search: loky vs dask backend vs churn's search
	$(BIN)/python -m bench.search

bench-serve: $(VENV)/.installed-test  ## churn serve: p50/p99 latency of 1-row and 100-row requests
	$(BIN)/python -m bench.serve

bench-score: $(VENV)/.installed-test  ## churn score on 2 workers vs single-process pandas predict_proba
	$(BIN)/python -m bench.score

# AutoGluon for bench-quality only: its own venv, never churn's (not a dependency of churn). GBM extras
# only: best_quality's torch models (NN_TORCH, FASTAI) would pull PyPI's CUDA torch stack.
AG_VENV     ?= .venv-autogluon
AG_VERSION  := 1.6.3
AG_PACKAGE  := autogluon.tabular[lightgbm,catboost,xgboost]==$(AG_VERSION)

$(AG_VENV)/.installed-$(AG_VERSION):
	rm -rf $(AG_VENV)
	$(PYTHON) -m venv $(AG_VENV)
	$(AG_VENV)/bin/pip install --quiet --upgrade pip
	$(AG_VENV)/bin/pip install --quiet '$(AG_PACKAGE)'
	touch $@

bench-quality: $(VENV)/.installed-test $(AG_VENV)/.installed-$(AG_VERSION)  ## the default job vs untuned defaults and AutoGluon at equal time, every table, 3 splits
	$(BIN)/python -m bench.quality --autogluon-python $(AG_VENV)/bin/python

bench-utilisation: $(VENV)/.installed-test  ## worker utilisation of the default search: families one by one vs one task graph
	$(BIN)/python -m bench.utilisation

bench-faults: $(VENV)/.installed-test  ## fault scenarios on dask worker processes: outcome and recovery time
	$(BIN)/python -m bench.faults

bench-evaluate: $(VENV)/.installed-test  ## driver peak memory of the test evaluation: summaries merged on the cluster vs gathering rows (15k-15M rows)
	$(BIN)/python -m bench.evaluate_memory

bench-learning-curve: $(VENV)/.installed-test  ## fixed xgboost on 50k..12M rows of the telecom-large shape vs the Bayes AUC (long)
	$(BIN)/python -m bench.learning_curve

bench-scale: $(VENV)/.installed-test  ## train job on 2.1 GB of telecom-large CSV, 2 and 4 workers, vs the Bayes limit
	$(BIN)/python -m bench.scale

bench-score-full-data: $(VENV)/.installed-test  ## churn score vs pandas with the full-data xgboost model bench-scale registered (run bench-scale first)
	$(BIN)/python -m bench.score --store sqlite:///$(CURDIR)/build/bench/scale/2w/mlflow.db \
		--model models:/customer-churn@champion --name score-full-data \
		--source '$(CURDIR)/build/bench/telecom-large-2.1gb/telecom-000[01].csv'

bench-commands: $(VENV)/.installed-test  ## fixed cost of each command: wall time (interpreter start included) vs work time
	$(BIN)/python -m bench.commands --label after

clean:  ## remove build outputs (keeps .venv and the MLflow store)
	rm -rf build .pytest_cache
