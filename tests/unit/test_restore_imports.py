"""What ``akoshad restore`` imports before its first request: the state database
(``akoshad.store.db``, ``sqlite3``) only serves ``verify``'s ledger check, so a restore
does not load it (its start is part of every restore's time)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import akoshad.restore.readback
print(json.dumps([m for m in ("akoshad.store.db", "akoshad.store.records", "sqlite3")
                  if m in sys.modules]))
"""


def test_restore_leaves_the_state_database_unimported() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout) == []
