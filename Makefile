# kinrec: `make demo` runs the main job end to end, `make test` runs the test suite.
# Both create .venv on first use (torch CPU wheel installed in the same pip call as kinrec).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)

.PHONY: demo test lint docs bench serve bench-serving clean

$(BIN)/kinrec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e '.[dev]'
	touch $(BIN)/kinrec

demo: $(BIN)/kinrec
	$(BIN)/kinrec demo

test: $(BIN)/kinrec
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mkdocs build --strict --quiet
	KINREC_DATA_DIR=$${KINREC_DATA_DIR:-$(SHARED)/datasets} HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(BIN)/kinrec
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

# The documentation site (mkdocs.yml): warnings, such as a broken link, are errors. Into site/.
docs: $(BIN)/kinrec
	$(BIN)/mkdocs build --strict

bench: $(BIN)/kinrec
	$(BIN)/python benchmarks/baselines.py

serve: $(BIN)/kinrec
	$(BIN)/kinrec serve --model-dir runs/demo-model --db sqlite:///runs/demo.db --insecure-no-auth

bench-serving: $(BIN)/kinrec
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf runs site .pytest_cache
