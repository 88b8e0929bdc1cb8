# llm-gateway developer tasks (GNU make).
# Needs only python3 >= 3.11, make and git; everything else is installed from PyPI into .venv.
# Override the interpreter with e.g. `make test PYTHON=python3.12`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAYER_DIR := .build/layer
# `make build WITH_MOMENTO=1` also bundles the momento SDK (~21 MB with grpcio/protobuf).
WITH_MOMENTO ?=
# `make invoke FUNCTION=completion EVENT=events/completion.json`
FUNCTION ?=
EVENT ?=

.PHONY: help install compat-venv run test lint build deploy require-sam invoke upload usage report budget keys redrive eval bench bench-venvs bench-summarize bench-cache clean distclean

help:
	@echo "make install   create $(VENV) and install the project with its dev extras"
	@echo "make run       start the local stack (prints the URL, a dev API key and a curl line)"
	@echo "make test      lint, then run the test suite"
	@echo "make lint      ruff, mypy, cfn-lint"
	@echo "make compat-venv  $(COMPAT_VENV): instructor, LangChain, pydantic-ai, LiteLLM for the client-compatibility tests"
	@echo "make build     build the Lambda layer into $(LAYER_DIR) (WITH_MOMENTO=1 to add momento)"
	@echo "make deploy    build, then sam deploy --guided (needs the AWS SAM CLI)"
	@echo "make invoke    FUNCTION=<name> EVENT=<file>: run one handler locally on an event"
	@echo "make eval      extraction precision/recall on tests/golden/extraction (real providers if keys are set)"
	@echo "make upload    FILE=<document> [SCHEMA=<name> | KEY=<key>]: upload to the running make run's bucket, print the result"
	@echo "make usage     TENANT=<id> [FROM=YYYY-MM-DD TO=YYYY-MM-DD]: usage table (requests, cache hits, tokens, cost)"
	@echo "make report    [FROM=YYYY-MM-DD TO=YYYY-MM-DD] [TENANT=<id>] [STACK=<name>] [OUT=<dir>]: usage report as PNG + HTML"
	@echo "make budget    TENANT=<id> [LIMIT=<usd> WINDOW=day|month]: set (or show) a tenant's budget"
	@echo "make keys      ACTION=create TENANT=<id> | ACTION=list | ACTION=show|revoke|rotate KEY=<key id> [STACK=<name>] [KEYS_ARGS=...]"
	@echo "make redrive   [STACK=<name>] [REDRIVE_ARGS=...]: move retry dead-letter messages back to the retry queue"
	@echo "make bench     cold start, warm overhead, stream TTFT, cache hit and layer size side by side with LiteLLM (BENCH_ARGS=...)"
	@echo "make bench-summarize  parallel map-reduce summarization vs sequential over the simulator"
	@echo "make bench-cache      cache hit vs miss over the HTTP bridge, DynamoDB calls per hit and miss"
	@echo "make clean     remove build output and caches (distclean also removes $(VENV))"

# --------------------------------------------------------------------------- environment
install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: Python >= 3.11 is required, but '$(PYTHON)' is: $$($(PYTHON) -V 2>/dev/null || echo 'not found')" >&2; \
	  echo "       Install a newer Python or point make at one: make <target> PYTHON=python3.12" >&2; \
	  exit 1; }
	@if ! "$(PY)" -m pip --version >/dev/null 2>&1; then \
	  echo "creating $(VENV) with $$($(PYTHON) -V)"; \
	  rm -rf $(VENV); \
	  $(PYTHON) -m venv $(VENV) || { \
	    echo "error: '$(PYTHON) -m venv' failed; install your distribution's venv package (e.g. python3-venv)" >&2; \
	    rm -rf $(VENV); exit 1; }; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	@touch $@

# Real client libraries for tests/integration/test_client_compat.py, in their own venv so their pins never
# move the gateway's. instructor goes in without dependencies (tests/compat/requirements.txt says why).
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed

compat-venv: $(COMPAT_STAMP)

$(COMPAT_STAMP): tests/compat/requirements.txt tests/compat/requirements-nodeps.txt
	rm -rf $(COMPAT_VENV)
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install --quiet -r tests/compat/requirements.txt
	$(COMPAT_VENV)/bin/python -m pip install --quiet --no-deps -r tests/compat/requirements-nodeps.txt
	@touch $@

# --------------------------------------------------------------------------- local development
run: $(STAMP)
	$(PY) -m local.run

# usage, budget, redrive: against the running `make run` (found through .local/stack.json) when no AWS
# target is set; else AWS_ENDPOINT_URL (any moto), or real AWS with AWS_PROFILE / AWS_REGION.
TENANT ?=
FROM ?=
TO ?=
LIMIT ?=
WINDOW ?= day

usage: $(STAMP)
	@if [ -z "$(TENANT)" ]; then echo "usage: make usage TENANT=<id> [FROM=YYYY-MM-DD] [TO=YYYY-MM-DD]" >&2; exit 2; fi
	@$(PY) -m local.usage_cli --tenant "$(TENANT)" $(if $(FROM),--from "$(FROM)") $(if $(TO),--to "$(TO)")

# A usage report as a PNG and an HTML page (cost per day by model, requests and cache hit rate, cost saved by
# the cache, top tenants): the running `make run`'s usage table, an AWS target's, or STACK's. Writes to OUT
# (default .local/report/) and prints where.
OUT ?=

