"""Prune of many tiny format-1 uploads on the local target: prints the figures.

    PYTHONPATH=. python bench/prune_bench.py [--uploads 1000] [--every-minutes 20]

Builds N uploads (one changed ``a.json`` each, a ``b.db`` changed every 10th upload, the
others pointing at the last stored one) directly as files in a temporary outbox (the layout
``LocalTarget`` reads), then prunes them with the default retention and with ``keep_last 10``
(each on a fresh copy), timing load (list + heads + manifests) and the whole prune.
Goal: a prune of 1,000 uploads in <= 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from akoshad.manifest.layout import FileEntry, build_manifest, encode_manifest, new_upload_id
from akoshad.storage.prune_exec import run_prune
from akoshad.storage.prune_load import load_for_prune
from akoshad.storage.retention import Retention
from akoshad.targets.local import LocalTarget

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
        f"freed {result.bytes_freed} B"
    )
    t0 = time.perf_counter()
    again = await run_prune(target, SYSTEM_ID, policy, staging_dir=staging, now=now, dry_run=True)
    print(
        f"  then a prune with nothing to do: {time.perf_counter() - t0:.2f} s "
        f"({again.objects_deleted} to delete)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--every-minutes", type=float, default=20.0)
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="akoshad-prune-bench-") as tmp:
        work = Path(tmp)
        src = work / "src"
        t0 = time.perf_counter()
        objects = build(src, args.uploads, timedelta(minutes=args.every_minutes), now)
        print(
            f"built {args.uploads} uploads ({objects} objects) in {time.perf_counter() - t0:.2f} s"
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


if __name__ == "__main__":
    main()
