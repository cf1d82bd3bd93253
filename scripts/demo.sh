#!/usr/bin/env bash
# Installs the gateway and runs the demo: example backend + local Lambda runner with example functions +
# the gateway in front, on loopback, no cloud account.  Prints curl lines; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec python3 -m sidecar_gateway demo "$@"
