"""Child process: keeps changing a store like a busy session-buddy until SIGTERM.

DuckDB commits into reflection.duckdb (held open read-write, as the real server does),
in-place JSON rewrites, new files created and old ones deleted.
"""

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import duckdb

root = Path(sys.argv[1])
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
rng = random.Random(seed)
stop = False


def on_term(*_: object) -> None:
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
con = duckdb.connect(str(root / "reflection.duckdb"))
con.execute("CREATE TABLE IF NOT EXISTS churn (id INTEGER, payload TEXT)")
notes = root / "notes"
notes.mkdir(exist_ok=True)
print("ready", flush=True)
n = 0
while not stop:
    n += 1
    con.execute("INSERT INTO churn VALUES (?, ?)", [n, "c" * rng.randint(10, 2000)])
    state = root / "sessions" / "session-0" / "state.json"
    with state.open("w") as fh:  # written in place, not atomically, like session-buddy
        json.dump({"n": n, "pad": "x" * rng.randint(0, 5000)}, fh)
    if n % 3 == 0:
        (notes / f"note-{n}.json").write_text(json.dumps({"n": n}))
    if n % 5 == 0:
        existing = sorted(notes.iterdir())
        if len(existing) > 4:
            os.unlink(existing[0])
    time.sleep(rng.uniform(0.01, 0.08))
con.close()
