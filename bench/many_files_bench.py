"""Peak memory of akoshad on a store of many small files (the service unit's MemoryMax=512M).

    python bench/many_files_bench.py --files 100000 [--files 200000] [--work DIR]

Per store size: a store of N small JSON files (500 a directory under ``sessions/``), the
local outbox, fresh state; then the peak RSS (VmHWM of the process; ``run --once`` and the
CLI commands by ``/usr/bin/time``'s way: ``ru_maxrss`` of the child) of: the first upload
(``run --once``), a one-file ``run --once``, the daemon's start (until its watch is up and
its catch-up done), a one-file pass of the daemon, then ``uploads``, ``verify``,
``restore --latest`` and ``prune --dry-run``; last, the daemon's first upload of the whole
store from a fresh state (its passes claim up to 100,000 files each while the store is at
most 100,000 files, else 25,000: ``queue.CLAIM_ALL``, ``CLAIM_BATCH``). Prints one line each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_store(root: Path, n: int) -> None:
    rng = random.Random(1)
    for i in range(n):
        d = root / "sessions" / f"s{i // 500:04d}"
        if i % 500 == 0:
            d.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"id": i, "v": "x" * rng.randint(20, 300)}) + "\n"
        (d / f"state-{i:07d}.json").write_text(body)


def config(work: Path) -> Path:
    path = work / "config.yaml"
    path.write_text(
        f"data_dir: {work / 'store'}\nstate_dir: {work / 'state'}\n"
        f"socket_path: {work / 's.sock'}\nlocal_target_dir: {work / 'out'}\n"
        "debounce_seconds: 0.3\nmin_upload_interval_seconds: 0\ndrill_interval_hours: 0\n"
    )
    return path


def cli(cfg: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one CLI command, a child of its own."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.chdir(REPO)
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.execv(sys.executable, [sys.executable, "-m", "akoshad", "--config", str(cfg), *args])
    _, _, usage = os.wait4(pid, 0)
    return time.monotonic() - t0, usage.ru_maxrss / 1024


def hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def files_sent(log: Path) -> int:
    total = 0
    for line in log.read_text(errors="replace").splitlines():
        if " to local: " in line and "file(s) sent" in line:
            total += int(line.split(" to local: ")[1].split()[0])
    return total


def daemon(cfg: Path, work: Path, until: int, touch: Path | None) -> tuple[float, float]:
    """Peak RSS (MiB) at the daemon's start (its watch up, 5 s more for the catch-up) and
    after ``until`` files sent (having touched ``touch`` once it started)."""
    log = work / "d.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "akoshad", "--config", str(cfg), "run"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        while "watching" not in log.read_text(errors="replace"):
            time.sleep(0.5)
        time.sleep(5)
        start = hwm(proc.pid)
        if touch is not None:
            with touch.open("a") as f:
                f.write("x\n")
        while files_sent(log) < until:
            time.sleep(0.5)
        return start, hwm(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def bench(n: int, parent: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"many{n}-", dir=parent))
    try:
        make_store(work / "store", n)
        cfg = config(work)
        one = work / "store" / "sessions" / "s0001" / "state-0000600.json"
        wall, rss = cli(cfg, "run", "--once")
        print(f"{n} files: first upload (run --once) {rss:.0f} MiB, {wall:.1f} s", flush=True)
        one.write_text('{"changed": 1}\n')
        wall, rss = cli(cfg, "run", "--once")
        print(f"{n} files: 1-file run --once {rss:.0f} MiB, {wall:.1f} s", flush=True)
        start, pass1 = daemon(cfg, work, 1, one)
        print(f"{n} files: daemon start {start:.0f} MiB, 1-file pass {pass1:.0f} MiB", flush=True)
        for args in (("uploads",), ("verify",), ("prune", "--dry-run")):
            wall, rss = cli(cfg, *args)
            print(f"{n} files: {' '.join(args)} {rss:.0f} MiB, {wall:.1f} s", flush=True)
        wall, rss = cli(cfg, "restore", "--latest", "--dest", str(work / "restored"))
        print(f"{n} files: restore --latest {rss:.0f} MiB, {wall:.1f} s", flush=True)
        shutil.rmtree(work / "state")
        shutil.rmtree(work / "out")
        _, first = daemon(cfg, work, n, None)
        print(f"{n} files: daemon first upload {first:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, action="append", help="store size (repeatable)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    for n in args.files or [100_000]:
        bench(n, args.work)


if __name__ == "__main__":
    main()
