"""What a prune holds in memory beyond the target's uploads: it loaded the whole ledger
(every file's row, ~1 KB each on a large store) to learn which whole objects of format-1
uploads the next upload points at; it now reads only those keys."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from tests.f2_rig import close_rig
from tests.integration.test_format2_writer import SID
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
