#!/usr/bin/env python3
"""What the format-2 uploader sends, against what format 1 (one gzip object per changed
file) would send, on the local target, in process (the real drain, uploader and state).

1. A store built by ``../shared/tools/make_store.py`` (``--conversations``, default 6000: a
   ~60 MiB ``reflection.duckdb``): the first upload, then a session-buddy-like change (20
   rows committed on a connection, then ``CHECKPOINT``) and the upload after it. Format 1 is
   the ISA-L gzip size (akoshad's level) of every file sent whole.
2. ``--small`` (default 2000) small JSON files: the PUTs of the first upload (format 1: one
   per file plus the manifest).

    python bench/f2_writer_bench.py
    python bench/f2_writer_bench.py --conversations 600 --small 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sessions_bench import Writer, build_store, default_maker, load_maker  # noqa: E402

from akoshad.compress import encoded_chunks  # noqa: E402
from akoshad.config import load_settings  # noqa: E402
from tests.f2_rig import CountingTarget, Rig, close_rig, open_rig  # noqa: E402

MiB = 1024 * 1024


def gzip_size(path: Path) -> int:
    """The bytes format 1 stores (and sends) for ``path``: one gzip object."""
    return sum(len(piece) for piece in encoded_chunks(path, "gzip"))


async def rig_for(work: Path, store: Path) -> Rig:
    settings = load_settings(
        None,
        overrides={
            "data_dir": str(store),
            "state_dir": str(work / "state"),
            "local_target_dir": str(work / "outbox"),
            "cloud_sync": {"system_id": "bench"},
        },
        environ={"HOME": str(work)},
    )
    return await open_rig(settings, CountingTarget(work / "outbox"), work / "state" / "state.db")


async def sync(rig: Rig) -> tuple[int, int, float, list[str]]:
    """(bytes sent, PUTs, seconds, files sent) of the uploads one sync makes."""
    assert isinstance(rig.target, CountingTarget)
    rig.target.puts.clear()
    t0 = time.monotonic()
    reports = await rig.sync()
    seconds = time.monotonic() - t0
    sent = [p for r in reports for p in r.files_uploaded]
    return sum(r.bytes_sent for r in reports), len(rig.target.puts), seconds, sent


async def duckdb_case(work: Path, conversations: int) -> None:
    maker_path = default_maker()
    store = work / "store"
    build_store(maker_path, store, conversations)
    db = store / "reflection.duckdb"
    print(f"store: reflection.duckdb {db.stat().st_size / MiB:.1f} MiB")
    rig = await rig_for(work, store)
    try:
        f1_first = sum(gzip_size(p) for p in store.rglob("*") if p.is_file())
        sent, puts, secs, _ = await sync(rig)
        print(
            f"first upload : format 2 {sent / MiB:7.2f} MiB in {puts} PUT(s), {secs:.2f} s; "
            f"format 1 {f1_first / MiB:7.2f} MiB in {len(list(store.rglob('*.*'))) + 1} PUT(s)"
        )
        writer = Writer(load_maker(maker_path), db)
        writer.commit(1)
        writer.checkpoint()
        writer.close()
        sent, puts, secs, files = await sync(rig)
        f1 = sum(gzip_size(store / p) for p in files)
        print(
            f"20 rows + CHECKPOINT: format 2 {sent / MiB:7.2f} MiB in {puts} PUT(s), "
            f"{secs:.2f} s; format 1 {f1 / MiB:7.2f} MiB ({', '.join(files)})"
        )
    finally:
        await close_rig(rig)


async def small_case(work: Path, count: int) -> None:
    store = work / "small"
    for i in range(count):
        p = store / "notes" / f"n{i:05d}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f'{{"note": {i}, "text": "{"x" * (i % 500)}"}}')
    rig = await rig_for(work / "s", store)
    try:
        sent, puts, secs, files = await sync(rig)
        print(
            f"{count} small files: format 2 {puts} PUT(s), {sent / 1024:.0f} KiB, {secs:.2f} s; "
            f"format 1 {len(files) + 1} PUT(s)"
        )
        (store / "notes" / "n00007.json").write_text('{"changed": true}')
        sent, puts, secs, files = await sync(rig)
        print(f"one of them changed: format 2 {puts} PUT(s), {sent / 1024:.1f} KiB")
    finally:
        await close_rig(rig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=6000)
    ap.add_argument("--small", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="f2bench-") as tmp:
        work = Path(tmp)
        asyncio.run(duckdb_case(work / "d", args.conversations))
        asyncio.run(small_case(work / "m", args.small))


if __name__ == "__main__":
    main()
