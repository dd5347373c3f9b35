# Quick start: `make demo`, `make test`. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-scale lint bench chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[emulator,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/rsql-cloud demo

# 3 workers, each with its own emulator; a module's tests stay on one worker, so module
# fixtures run once (README, "Development"). Plain `pytest` runs the same tests in one process.
test: install
	$(BIN)/pytest -q -n 3 --dist loadscope

# Runs at AWS's limits (5,000 jobs, 25,000 history events): minutes each.
test-scale: install
	$(BIN)/pytest -q -m scale

lint: install
	$(BIN)/ruff check agent cloud tests bench
	$(BIN)/ruff format --check agent cloud tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

bench: install
	$(BIN)/python -m bench.run

# The chaos soak (README, "Failure behaviour"): `make chaos SEED=3 DURATION=120`.
SEED ?= 7
DURATION ?= 600
chaos: install
	$(BIN)/python -m bench.chaos --seed $(SEED) --duration-s $(DURATION)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
