# Two commands do all the set-up: `make run` (demo portal) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ADDR ?= 127.0.0.1:8000
# Links in emails follow the address the demo listens on, unless SITE_URL is set.
export SITE_URL ?= http://$(ADDR)

.PHONY: install run test lint bench clean tour

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install  ## migrate, seed the demo, start web server + Celery worker/beat
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --quiet-logins
	$(PY) manage.py serve --addr $(ADDR)

test: install  ## the whole suite on DATABASE_URL (SQLite by default)
	$(PY) -m pytest

lint: install  ## ruff, Django checks, migrations up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) var

bench: install  ## targeting, preparation, sending, tracking endpoints, engagement reports, page timings, API bulk upsert, triggers, imports, the children table and evaluate-before-ordering on DATABASE_URL (PostgreSQL)
	$(PY) -m bench.targeting --contacts $(or $(CONTACTS),1000000) --repeat $(or $(REPEAT),5) \
	  --recipients $(or $(RECIPIENTS),100000) $(BENCH_ARGS)
	$(PY) -m bench.engagement $(ENGAGEMENT_BENCH_ARGS)
	$(PY) -m bench.pages --repeat $(or $(REPEAT),5) $(PAGES_ARGS)
	$(PY) -m bench.api_bulk --rows $(or $(BULK_ROWS),10000) --repeat $(or $(REPEAT),5) $(BULK_ARGS)
	$(PY) -m bench.triggers --batch $(or $(TRIGGER_BATCH),100000) $(TRIGGER_ARGS)
	$(PY) -m bench.imports --contacts $(or $(IMPORT_CONTACTS),1000000) \
	  --bookings $(or $(IMPORT_BOOKINGS),3000000)
	$(PY) -m bench.children --children $(or $(CHILDREN),300) --messages $(or $(CHILD_MESSAGES),500)
	$(PY) -m bench.evaluate --contacts $(or $(CONTACTS),1000000) --repeat $(or $(REPEAT),5)

tour: install  ## screenshots of the main pages for each demo role, into docs/tour/
	$(PY) docs/tour.py
