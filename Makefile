# SpaceMusic: `make run` brings the whole system up on the local stack; `make test` runs
# every test against it. Both install what is missing first (idempotent, fast when warm).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
# Local settings for every target; anything already in the environment wins.
LOAD_ENV := source infra/local/load-env.sh;
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install stack-up stack-down stack-status stack-reset setup run worker web simulate test test-unit test-js lint schema-gate bench loadtest clean soak-payouts

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

install: ## Install everything the project needs (Debian packages, venv, Kafka, registry, stripe-mock)
	@$(LOAD_ENV) bash infra/local/stack.sh install

stack-up: install ## Start Postgres, the schema registry, Kafka, S3 (moto) and stripe-mock
	@$(LOAD_ENV) bash infra/local/stack.sh up

stack-down: ## Stop the local stack
	@$(LOAD_ENV) bash infra/local/stack.sh down

stack-status: ## Show what is running where
	@$(LOAD_ENV) bash infra/local/stack.sh status

stack-reset: ## Stop the stack and wipe its data (keeps installed software)
	@$(LOAD_ENV) bash infra/local/stack.sh reset

setup: stack-up ## Migrate the database, register schemas, create topics
	@$(LOAD_ENV) $(BIN)/spacemusic migrate
	@$(LOAD_ENV) $(BIN)/spacemusic schemas register
	@$(LOAD_ENV) $(BIN)/spacemusic topics create

run: setup ## Run web + workers (Procfile, via honcho) with a trickle of simulated offers
	@$(LOAD_ENV) bash infra/local/run.sh

simulate: ## Post realistic offers to the running web app (Ctrl-C to stop)
	@$(LOAD_ENV) $(BIN)/spacemusic simulate --rate 1

test: stack-up test-js ## Run the whole test suite against the real local stack, with coverage
	@$(LOAD_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider --cov --cov-report=term:skip-covered --cov-report=xml $(PYTEST_ARGS)

test-js: ## Unit tests of the admin page's JavaScript modules (node's built-in test runner)
	@node --test tests/js/

test-unit: install ## Only the tests that need no running stack
	@$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

lint: install ## ruff + import-linter (the layering contracts)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/lint-imports
	@$(MAKE) -s schema-gate

schema-gate: ## Every schema/ file BACKWARD compatible with its released version (schema/released/)
	@$(BIN)/python -m infra.schema_gate

bench: setup ## Benchmarks under bench/ (print their figures)
	@$(LOAD_ENV) for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

SOAK_ARGS ?= --payouts 1000
soak-payouts: setup ## Randomised payout fault soak (1,000 payouts; prints duplicates/lost/parked, ledger, reconcile)
	@$(LOAD_ENV) $(BIN)/python -m bench.soak_payouts $(SOAK_ARGS)

FAULT_SOAK_ARGS ?= --minutes 10
LEDGER_EXAMPLES ?= 2000
soak: setup ## Fault soak on a private stack, whole lifecycle under broker/db/registry/S3/worker/web faults; prints the table (FAULT_SOAK_ARGS="--minutes 30", LEDGER_EXAMPLES=20000)
	@$(LOAD_ENV) LEDGER_EXAMPLES=$(LEDGER_EXAMPLES) $(BIN)/python -m tests.soak.faults $(FAULT_SOAK_ARGS)

LOADTEST_ARGS ?= --rate 200 --duration 30s
loadtest: setup ## Locust against the local stack + SLO gate (LOADTEST_ARGS="--rate 1000 --duration 10m --p95-ms 50")
	@$(LOAD_ENV) $(BIN)/python bench/loadtest/run.py $(LOADTEST_ARGS)

.PHONY: deploy-tools deploy-check
deploy-tools: ## Install the deployment validators (helm, kubeconform, promtool, amtool, tofu, tflint, checkov) into .local
	@bash infra/deploy/tools.sh

deploy-check: stack-up deploy-tools ## Validate infra/deploy/ offline and run the rendered chart's processes on the local stack
	@$(LOAD_ENV) SPACEMUSIC_DEPLOY_CHECK=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/deploy $(PYTEST_ARGS)

clean: ## Remove caches and test artifacts (not the stack)
	rm -rf .pytest_cache htmlcov coverage.xml .coverage test-artifacts
