# The two commands of the README: `make serve` and `make test`. Both set up a fresh machine first.
VENV ?= .venv
# pytest processes for `make test`; each test file runs whole in one of them (its fixtures are built once)
TEST_WORKERS ?= 2
BIN := $(VENV)/bin

.PHONY: setup serve test test-slow bench lint

setup:
	@VENV=$(VENV) bash scripts/setup.sh

serve: setup
	$(BIN)/d2v serve

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python bench/presets.py && $(BIN)/python bench/export.py && $(BIN)/python bench/serve.py && $(BIN)/python bench/kernels.py

lint: setup
	$(BIN)/ruff check d2v tests bench
