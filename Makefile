# The README's commands. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Runs the bot once on the bundled sample feed, in console mode, from a fresh demo state.
demo: $(VENV)/.installed
	rm -f data/demo-state.*
	env -u SLACK_BOT_TOKEN BOT_RULES=bot/sample/demo-rules.yaml BOT_DB=data/demo-state.json $(PY) -m bot run --once

test: $(VENV)/.installed
	$(PY) -m pytest -n 2

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bot tests bench
	$(VENV)/bin/ruff format --check bot tests bench
	$(VENV)/bin/mypy bot

check: $(VENV)/.installed
	$(PY) -m bot check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache data/demo-state*.json
