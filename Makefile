# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgres,s3]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check runner tests bench scripts
	$(BIN)/mypy runner

test: lint
	$(BIN)/pytest -q -m "not slow" -p no:cacheprovider

demo: install
	$(BIN)/python scripts/demo.py

bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) state/* .pytest_cache .mypy_cache .ruff_cache
