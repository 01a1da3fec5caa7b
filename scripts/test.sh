#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq systemd >/dev/null
    else
        echo "test.sh: systemd-analyze is missing; install the 'systemd' package" >&2
    fi
fi
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
exec "$PY" -m pytest "$@"
