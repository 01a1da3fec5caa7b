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
# one binary from a Debian package, into /usr/local/bin, when it is missing and this runs
# as root with apt-get; without it, the tests that need it are skipped
fetch_binary() {  # fetch_binary BINARY PACKAGE WHAT
    local bin=$1 pkg=$2 deb_dir
    if command -v "$bin" >/dev/null 2>&1 || [ "$(id -u)" != 0 ] \
            || ! command -v apt-get >/dev/null 2>&1; then
        return 0
    fi
    deb_dir=$(mktemp -d)
    if (cd "$deb_dir" && { apt-get download -qq "$pkg" 2>/dev/null \
            || { apt-get update -qq && apt-get download -qq "$pkg"; }; }) >/dev/null 2>&1; then
        dpkg-deb --fsys-tarfile "$deb_dir"/"$pkg"_*.deb | tar -xO ./usr/bin/"$bin" >/usr/local/bin/"$bin"
        chmod 755 /usr/local/bin/"$bin"
    else
        echo "test.sh: could not fetch $bin (package '$pkg'); $3 is skipped" >&2
    fi
    rm -rf "$deb_dir"
}
# promtool checks config/akoshad.rules.yml: only that binary (48 MB) from Debian's
# 'prometheus' package, not the whole server
fetch_binary promtool prometheus "its test"
# age (the format's reference implementation, Go) opens what akoshad's own age writer seals
# in tests/unit/test_age_write.py: only that binary (4 MB) from Debian's 'age' package
fetch_binary age age "its test"
source scripts/venv.sh
akoshad_venv dev
if [ -z "${AKOSHAD_SKIP_LINT:-}" ]; then
    ruff check akoshad tests
    mypy
    mypy --config-file tests/mypy.ini tests
fi
exec python -m pytest "$@"
