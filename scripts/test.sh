#!/usr/bin/env bash
# Installs what the tests need and runs the whole suite.  The native lane's C extension needs a C compiler
# (docs/native-lane.md): installed with apt-get when missing and we may (the CI machine); without one the package
# still installs and the gateway runs its Python lane only.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcc >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m ruff check src tests
exec python3 -m pytest -q "$@"
