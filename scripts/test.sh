#!/usr/bin/env bash
# The test command: lint, type-check, then every test layer.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check rtbook tests bench scripts
python3 -m mypy
python3 -m pytest "$@"
