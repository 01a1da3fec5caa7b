"""Child process: keep a DuckDB database open read-write and commit a row every interval.

Logs ``committed <id>`` after each commit returns, ``error <msg>`` on any failure (a lock
error caused by a reader would show up here). Exits cleanly on SIGTERM.
"""

import signal
import sys
import time

import duckdb

db, interval, log_path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
stop = False


def on_term(*_: object) -> None:
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
con = duckdb.connect(db)
con.execute("CREATE TABLE IF NOT EXISTS live_rows (id TEXT PRIMARY KEY, payload TEXT)")
log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
print("ready", flush=True)
n = 0
while not stop:
    rid = f"live-{n}"
    try:
        con.execute("INSERT INTO live_rows VALUES (?, ?)", [rid, "p" * 500])
        log.write(f"committed {rid}\n")
    except Exception as exc:
        log.write(f"error {type(exc).__name__}: {exc}\n")
    n += 1
    time.sleep(interval)
con.close()
log.close()
