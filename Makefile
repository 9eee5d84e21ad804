# The two commands a fresh machine needs: `make test` and `make demo`. Each creates .venv and installs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo-output

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadfile -q tests

demo: $(STAMP)
	$(BIN)/diffusionct demo -o $(DEMO_OUT) --overwrite

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
