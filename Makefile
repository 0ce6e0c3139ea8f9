# `make run` and `make test` are all a new machine needs; both build the same .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install migrate clean

$(STAMP): pyproject.toml requirements-no-deps.txt
	# A .venv made by another Python (a first run before PYTHON=python3.11) is made again.
	$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
		|| { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m pip install --quiet --no-deps -r requirements-no-deps.txt
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py create_demo_accounts
	$(PY) manage.py seed_demo --if-empty
	$(PY) manage.py train_if_missing
	exec bash bin/run-local

clean:
	rm -rf $(VENV) var staticfiles
