#!/usr/bin/env python3
"""Restore drill cost: how long the daemon's drill of a realistic store takes, and the
resident memory of the daemon (and of its check worker) while it runs.

Builds the store with /work/shared/tools/make_store.py when present (else tests/storegen),
uploads it with a daemon to a local target, lets the daemon drill it by itself
(``drill_interval_hours`` tiny), samples RSS every 20 ms, prints one JSON object per run.

    python bench/drill_bench.py                   # the default rate cap (20 MB/s) and none
    python bench/drill_bench.py --mbps 20 --mbps 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_STORE = Path("/work/shared/tools/make_store.py")


def build_store(store: Path) -> str:
    if SHARED_STORE.is_file():
        subprocess.run(
            [sys.executable, str(SHARED_STORE), "--root", str(store)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return "make_store.py (defaults)"
    from tests.storegen import make_store

    make_store(store, conversations=2000)
    return "tests/storegen.make_store(conversations=2000)"


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def last_drill(cfg: Path, env: dict[str, str]) -> dict[str, Any] | None:
    out = subprocess.run(
        [sys.executable, "-m", "akoshad", "status", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if out.returncode != 0:
        return None
    value = json.loads(out.stdout).get("last_drill")
    return value if isinstance(value, dict) else None


def rss(proc: psutil.Process) -> tuple[int, int]:
    """(daemon RSS, largest child RSS) in bytes."""
    try:
        own = proc.memory_info().rss
        kids = [c.memory_info().rss for c in proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    return own, max(kids, default=0)


def run(work: Path, store: Path, mbps: float) -> dict[str, Any]:
    state, outbox = work / f"state-{mbps:g}", work / f"outbox-{mbps:g}"
    cfg = work / f"c-{mbps:g}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(store),
                "state_dir": str(state),
                "local_target_dir": str(outbox),
                "socket_path": str(work / f"s-{mbps:g}.sock"),
                "drill_interval_hours": 0.002,  # 7.2 s
                "drill_max_mbps": mbps,
                "log_level": "INFO",
                "cloud_sync": {"system_id": "bench"},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "XDG_"))}
    env["HOME"] = str(work)
    log = (work / f"d-{mbps:g}.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    proc = psutil.Process(daemon.pid)
    idle: list[int] = []
    during: list[tuple[int, int]] = []
    result = None
    deadline = time.monotonic() + 600
    try:
        next_poll = 0.0
        while time.monotonic() < deadline:
            drilling = any(state.glob("drill-*")) if state.is_dir() else False
            sample = rss(proc)
            (during.append(sample) if drilling else idle.append(sample[0]))
            if time.monotonic() >= next_poll and not drilling:
                result = last_drill(cfg, env)
                if result is not None:
                    break
                next_poll = time.monotonic() + 0.5
            time.sleep(0.02)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        log.close()
    if result is None:
        raise SystemExit(f"no drill within the deadline; see {work}")
    stored = tree_bytes(outbox / "systems")
    return {
        "drill_max_mbps": mbps,
        "ok": result["ok"],
        "files": result["files"],
        "restored_bytes": result["bytes"],
        "stored_bytes": stored,
        "drill_seconds": result["seconds"],
        "daemon_rss_mib_before": round(max(idle[-50:], default=0) / 2**20, 1),
        "daemon_rss_mib_peak_during": round(max((d for d, _ in during), default=0) / 2**20, 1),
        "worker_rss_mib_peak": round(max((w for _, w in during), default=0) / 2**20, 1),
        "samples_during": len(during),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbps", type=float, action="append", help="drill_max_mbps (repeatable)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="akoshad-drill-bench-"))
    try:
        store = work / "store"
        how = build_store(store)
        print(json.dumps({"store": how, "store_bytes": tree_bytes(store)}), flush=True)
        for mbps in args.mbps or [20.0, 100000.0]:
            print(json.dumps(run(work, store, mbps)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
