"""What a prune holds in memory beyond the target's uploads: it loaded the whole ledger
(every file's row, ~1 KB each on a large store) to learn which whole objects of format-1
uploads the next upload points at; it now reads only those keys."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

from akoshad.targets.local import LocalTarget
from tests.f2_rig import Rig, close_rig, open_rig
from tests.integration.test_format2_writer import SID, local_settings
from tests.integration.test_prune_counts import _two_uploads

ROWS = 40_000


async def test_a_prune_does_not_load_the_whole_ledger(tmp_path: Path) -> None:
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target

    settings, rig = await _two_uploads(tmp_path)
    try:
        cols = (
            "target, path, group_path, size, live_size, mtime_ns, ctime_ns, inode, sha256, "
            "key, name, stored_size, compression, kind, upload_id, chunks"
        )
        rows = [
            (
                "local",
                f"sessions/s{i // 500:04d}/state-{i:07d}.json",
                f"sessions/s{i // 500:04d}/state-{i:07d}.json",
                200,
                200,
                i,
                i,
                i,
                f"{i:064x}",
                "",
                "",
                200,
                "none",
                "file",
                "20260101T000000000000Z-aaaaaa",
                f'[["{i:064x}",200]]',
            )
            for i in range(ROWS)
        ]
        sql = f"INSERT INTO ledger ({cols}) VALUES ({', '.join('?' * 16)})"
        await rig.state.transaction(lambda c: c.executemany(sql, rows))
        rows.clear()
        gate = OwnerGate(settings.state_dir, SID, Stats())
        tracemalloc.start()
        try:
            result = await prune_target(settings, rig.state, rig.target, gate, dry_run=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result["ok"], result
        assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB"  # was ~30 MiB: the ledger whole
    finally:
        await close_rig(rig)


FILES = 10_000


async def _three_uploads_of_small_files(tmp_path: Path) -> Rig:
    settings = local_settings(tmp_path)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state.db")
    for i in range(FILES):
        rig.write(f"sessions/s{i // 500:03d}/state-{i:05d}.json", b'{"n": %d}\n' % i)
    await rig.sync()
    for n in (1, 2):  # one file changed: the next uploads share the other index parts
        rig.write("sessions/s000/state-00000.json", b'{"n": "again %d"}\n' % n)
        await rig.sync()
    return rig


def _entries(documents: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for doc in documents.values() for e in doc.get("files") or ()]


async def test_a_prune_holds_what_its_kept_uploads_share_once(tmp_path: Path) -> None:
    """A prune of 200,000 small files with 3 uploads kept peaked at 504 MB RSS: every kept
    upload's chunk references were held once per upload though their index parts are the
    same objects, and each entry of a decoded index part held its own copy of its pack's
    key (and of strings such as "zstd"), its hash twice. Now what the uploads share is held
    once: 40,000 files, 3 uploads, traced peak of the load 69.9 -> 47.1 MiB; this
    test's 10,000 files 1,834 -> 1,227 B a file."""
    from akoshad.storage.prune_load import load_for_prune

    rig = await _three_uploads_of_small_files(tmp_path)
    try:
        tracemalloc.start()
        try:
            loaded = await load_for_prune(rig.target, rig.system_id)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(loaded.manifests) == 3
        first, *later = (m.refs for m in loaded.manifests)
        shared = [h for h in first.chunks if all(h in r.chunks for r in later)]
        assert shared, "the uploads share no index part"
        for holder in shared:  # the same tuple, not three equal ones
            assert all(r.chunks[holder] is first.chunks[holder] for r in later)
        entries = _entries(loaded.documents)
        assert len(entries) >= FILES
        packs = {id(c["key"]) for e in entries for c in e["chunks"]}
        assert len(packs) == len({c["key"] for e in entries for c in e["chunks"]})
        assert all(e["chunks"][0]["sha256"] is e["sha256"] for e in entries)
        assert len({id(c["compression"]) for e in entries for c in e["chunks"]}) == 1
        assert peak < FILES * 1500, f"{peak / FILES:.0f} B a file"  # was 1,834, now 1,227
    finally:
        await close_rig(rig)
