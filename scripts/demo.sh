#!/usr/bin/env bash
# Install akoshad into the checkout's own virtual environment (.venv), build a small sample
# store, sync it once to the embedded default target (a local directory; no cloud account
# needed), then verify and restore it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
akoshad_venv
DEMO=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/akoshad-demo.XXXXXX")}
mkdir -p "$DEMO"
python -c "import sys; sys.path.insert(0, '.'); from tests.storegen import make_store; from pathlib import Path; make_store(Path(sys.argv[1]))" "$DEMO/store"
cat > "$DEMO/config.yaml" <<YAML
data_dir: $DEMO/store
state_dir: $DEMO/state
local_target_dir: $DEMO/outbox
cloud_sync:
  system_id: demo
YAML
echo "== akoshad run --once (store: $DEMO/store -> outbox: $DEMO/outbox)"
akoshad run --once --config "$DEMO/config.yaml"
echo "== what landed"
find "$DEMO/outbox" -type f | sed "s|$DEMO/outbox/||" | sort
echo "== akoshad verify"
akoshad verify --config "$DEMO/config.yaml"
echo "== akoshad restore --latest"
akoshad restore --latest --dest "$DEMO/restored" --config "$DEMO/config.yaml"
echo "demo files are in $DEMO (akoshad is in $VIRTUAL_ENV/bin)"
