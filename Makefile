# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates the project's own virtual environment (.venv) and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= data/demo
DEMO_OUT ?= results/demo

.PHONY: install demo demo-bert-only test clean-demo serve

$(VENV)/.installed: pyproject.toml requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-cache-dir -r requirements.txt
	$(PY) -m pip install -q --no-cache-dir -e ".[demo,test,serve]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m vilbert.demo run --data $(DEMO_DIR) --output $(DEMO_OUT)

# VQA from the BERT checkpoint alone: fresh-weight rate off, on, and one rate for all (about 5 minutes; its rows join results.md).
demo-bert-only: install
	$(PY) -m vilbert.demo run --bert_only --data $(DEMO_DIR) --output $(DEMO_OUT)

# The demo's finetuned models on a local web page (http://127.0.0.1:8000/), once `make demo` has run.
serve: install
	$(PY) -m vilbert.serve --demo $(DEMO_OUT) --data $(DEMO_DIR)

test: install
	$(PY) -m pytest -q tests

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_OUT)
