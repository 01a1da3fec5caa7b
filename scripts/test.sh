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
# promtool checks config/akoshad.rules.yml: only that binary (48 MB) from Debian's
# 'prometheus' package, not the whole server; without it that test is skipped
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    deb_dir=$(mktemp -d)
    if (cd "$deb_dir" && { apt-get download -qq prometheus 2>/dev/null \
            || { apt-get update -qq && apt-get download -qq prometheus; }; }) >/dev/null 2>&1; then
        dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -xO ./usr/bin/promtool >/usr/local/bin/promtool
        chmod 755 /usr/local/bin/promtool
    else
        echo "test.sh: could not fetch promtool (package 'prometheus'); its test is skipped" >&2
    fi
    rm -rf "$deb_dir"
fi
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
exec "$PY" -m pytest "$@"
