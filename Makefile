# The README's commands: `make demo` runs the SOSP comparison on the embedded digits data
# (config/demo.yaml) and ends by saying how many of its cells agree with the committed ones
# (results/demo/reference.csv) within their seeds' spread; `make demo-all` runs it and then the
# companion studies (config/demo_studies.yaml: expand-pruning, gradient flow, retraining);
# `make test` runs the test suite. Each creates .venv (pinned versions) when it is missing.
# `make demo` forces the evaluations, so on a fresh clone (whose committed records in
# results/demo/runs/ would otherwise satisfy the workflow) it trains, prunes and fine-tunes
# everything; later calls train only what runs/ lacks. `make replot` re-renders the tables and
# figures from the committed records without training.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo demo-all replot test lint docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

DEMO := results/demo
SNAKEMAKE := PATH="$(abspath $(BIN)):$$PATH" snakemake --cores all

# results/demo/reference.csv holds the committed summary's cells (summary.csv itself is rewritten
# by the run); after committing new records, renew it: agreement.py ... --snapshot
demo: $(BIN)/.installed
	$(SNAKEMAKE) --forcerun evaluate
	$(BIN)/python workflow/scripts/agreement.py --summary $(DEMO)/summary.csv \
		--reference $(DEMO)/reference.csv --out $(DEMO)/agreement.csv

# the studies' own evaluations and retraining report forced, as `demo` forces its evaluations
demo-all: demo
	$(SNAKEMAKE) --forcerun evaluate retraining_report --configfile config/demo_studies.yaml

# every table and figure the committed records make, training nothing: the SOSP comparison
# (results/demo/), then expand-pruning, the gradient-flow and the retraining studies
# (results/demo_studies/)
replot: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" snakemake replot
	PATH="$(abspath $(BIN)):$$PATH" snakemake replot --configfile config/demo_studies.yaml

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
