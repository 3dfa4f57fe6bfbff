# Quarry — every command a newcomer needs.  `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PG_VERSION := $(shell ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
APT_PACKAGES := postgresql-$(PG_VERSION)-pgtap libtap-parser-sourcehandler-pgtap-perl postgresql-$(PG_VERSION)-plpgsql-check
STAMPS := .make
PGTAP_DB ?= quarry_pgtap
ADMIN_URL := postgresql://postgres@127.0.0.1:5432
DENO := $(CURDIR)/$(VENV)/bin/deno
WEBHOOK := supabase/functions/stripe-webhook

.PHONY: help setup postgres dev db token plan test lint test-deno test-sql test-py bench lock clean

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: postgres $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/npm $(STAMPS)/deno ## install everything (apt, venv, npm, the Edge Function's Deno modules); idempotent

postgres: ## start the local PostgreSQL if it is down
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $(PG_VERSION) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL did not start" >&2; exit 1

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES))
	@touch $@

$(STAMPS)/venv: pyproject.toml constraints.txt
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The Edge Function's npm modules, from deno.lock, into Deno's cache: nothing downloads when it runs.
$(STAMPS)/deno: $(STAMPS)/venv $(WEBHOOK)/deno.json $(WEBHOOK)/deno.lock
	@mkdir -p $(STAMPS)
	cd $(WEBHOOK) && $(DENO) install --frozen --entrypoint index.ts handler_test.ts
	@touch $@

db: setup ## create and migrate the local dev database (FRESH=1 drops it first)
	$(PY) -m quarry.dev db $(if $(FRESH),--fresh)

dev: setup ## run the service: dev database, dev auth (JWKS), gateway on :8000
	$(PY) -m quarry.dev run

token: ## print a dev access token: make -s token USER=alice@example.com
	@test "$(origin USER)" = "command line" || { echo "usage: make -s token USER=alice@example.com" >&2; exit 2; }
	@$(PY) -m quarry.dev token "$(USER)"

plan: ## put a dev user on a plan: make plan USER=alice@example.com PLAN=pro
	@test "$(origin USER)" = "command line" -a -n "$(PLAN)" || { echo "usage: make plan USER=alice@example.com PLAN=free|pro|enterprise" >&2; exit 2; }
	@$(PY) -m quarry.dev plan "$(USER)" "$(PLAN)"

test: setup lint test-deno test-sql test-py ## run every test (lint, Deno, pgTAP, pytest)

lint: setup ## ruff, mypy and sqlfluff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/sqlfluff lint supabase/migrations sql tests/sql/helpers

test-deno: setup ## the Edge Function: deno lint, fmt --check, check and test
	cd $(WEBHOOK) && $(DENO) lint && $(DENO) fmt --check && $(DENO) check --frozen index.ts handler_test.ts \
	  && $(DENO) test --frozen --no-prompt handler_test.ts

test-sql: setup ## pgTAP through pg_prove on a fresh database, plus supabase db lint
	$(PY) -c "from quarry.dev.database import prepare_database as p; p('$(ADMIN_URL)/postgres', '$(PGTAP_DB)', fresh=True)"
	psql -q -v ON_ERROR_STOP=1 "$(ADMIN_URL)/$(PGTAP_DB)" -f tests/sql/helpers/setup.sql
	pg_prove --failures --dbname "$(ADMIN_URL)/$(PGTAP_DB)" tests/sql/*.sql
	node_modules/.bin/supabase db lint --db-url "$(ADMIN_URL)/$(PGTAP_DB)?sslmode=disable" \
	  --schema api,app,internal,ops --level warning --fail-on warning

# Two passes: everything but the timing-sensitive tests on PYTEST_WORKERS processes (each with a
# database of its own), then those alone, on a machine nothing else in the suite is loading.
PYTEST_WORKERS ?= 2
test-py: setup ## pytest (unit, HTTP and end-to-end against the real Postgres), in parallel, then the timing-sensitive tests alone
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not serial"
	$(VENV)/bin/pytest -m serial

bench: setup ## run every benchmark; each prints its summary as its last line
	@set -e; for script in bench/[!_]*.py; do echo "== $$script"; $(PY) $$script; done

lock: ## re-pin every transitive Python dependency into constraints.txt (after editing pyproject.toml)
	rm -rf .lockvenv && $(PYTHON_BIN) -m venv .lockvenv
	.lockvenv/bin/pip install -q -e '.[dev]'
	.lockvenv/bin/pip freeze --exclude-editable | sort > constraints.txt
	rm -rf .lockvenv

clean: ## remove the venv, node_modules and the dev key
	rm -rf $(VENV) node_modules $(STAMPS) .dev