report: $(STAMP)
	@$(PY) -m local.report $(if $(STACK),--stack-name "$(STACK)") $(if $(FROM),--from "$(FROM)") $(if $(TO),--to "$(TO)") \
	  $(if $(TENANT),--tenant "$(TENANT)") $(if $(OUT),--out-dir "$(OUT)")

budget: $(STAMP)
	@if [ -z "$(TENANT)" ]; then echo "usage: make budget TENANT=<id> [LIMIT=<usd>] [WINDOW=day|month]" >&2; exit 2; fi
	@$(PY) -m local.budget_cli --tenant "$(TENANT)" $(if $(LIMIT),--limit "$(LIMIT)" --window "$(WINDOW)")

# Gateway keys: against STACK's keys table, or the running `make run`'s when no AWS target is set.
# KEYS_ARGS: more options, e.g. "--models tier:fast,gpt-4o-mini --rpm 60 --tpm 100000 --budget 5" for create,
# "--grace 3600" for rotate (see `python -m local.keys_cli create --help`).
ACTION ?= list
KEY ?=
KEYS_ARGS ?=
keys: $(STAMP)
	@$(PY) -m local.keys_cli $(if $(STACK),--stack-name "$(STACK)") $(ACTION) \
	  $(if $(filter create,$(ACTION)),--tenant "$(TENANT)") $(if $(filter list,$(ACTION)),$(if $(TENANT),--tenant "$(TENANT)")) \
	  $(if $(filter show revoke rotate,$(ACTION)),"$(KEY)") $(KEYS_ARGS)

# Dead-letter queue -> retry queue. Queues from STACK's outputs, or RETRY_QUEUE_URL / RETRY_DLQ_URL, or
# the running `make run`'s when no AWS target is set.
# REDRIVE_ARGS: --dry-run, --max N, --include-poison (see local/redrive.py).
STACK ?=
REDRIVE_ARGS ?=

redrive: $(STAMP)
	@$(PY) -m local.redrive $(if $(STACK),--stack-name "$(STACK)") $(REDRIVE_ARGS)

# Extraction quality on the golden set. Simulator unless OPENAI/ANTHROPIC/GEMINI_API_KEY is set;
# EVAL_ARGS: --model <id> | --tier <tier>, --schema <name>, --fields, --json, --simulate (see local/eval.py).
EVAL_ARGS ?=

eval: $(STAMP)
	$(PY) -m local.eval $(EVAL_ARGS)

# Parallel map-reduce vs sequential over the simulator with a fixed delay (also part of `make bench`).
# BENCH_SUMMARIZE_ARGS: --delay-ms 100 --chunks 64 --concurrency 16 --json
BENCH_SUMMARIZE_ARGS ?=

# Every benchmark in one run, with LiteLLM (and Python 3.12, when found) in bench-only venvs.
# BENCH_ARGS: --parts layer,cold,warm,cache,stream --runs 7 --n 300 (see bench/run.py). Writes bench/results/.
BENCH_ARGS ?=

bench-venvs:
	PYTHON=$(PYTHON) bench/venvs.sh

bench: $(STAMP) bench-venvs
	$(PY) -m bench.run $(BENCH_ARGS)

# Cache hit vs miss through the local stack's HTTP bridge (0 and 300 ms simulated provider latency).
bench-cache: $(STAMP)
	$(PY) -m bench.cache_latency

bench-summarize: $(STAMP)
	$(PY) -m bench.summarize_bench $(BENCH_SUMMARIZE_ARGS)

# A document into the running `make run`'s bucket (incoming/summarize/, or incoming/extract/<SCHEMA>/, or KEY);
# waits for the function's results/...json (or errors/...json) and prints it.
FILE ?=
KEY ?=
SCHEMA ?=

upload: $(STAMP)
	@if [ -z "$(FILE)" ]; then echo "usage: make upload FILE=<document> [SCHEMA=<name> | KEY=<key>]" >&2; exit 2; fi
	@$(PY) -m local.upload "$(FILE)" $(if $(KEY),--key "$(KEY)") $(if $(SCHEMA),--schema "$(SCHEMA)")

invoke: $(STAMP)
	@if [ -z "$(FUNCTION)" ] || [ -z "$(EVENT)" ]; then \
	  echo "usage: make invoke FUNCTION=completion EVENT=events/<file>.json" >&2; exit 2; fi
	$(PY) -m local.invoke --function $(FUNCTION) --event $(EVENT)

# --------------------------------------------------------------------------- quality
lint: $(STAMP)
	$(VENV)/bin/ruff check layers functions local tests bench
	$(VENV)/bin/ruff format --check layers functions local tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint template.yaml

test: $(STAMP) compat-venv lint
	$(PY) -m pytest

# --------------------------------------------------------------------------- build and deploy
build: $(STAMP)
	$(PY) -m local.build_layer --out $(LAYER_DIR) $(if $(filter 1 true yes,$(WITH_MOMENTO)),--with-momento)
	@du -sh $(LAYER_DIR)

# Check for the SAM CLI before spending time on the build.
require-sam:
	@command -v sam >/dev/null 2>&1 || { \
	  echo "error: the AWS SAM CLI ('sam') is not on PATH." >&2; \
	  echo "       Install it, e.g. 'pip install aws-sam-cli' (in a separate venv or with pipx), then re-run 'make deploy'." >&2; \
	  exit 1; }

# Explicit --template-file: never pick up a stale .aws-sam/build/template.yaml.
deploy: require-sam build
	sam deploy --guided --template-file template.yaml

# --------------------------------------------------------------------------- housekeeping
clean:
	rm -rf .build .aws-sam .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(COMPAT_VENV) .venv-bench-litellm .venv-bench-312
