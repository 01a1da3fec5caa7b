#!/usr/bin/env bash
# Install akoshad, build a small sample store, sync it once to the embedded default
# target (a local directory; no cloud account needed), then verify and restore it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e .
DEMO=${DEMO_DIR:-$(mktemp -d /tmp/akoshad-demo.XXXXXX)}
mkdir -p "$DEMO"
"$PY" -c "import sys; sys.path.insert(0, '.'); from tests.storegen import make_store; from pathlib import Path; make_store(Path('$DEMO/store'))"
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
echo "demo files are in $DEMO"
