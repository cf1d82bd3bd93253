#!/usr/bin/env bash
# Installs what the tests need (pip only; no system packages are required) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m ruff check src tests
exec python3 -m pytest -q "$@"
