# One entry point: `make run` starts everything on embedded defaults, `make test` checks everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k health -x"`.
PYTEST_ARGS ?=

.PHONY: help venv venv-dev run test lint format bench check-deploy clean

help:
	@echo "make run     start web + worker + beat with demo data (SQLite, embedded broker)"
	@echo "make test    linters + the whole test suite"
	@echo "make lint    ruff, mypy, makemigrations --check"
	@echo "make bench   run the benchmarks in bench/ and print their figures"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install only when the pinned requirements change.
$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

run: venv
	$(PY) manage.py migrate --no-input
	$(PY) manage.py demo_data --url http://$(HOST):$(PORT)/
	$(PY) manage.py run_stack --host $(HOST) --port $(PORT)

lint: venv-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	TMS_ENV=test $(PY) manage.py makemigrations --check --dry-run
	TMS_ENV=test $(PY) manage.py check --fail-level WARNING

format: venv-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# `make bench BENCH="ingest uart"` runs only the benchmarks whose name holds one of the words.
BENCH ?=
bench: venv-dev
	$(PY) bench/run.py $(BENCH)

# The production checklist, with throwaway secrets.
check-deploy: venv
	TMS_ENV=production SECRET_KEY=$$($(PY) -c 'import secrets;print(secrets.token_urlsafe(64))') \
	FIELD_ENCRYPTION_KEYS=check-deploy-only ALLOWED_HOSTS=tms.example.com \
	$(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache staticfiles
