# Sourced by demo.sh and test.sh: create (or reuse) the checkout's own virtual environment,
# install akoshad into it (editable, with the extras in $1), and put its bin directory first
# on PATH. Never touches the system Python, so it works where pip refuses system-wide
# installs (PEP 668 "externally-managed-environment").
#   PYTHON        the interpreter that creates the environment (default: python3)
#   AKOSHAD_VENV  where the environment lives (default: .venv in the checkout)
akoshad_venv() {
    local extras=${1:-}
    local py=${PYTHON:-python3}
    local venv=${AKOSHAD_VENV:-$PWD/.venv}
    if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "akoshad needs Python >= 3.11: set PYTHON=/path/to/python3.11 (now: $py)" >&2
            return 1
        fi
        if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
            echo "$venv exists and is not a virtual environment: move it away first" >&2
            return 1
        fi
        rm -rf "$venv"   # a broken or too old environment: made anew
        if ! "$py" -m venv "$venv"; then
            echo "could not create $venv: on Debian/Ubuntu, apt-get install python3-venv" >&2
            return 1
        fi
    fi
    # one stamp per set of extras; pyproject.toml newer than it means: install again
    local stamp="$venv/.akoshad-installed${extras:+-$extras}"
    if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
    # bytecode for akoshad's own modules, as a non-editable install has it: with
    # PYTHONDONTWRITEBYTECODE set (some sandboxes set it) every start would compile them again
    "$venv/bin/python" -m compileall -q akoshad >/dev/null || true
    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
}
