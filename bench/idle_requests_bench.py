#!/usr/bin/env python3
"""What a running daemon asks of its bucket over time: the requests of ``akoshad run`` on a
small store (the suite's store generator) against a SeaweedFS the bench starts, counted by
kind through a proxy, in three phases:

1. start: from the daemon's start until its first upload landed and ``--start-wait``
   seconds passed (the first restore drill runs 60 s after a first start);
2. idle: ``--minutes`` with nothing changed (then per hour and per day, extrapolated:
   the daily drill and the prunes are counted in phase 1, not here);
3. busy: one small JSON file rewritten every ``--every`` seconds for ``--minutes``
   (``min_upload_interval_seconds`` at its default, 30): requests per upload.

    python bench/idle_requests_bench.py
    python bench/idle_requests_bench.py --minutes 10 --every 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import request_kinds, tap_proxy, tool_env  # noqa: E402
from sessions_bench import Daemon  # noqa: E402

from tests.s3server import WeedServer  # noqa: E402
from tests.storegen import make_store  # noqa: E402


def phase(name: str, lines: list[str], seconds: float, uploads: int | None = None) -> None:
    n = len(lines)
    rate = f"{n / seconds * 3600:.0f}/hour, {n / seconds * 86400:.0f}/day"
    per = f", {n / uploads:.1f} per upload ({uploads} uploads)" if uploads else ""
    print(f"{name:6} {seconds:6.0f} s: {n:5d} requests ({rate}{per})")
    if lines:
        print(f"         {request_kinds(lines)}")


def uploads_in(lines: list[str]) -> int:
    """Manifests PUT: the uploads made."""
    return sum(1 for line in lines if line.startswith("PUT ") and "/manifest.json" in line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="of each of phases 2 and 3")
    ap.add_argument("--every", type=float, default=15.0, help="seconds between changes")
    ap.add_argument("--start-wait", type=float, default=90.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="akoshad-idle-") as tmp:
        work = Path(tmp)
        server = WeedServer(work / "weed")
        server.start()
        proxy = tap_proxy(server.s3_port).start()
        daemon = Daemon(work / "akoshad.sock", work / "daemon.log")
        try:
            store = work / "store"
            make_store(store)
            endpoint = f"http://127.0.0.1:{proxy.port}"
            config = {
                "data_dir": str(store),
                "state_dir": str(work / "state"),
                "socket_path": str(daemon.socket),
                "log_level": "INFO",
                "cloud_sync": {**server.cloud_sync("bench-idle"), "cloud_endpoint": endpoint},
            }
            (work / "akoshad.yaml").write_text(json.dumps(config))
            env = tool_env(server.access_key, server.secret_key, endpoint, work)
            cmd = [sys.executable, "-m", "akoshad", "run", "--config", str(work / "akoshad.yaml")]
            proxy.reset()
            began = time.monotonic()
            daemon.start(cmd, env)
            ok, _, _ = daemon.wait_upload()
            if not ok:
                raise SystemExit(f"no first upload; see {daemon.log}")
            time.sleep(max(0.0, args.start_wait - (time.monotonic() - began)))
            phase("start", list(proxy.lines), time.monotonic() - began)
            window = args.minutes * 60
            proxy.reset()
            time.sleep(window)
            phase("idle", list(proxy.lines), window)
            proxy.reset()
            began = time.monotonic()
            target = store / "akosha_sync_state.json"
            n = 0
            while time.monotonic() - began < window:
                n += 1
                target.write_text(json.dumps({"change": n, "at": time.time()}))
                time.sleep(args.every)
            time.sleep(35)  # the last change's upload (min_upload_interval_seconds: 30)
            lines = list(proxy.lines)
            phase("busy", lines, time.monotonic() - began, uploads_in(lines))
            print(f"{n} changes, one every {args.every:.0f} s")
        finally:
            daemon.stop()
            proxy.stop()
            server.stop()


if __name__ == "__main__":
    main()
