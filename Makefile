# Shortcuts. `make demo` is the README's first command: a full runbook run against the embedded
# sandbox, leaving an audit record in outputs/<UTC time>-sandbox/.
PYTHON ?= python3

.PHONY: demo test lint verify

demo:
	$(PYTHON) -m rtbook run --target sandbox

test:
	bash scripts/test.sh

lint:
	$(PYTHON) -m ruff check rtbook tests bench scripts
	$(PYTHON) -m mypy

# Re-check the newest audit record.
verify:
	$(PYTHON) -m rtbook verify "$$(ls -d outputs/*/ | sort | tail -n 1)"
