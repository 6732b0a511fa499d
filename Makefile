# The README's two commands: `make demo` runs the workflow on the embedded digits data
# (config/demo.yaml), `make test` runs the test suite. Each creates .venv (pinned versions) when
# it is missing. `make demo` forces the evaluations, so on a fresh clone (whose committed records
# in results/demo/runs/ would otherwise satisfy the workflow) it trains, prunes and fine-tunes
# everything; later calls train only what runs/ lacks. `make replot` re-renders the tables and
# figures from the committed records without training.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo replot test lint docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores all --forcerun evaluate

# every table and figure the committed records in results/demo/ make (the SOSP comparison,
# expand-pruning, the gradient-flow and the retraining studies), training nothing
replot: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" snakemake replot

# one pytest worker per CPU, one thread each (tests/conftest.py); the two end-to-end tests that
# share a snakemake run stay on one worker (--dist loadgroup)
test: $(BIN)/.installed lint docs
	$(BIN)/python -m pytest -q -n auto --dist loadgroup --durations=15

# the documentation site into site/, every warning an error (mkdocs.yml: strict)
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --quiet

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .snakemake runs site
