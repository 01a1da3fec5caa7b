#!/usr/bin/env bash
# Install everything the test suite needs into the checkout's own virtual environment
# (.venv: akoshad with its test and dev extras, SeaweedFS's `weed` included), run the lint
# and type checks CI enforces (ruff, mypy), then the test suite (pytest, arguments passed on).
# As root with apt-get and no systemd-analyze, it installs Debian's `systemd` package for
# the unit-file checks. AKOSHAD_SKIP_LINT=1 skips ruff and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing the 'systemd' package (systemd-analyze checks the unit file)" >&2
        apt-get update -qq && apt-get install -y -qq systemd >/dev/null
    else
        echo "test.sh: systemd-analyze is missing: its tests are skipped (install 'systemd')" >&2
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
# age (the format's reference implementation, Go) opens what akoshad's own age writer seals
# in tests/unit/test_age_write.py: only that binary (4 MB) from Debian's 'age' package;
# without it that test is skipped
if ! command -v age >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    deb_dir=$(mktemp -d)
    if (cd "$deb_dir" && { apt-get download -qq age 2>/dev/null \
            || { apt-get update -qq && apt-get download -qq age; }; }) >/dev/null 2>&1; then
        dpkg-deb --fsys-tarfile "$deb_dir"/age_*.deb | tar -xO ./usr/bin/age >/usr/local/bin/age
        chmod 755 /usr/local/bin/age
    else
        echo "test.sh: could not fetch age (package 'age'); its test is skipped" >&2
    fi
    rm -rf "$deb_dir"
fi
source scripts/venv.sh
akoshad_venv dev
if [ -z "${AKOSHAD_SKIP_LINT:-}" ]; then
    ruff check akoshad tests
    mypy
    mypy --config-file tests/mypy.ini tests
fi
exec python -m pytest "$@"
