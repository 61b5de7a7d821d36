# Shortcuts. On a fresh machine each target installs what it needs first (scripts/setup.sh is
# idempotent). `make demo` is the README's first command: a full runbook run against the
# embedded sandbox, leaving an audit record in outputs/<UTC time>-sandbox/. `make test` is what
# CI runs.
PYTHON ?= python3

.PHONY: setup demo test lint verify notebooks

setup:
	bash scripts/setup.sh

demo: setup
	$(PYTHON) -m rtbook run --target sandbox

test: setup
	bash scripts/test.sh

lint:
	$(PYTHON) -m ruff check rtbook tests bench scripts
	$(PYTHON) -m mypy

# Re-check the newest audit record.
verify:
	$(PYTHON) -m rtbook verify "$$(ls -d outputs/*/ | sort | tail -n 1)"

# After editing a notebook (rtbook/notebooks/*.ipynb) or its paired py:percent file: bring the
# pair back in agreement (tests/unit/test_notebooks_paired.py checks it).
notebooks:
	$(PYTHON) -m jupytext --sync rtbook/notebooks/*.ipynb
