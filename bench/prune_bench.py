"""Prune on the local target: many uploads, then the time of a prune, and (format 2) what
the bucket holds over simulated days with the default retention. Prints the figures.

    python bench/prune_bench.py [--uploads 1000] [--every-minutes 20]        # format 1
    python bench/prune_bench.py --format 2 [--uploads 1000]                  # format 2
    python bench/prune_bench.py --format 2 --days 30 [--every-minutes 30]    # storage

Format 1: N uploads (one changed ``a.json`` each, a ``b.db`` changed every 10th upload, the
others pointing at the last stored one), built directly as files in a temporary outbox (the
layout ``LocalTarget`` reads). Format 2: N uploads as the format-2 writer makes them (see
``bench/prune_f2.py``): a ``reflection.duckdb`` of ``--db-chunks`` chunks of which
``--churn`` change per upload, and ``--small-files`` one-chunk files (past 200 entries the
manifest has index parts) of which 3 change per upload; each upload's new chunks go in one
pack. Both are pruned with the default retention and with ``keep_last 10`` (each on a fresh
copy), timing load (list + manifests) and the whole prune. Goal: a prune of 1,000 uploads
in <= 60 s.

``--s3``: the uploads are copied into a SeaweedFS bucket (started here), and the prune runs
there, after a dry run that lists sizes with a HEAD per key (as prunes did before the
listing gave sizes and times) beside one that takes them from the listing: the two load
times and their ratio are printed.

``--days D`` (format 2): uploads every ``--every-minutes`` during work hours (9:00-18:00,
Monday to Friday) for D simulated days, and the real ``run_prune`` with the default
retention every ``prune_interval_hours`` of simulated time (repacks included); printed per
simulated day: uploads made and kept, bytes stored in the target, bytes the kept uploads
reference, their ratio (the 1.2x bound), and the bytes all uploads ever added.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from prune_f2 import MiB, Store, simulate_days, work_times  # noqa: E402

from akoshad.manifest.layout import (  # noqa: E402
    FileEntry,
    build_manifest,
    encode_manifest,
    new_upload_id,
)
from akoshad.storage.prune_exec import run_prune  # noqa: E402
from akoshad.storage.prune_load import load_for_prune  # noqa: E402
from akoshad.storage.prune_result import PruneResult  # noqa: E402
from akoshad.storage.retention import Retention  # noqa: E402
from akoshad.targets.local import LocalTarget  # noqa: E402
from tests.prune_data import Undated  # noqa: E402
from tests.s3server import WeedServer  # noqa: E402

SYSTEM_ID = "bench"


def build(root: Path, uploads: int, every: timedelta, now: datetime) -> int:
    """Write ``uploads`` uploads under ``root``; returns the number of objects."""
    base = root / "systems" / SYSTEM_ID / "uploads"
    shared: FileEntry | None = None
    objects = 0
    for i in range(uploads):
        when = now - every * (uploads - i)
        upload_id = new_upload_id(when)
        folder = base / upload_id
        folder.mkdir(parents=True, mode=0o700)
        entries: list[FileEntry] = []
        files = {"a.json": f'{{"n": {i}}}'.encode()}
        if shared is None or i % 10 == 0:
            files["b.db"] = hashlib.sha256(str(i).encode()).digest() * 64
        for name, data in files.items():
            stored = gzip.compress(data, mtime=0)
            (folder / f"{name}.gz").write_bytes(stored)
            key = f"systems/{SYSTEM_ID}/uploads/{upload_id}/{name}.gz"
            sha = hashlib.sha256(data).hexdigest()
            entry = FileEntry(name, f"{name}.gz", key, len(data), sha, len(stored), "gzip", "file")
            entries.append(entry)
            if name == "b.db":
                shared = entry
            objects += 1
        if "b.db" not in files and shared is not None:
            entries.append(shared)
        manifest = build_manifest(
            system_id=SYSTEM_ID, upload_id=upload_id, entries=entries, skipped={}, uploaded_at=when
        )
        (folder / "manifest.json").write_bytes(encode_manifest(manifest))
        objects += 1
    return objects


async def prune_once(root: Path, staging: Path, policy: Retention, now: datetime) -> None:
    target = LocalTarget(root)
    await target.start()
    t0 = time.perf_counter()
    loaded = await load_for_prune(target, SYSTEM_ID)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = await run_prune(target, SYSTEM_ID, policy, staging_dir=staging, now=now)
    t_all = time.perf_counter() - t0
    print(
        f"  {policy.describe()}: load {t_load:.2f} s ({len(loaded.listing)} objects), "
        f"prune {t_all:.2f} s: removed {len(result.uploads_removed)}, kept "
        f"{result.uploads_kept}, deleted {result.objects_deleted} objects, "
        f"freed {result.bytes_freed / MiB:.1f} MiB, repacked {result.packs_repacked} pack(s) "
        f"into {result.packs_written}, rewrote {result.manifests_rewritten} manifest(s); "
        f"stored after {result.bytes_stored_after / MiB:.1f} MiB for "
        f"{result.bytes_referenced / MiB:.1f} MiB referenced"
    )
    t0 = time.perf_counter()
    again = await run_prune(target, SYSTEM_ID, policy, staging_dir=staging, now=now, dry_run=True)
    print(
        f"  then a prune with nothing to do: {time.perf_counter() - t0:.2f} s "
        f"({again.objects_deleted} to delete)"
    )


async def prune_s3(
    src: Path, s3: WeedServer, staging: Path, policy: Retention, now: datetime
) -> None:
    """Copy the uploads under ``src`` into the bucket, then: the load with a HEAD per key
    against the load from the listing (a dry run each), and the prune itself."""
    target = s3.s3_target(SYSTEM_ID)
    await target.start()
    try:
        files = await asyncio.to_thread(lambda: sorted(p for p in src.rglob("*") if p.is_file()))
        sem = asyncio.Semaphore(16)

        async def put(path: Path) -> None:
            async with sem:
                await target.put_bytes(
                    path.relative_to(src).as_posix(),
                    await asyncio.to_thread(path.read_bytes),
                    "application/octet-stream",
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(put(p) for p in files))
        print(f"  copied {len(files)} objects into the bucket in {time.perf_counter() - t0:.1f} s")
        dry = {}
        for name, where in (("HEAD per key", Undated(target)), ("listing", target)):
            t0 = time.perf_counter()
            await run_prune(where, SYSTEM_ID, policy, staging_dir=staging, now=now, dry_run=True)  # type: ignore[arg-type]
            dry[name] = time.perf_counter() - t0
        print(
            f"  dry run: sizes by a HEAD per key {dry['HEAD per key']:.2f} s, sizes and times "
            f"from the listing {dry['listing']:.2f} s "
            f"({dry['HEAD per key'] / dry['listing']:.1f}x)"
        )
        t0 = time.perf_counter()
        result = await run_prune(target, SYSTEM_ID, policy, staging_dir=staging, now=now)
        print(
            f"  {policy.describe()} on S3: prune {time.perf_counter() - t0:.2f} s: removed "
            f"{len(result.uploads_removed)}, deleted {result.objects_deleted} objects, "
            f"repacked {result.packs_repacked} pack(s)"
        )
        keys = [k async for k in target.list_keys(f"systems/{SYSTEM_ID}/")]
        await target.delete_keys(keys)
    finally:
        await target.close()


def build_f2(src: Path, args: argparse.Namespace, now: datetime) -> int:
    """Format-2 uploads, one every ``--every-minutes`` up to ``now``; the objects made."""
    store = Store(src, SYSTEM_ID, args.db_chunks, args.chunk_kib * 1024, args.small_files)
    every = timedelta(minutes=args.every_minutes)
    for i in range(args.uploads):
        store.change(args.churn)
        store.upload(now - every * (args.uploads - i))
    return sum(1 for p in src.rglob("*") if p.is_file())


def days_f2(work: Path, args: argparse.Namespace) -> None:
    """Simulated days of uploads with the default retention, pruned as the daemon does."""
    store = Store(work / "days", SYSTEM_ID, args.db_chunks, args.chunk_kib * 1024, 0)
    start = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
    times = work_times(start, args.days, timedelta(minutes=args.every_minutes))
    policy = Retention()
    print(
        f"{len(times)} uploads over {args.days} days ({policy.describe()}, prune every "
        f"{policy.prune_interval_hours:g} h); each changes {args.churn} of {args.db_chunks} "
        f"chunks of {args.chunk_kib} KiB"
    )
    print(
        "| day | uploads made | kept | stored MiB | referenced MiB | stored/referenced "
        "| all uploads ever added MiB | prune s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def report(when: datetime, made: int, result: PruneResult, stored: int) -> None:
        ref = max(result.bytes_referenced, 1)
        print(
            f"| {when:%a %m-%d} | {made} | {result.uploads_kept} | {stored / MiB:.1f} "
            f"| {result.bytes_referenced / MiB:.1f} | {stored / ref:.2f} "
            f"| {store.added / MiB:.1f} | {result.seconds:.2f} |",
            flush=True,
        )

    asyncio.run(simulate_days(store, times, args.churn, policy, report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--format", type=int, choices=(1, 2), default=1)
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--every-minutes", type=float, default=None, help="20 (30 with --days)")
    parser.add_argument("--days", type=int, default=0, help="format 2: simulate D days")
    parser.add_argument("--db-chunks", type=int, default=128, help="format 2: chunks of the db")
    parser.add_argument("--chunk-kib", type=int, default=256, help="format 2: chunk size")
    parser.add_argument("--churn", type=int, default=2, help="format 2: chunks changed/upload")
    parser.add_argument("--small-files", type=int, default=300, help="format 2: small files")
    parser.add_argument("--s3", action="store_true", help="prune in a SeaweedFS bucket too")
    args = parser.parse_args()
    if args.every_minutes is None:
        args.every_minutes = 30.0 if args.days else 20.0
    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="akoshad-prune-bench-") as tmp:
        work = Path(tmp)
        if args.days:
            days_f2(work, args)
            return
        src = work / "src"
        t0 = time.perf_counter()
        if args.format == 1:
            objects = build(src, args.uploads, timedelta(minutes=args.every_minutes), now)
        else:
            objects = build_f2(src, args, now)
        print(
            f"built {args.uploads} format-{args.format} uploads ({objects} objects, "
            f"{sum(p.stat().st_size for p in src.rglob('*') if p.is_file()) / MiB:.0f} MiB) "
            f"in {time.perf_counter() - t0:.2f} s"
        )
        staging = work / "staging"
        staging.mkdir(mode=0o700)
        policies = [
            Retention(),
            Retention(keep_last=10, keep_hourly=0, keep_daily=0, keep_weekly=0),
        ]
        for policy in policies:
            root = work / "outbox"
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(src, root)
            asyncio.run(prune_once(root, staging, policy, now))
        if args.s3:
            s3 = WeedServer(work / "weed", volume_size_mb=1024)
            s3.start()
            try:
                for policy in policies:
                    asyncio.run(prune_s3(src, s3, staging, policy, now))
            finally:
                s3.stop()


if __name__ == "__main__":
    main()
