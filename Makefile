# `make demo` and `make test` create .venv themselves; see README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; an unpinned torch would pull a CUDA build of several GB.
TORCH := torch==2.13.0

.PHONY: demo test test-all docs install install-test install-docs lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,jax]"

install-docs: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[docs]"

demo: install
	$(BIN)/iai demo

# `make test` is CI's command (under 15 minutes on 2 cores); `make test-all` adds the
# tests marked heavy (the longest documentation pages' snippets).
test: install-test
	$(BIN)/python -m pytest -n 2 --durations=15 -m "not heavy"

test-all: install-test
	$(BIN)/python -m pytest -n 2 --durations=15

# The site goes to build/site; --strict turns every warning into an error.
docs: install-docs
	$(BIN)/mkdocs build --strict

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
