#!/usr/bin/env bash
# Installs what the benchmark needs, idempotently: wrk, nginx, Caddy and valgrind from the Debian archive (never binaries
# from elsewhere), matplotlib from PyPI, and the gateway itself (editable).  Services are not started: the
# benchmark runs its own nginx/Caddy instances from a temporary prefix.  A missing package is reported and the
# benchmark degrades (no Caddy peer, no chart); wrk2 is not in Debian, so the fixed-rate runs use bench/paced.py.
set -uo pipefail
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)  # bench/instructions.py (callgrind)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing ${need[*]} and not root; install them with apt-get" >&2
  else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || echo "setup: apt-get update failed" >&2
    for pkg in "${need[@]}"; do
      if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get install -y -qq "$pkg" >/dev/null 2>&1 || echo "setup: apt-get install $pkg failed" >&2
      else
        echo "setup: package $pkg is not available from the configured apt sources" >&2
      fi
    done
  fi
fi
if ! command -v wrk2 >/dev/null 2>&1 && ! apt-cache policy wrk2 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  echo "setup: wrk2 is not packaged here; fixed-rate runs use the paced Python generator (bench/paced.py)" >&2
fi

"$PY" -c 'import matplotlib' 2>/dev/null || \
  "$PY" -m pip install --quiet --disable-pip-version-check matplotlib || echo "setup: matplotlib install failed" >&2
"$PY" -c 'import sidecar_gateway, httptools, uvloop' 2>/dev/null || \
  "$PY" -m pip install --quiet --disable-pip-version-check -e . || echo "setup: installing the gateway failed" >&2

for tool in wrk nginx caddy; do
  command -v "$tool" >/dev/null 2>&1 || echo "setup: $tool unavailable" >&2
done
exit 0
