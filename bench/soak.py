#!/usr/bin/env python3
"""Soak: run the daemon for a while under a steady trickle of changes, then idle.

Prints RSS, open descriptors, CPU and queue depth over time, and the idle CPU once the
changes stop. Targets: no growth in RSS or descriptors; idle CPU under 0.5% of a core.

    python bench/soak.py --minutes 30 --idle-minutes 3

``--idle-rss`` measures the resident footprint instead: a daemon with a bucket (a real
SeaweedFS server) and an ``akosha_url`` (the fake Akosha) starts on a small store, does its
first pass (snapshot, memories to Akosha, upload with memories.json) and idles; its VmRSS
30 s after start is printed, whether duckdb is mapped into the daemon, and the VmRSS of its
children then (the long-lived DuckDB worker, alive until it has been idle 60 s)::

    python bench/soak.py --idle-rss [--after 30] [--conversations 20]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.storegen import make_store


def queue_depth(state: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM queue").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def vm_rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` (from /proc/PID/status) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def maps_duckdb(pid: int) -> bool:
    """Is duckdb's native library mapped into ``pid``?"""
    return "duckdb" in Path(f"/proc/{pid}/maps").read_text()


def rss_by_mapping(pid: int, top: int = 12) -> list[tuple[str, float]]:
    """The ``top`` largest resident parts of ``pid`` (by mapped file; ``[anon]`` for heap
    and anonymous memory), in MiB, from /proc/PID/smaps."""
    sizes: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = Path(head[5]).name if len(head) >= 6 and head[5].startswith("/") else "[anon]"
        elif head and head[0] == "Rss:":
            sizes[name] = sizes.get(name, 0) + int(head[1])
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return [(k, v / 1024) for k, v in ranked]


