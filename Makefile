# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test screenshots install lint typecheck typecheck-baseline check-deploy chromium clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The portal with its worker (and, once configured, the Graph emulator) on SQLite.
run: install
	$(PY) scripts/write_demo_env.py
	$(PY) manage.py migrate --noinput
	$(PY) manage.py create_demo_users
	$(PY) manage.py runportal

## The whole suite, browser tests included. DATABASE_URL set: on PostgreSQL.
test: install chromium
	$(PY) -m pytest $(PYTEST_ARGS)

## Every console page x role x 1280/390 px x light/dark, kept in test-artifacts/screenshots/pages/.
screenshots: install chromium
	SCREENSHOTS=1 $(PY) -m pytest tests/browser/test_screenshots.py $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## mypy with django-stubs on integrations/ and portal/: no error beyond mypy-baseline.txt.
typecheck: install
	$(PY) scripts/typecheck.py

## Rewrite mypy-baseline.txt from the current errors (it may only shrink: review the diff).
typecheck-baseline: install
	$(PY) scripts/typecheck.py --update

## `check --deploy --fail-level WARNING` on the production settings (deploy/k8s/configmap.yaml).
check-deploy: install
	$(PY) scripts/check_deploy.py

## Browser tests drive Debian's chromium; Playwright never downloads a browser here.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; \
	  else echo "Browser tests need /usr/bin/chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

## Forget the demo: database and .env (the next `make run` starts afresh).
clean-demo:
	rm -f db.sqlite3 db.sqlite3-wal db.sqlite3-shm .env .emulator/demo-passwords.json