def children_of(pid: int) -> list[tuple[int, str]]:
    """The child processes of ``pid``: (pid, the module or command it runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            what = next((a.decode() for a in argv if a.startswith(b"akoshad.")), argv[0].decode())
            found.append((int(entry.name), what))
    return found


def idle_rss(after: float, conversations: int, maps: bool = False) -> int:
    """Start a daemon with S3 and Akosha configured; print its VmRSS ``after`` s later."""
    from tests.akosha_fixtures import AkoshaServer
    from tests.s3server import WeedServer

    work = Path(tempfile.mkdtemp(prefix="akoshad-rss-"))
    weed = WeedServer(work / "weed")
    akosha = AkoshaServer(work / "akosha")
    weed.start()
    akosha.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        store, state = work / "store", work / "state"
        make_store(store, conversations=conversations)
        system_id = f"rss{uuid.uuid4().hex[:8]}"
        cfg = work / "config.yaml"
        config = {
            "data_dir": str(store),
            "state_dir": str(state),
            "local_target_dir": str(work / "outbox"),
            "socket_path": str(work / "s.sock"),
            "akosha_url": akosha.url,
            "log_level": "INFO",
            "cloud_sync": weed.cloud_sync(system_id),
        }
        cfg.write_text(json.dumps(config))
        with (work / "daemon.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "akoshad", "run", "--config", str(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        t0 = time.monotonic()
        while time.monotonic() - t0 < after:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited {proc.returncode}; see {work}/daemon.log")
            time.sleep(0.5)
        rss = vm_rss_mib(proc.pid)
        duck = maps_duckdb(proc.pid)
        children = children_of(proc.pid)
        uploads = [k for k in weed.keys(f"systems/{system_id}/") if k.endswith("manifest.json")]
        delivered = len(akosha.state()["stored"])
        print(f"idle VmRSS {after:.0f} s after start: {rss:.1f} MiB")
        print(f"duckdb mapped in the daemon: {'yes' if duck else 'no'}")
        for pid, what in children:  # the long-lived DuckDB worker, while it is alive
            print(f"child {pid} ({what}): VmRSS {vm_rss_mib(pid):.1f} MiB")
        print(f"first pass: {len(uploads)} upload(s) in the bucket, {delivered} memories in Akosha")
        if maps:
            for what, mib in rss_by_mapping(proc.pid):
                print(f"  {mib:6.1f} MiB  {what}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        akosha.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="trickle duration")
    ap.add_argument("--idle-minutes", type=float, default=3.0, help="idle measurement")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between changes")
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--idle-rss", action="store_true", help="only the idle footprint (S3+Akosha)")
    ap.add_argument("--after", type=float, default=30.0, help="--idle-rss: seconds after start")
    ap.add_argument("--conversations", type=int, default=20, help="--idle-rss: store size")
    ap.add_argument("--maps", action="store_true", help="--idle-rss: largest resident parts")
    args = ap.parse_args()
    if args.idle_rss:
        return idle_rss(args.after, args.conversations, args.maps)

    work = Path(tempfile.mkdtemp(prefix="akoshad-soak-"))
    store, state, outbox = work / "store", work / "state", work / "outbox"
    make_store(store)
    cfg = work / "config.yaml"
    cfg.write_text(
        json.dumps(
            {
                "data_dir": str(store),
                "state_dir": str(state),
                "local_target_dir": str(outbox),
                "socket_path": str(work / "s.sock"),
                "debounce_seconds": 1,
                "max_delay_seconds": 10,
                "log_level": "WARNING",
                "cloud_sync": {"system_id": "soak"},
            }
        )
    )
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    ps = psutil.Process(proc.pid)
    rng = random.Random(1)
    print(f"soak in {work}; daemon pid {proc.pid}")
    print(f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>5} {'CPU %':>6} {'queue':>6} {'uploads':>8}")
    rows = []
    t0 = time.monotonic()
    last_cpu = ps.cpu_times()
    last_t = t0
    next_sample = t0 + 5
    end_trickle = t0 + args.minutes * 60
    n = 0
    try:
        while time.monotonic() < end_trickle:
            n += 1
            target = store / "sessions" / f"session-{n % 3}" / "state.json"
            target.write_text(json.dumps({"n": n, "pad": "x" * rng.randint(0, 4000)}))
            if n % 10 == 0:
                (store / "akosha_sync_state.json").write_text(json.dumps({"n": n}))
            time.sleep(args.interval)
            if time.monotonic() >= next_sample:
                now = time.monotonic()
                cpu = ps.cpu_times()
                pct = (
                    100
                    * ((cpu.user + cpu.system) - (last_cpu.user + last_cpu.system))
                    / (now - last_t)
                )
                last_cpu, last_t = cpu, now
                uploads = len(list((outbox / "systems" / "soak" / "uploads").glob("*")))
                row = (
                    now - t0,
                    ps.memory_info().rss / 2**20,
                    ps.num_fds(),
                    pct,
                    queue_depth(state),
                    uploads,
                )
                rows.append(row)
                print(
                    f"{row[0]:7.0f} {row[1]:8.1f} {row[2]:5d} {row[3]:6.2f} {row[4]:6d} "
                    f"{row[5]:8d}",
                    flush=True,
                )
                next_sample = now + args.sample
        time.sleep(15)  # let the last changes drain
        cpu0, t_idle = ps.cpu_times(), time.monotonic()
        time.sleep(args.idle_minutes * 60)
        cpu1 = ps.cpu_times()
        idle = (
            100
            * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))
            / (time.monotonic() - t_idle)
        )
        rss_end, fds_end = ps.memory_info().rss / 2**20, ps.num_fds()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    first = rows[len(rows) // 4] if rows else (0, rss_end, fds_end, 0, 0, 0)
    print()
    print(f"changes made: {n}; samples: {len(rows)}")
    print(f"RSS: {first[1]:.1f} MiB after warm-up -> {rss_end:.1f} MiB at the end")
    print(f"descriptors: {first[2]} after warm-up -> {fds_end} at the end")
    print(f"idle CPU over {args.idle_minutes:.1f} min: {idle:.3f}% of a core (target < 0.5%)")
    print(f"final queue depth: {queue_depth(state)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
