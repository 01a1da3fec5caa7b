"""kill -9 at random moments while the store keeps changing: it always converges."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from akoshad.manifest.layout import ManifestError
from akoshad.storage.format2 import INDEX_INLINE_MAX
from akoshad.targets.local import LocalTarget
from tests.crashloop import crash_loop, referenced_keys
from tests.f2_rig import close_rig, open_rig
from tests.integration.test_format2_writer import SID, local_settings, noise
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.storegen import duckdb_rows, make_store, sqlite_rows

CYCLES = int(os.environ.get("AKOSHAD_TEST_CRASH_CYCLES", "10"))


def compare_stores(store: Path, restored: Path) -> int:
    """Restored == store: same DuckDB/SQLite rows, other files byte-identical."""
    count = 0
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store)
        if not path.is_file() or path.name.endswith((".wal", "-journal")):
            continue
        other = restored / rel
        assert other.exists(), rel
        if path.suffix == ".duckdb":
            for table in ("conversations_v2", "churn"):
                if path.name == "reflection.duckdb":
                    assert duckdb_rows(other, table) == duckdb_rows(path, table)
        elif path.name in ("activity.db", "natural_scheduler.db"):
            table = "events" if path.name == "activity.db" else "reminders"
            assert sqlite_rows(other, table) == sqlite_rows(path, table)
        else:
            assert (
                hashlib.sha256(other.read_bytes()).digest()
                == hashlib.sha256(path.read_bytes()).digest()
            ), rel
        count += 1
    restored_files = {p.relative_to(restored) for p in restored.rglob("*") if p.is_file()}
    live_files = {p.relative_to(store) for p in store.rglob("*") if p.is_file()}
    assert restored_files <= live_files  # nothing deleted came back
    return count


@pytest.mark.slow
def test_crash_loop_local(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    make_store(s.store)
    result = crash_loop(
        config=s.config,
        env=s.env,
        store=s.store,
        state=s.state,
        log=tmp_path / "d.log",
        cycles=CYCLES,
        manifests=s.manifests,
        outbox=s.outbox,
        once=s.once,
        restore_into=lambda dest: s.cli("restore", "--latest", "--dest", str(dest), check=True),
        compare=compare_stores,
        scratch=tmp_path,
    )
    assert result.uploads >= 2 and result.files_verified >= 8
    assert not [p for p in s.outbox.rglob("*") if ".akoshad-tmp-" in p.name]
    assert SYSTEM


def _index_upload(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """One format-2 upload to a local outbox whose files go in index parts (more than the
    inline maximum) and whose large file has a chunk list; its manifest and the outbox."""
    settings = local_settings(tmp_path)
    outbox = tmp_path / "outbox"

    async def go() -> dict[str, Any]:
        rig = await open_rig(settings, LocalTarget(outbox), tmp_path / "state/state.db")
        try:
            for i in range(INDEX_INLINE_MAX + 20):
                rig.write(f"sessions/s{i}/state.json", f'{{"session": {i}}}'.encode())
            rig.write("reflection.duckdb", noise(7, 24 * 1024 * 1024))
            (report,) = await rig.sync()
            assert report.upload_id and report.error is None
            return await rig.manifest(report.upload_id)
        finally:
            await close_rig(rig)

    return asyncio.run(go()), outbox


def test_referenced_keys_follow_the_index_and_chunk_lists(tmp_path: Path) -> None:
    """The crash loop's check resolves a manifest as restore does: every index part, chunk
    list and pack the upload needs, and nothing else; a missing index part is an error."""
    manifest, outbox = _index_upload(tmp_path)
    meta = manifest["metadata"]
    assert "files" not in meta and meta["index"]["parts"]
    keys = referenced_keys(manifest, outbox)
    stored = {
        p.relative_to(outbox).as_posix()
        for p in (outbox / "systems" / SID).rglob("*")
        if p.is_file() and "/uploads/" not in p.as_posix() and "/keys/" not in p.as_posix()
    }
    assert {part["key"] for part in meta["index"]["parts"]} <= keys
    assert any("/chunklists/" in k for k in keys) and any("/packs/" in k for k in keys)
    assert keys == stored - {k for k in stored if k.endswith("/owner.json")}
    (outbox / meta["index"]["parts"][0]["key"]).unlink()
    with pytest.raises(ManifestError):
        referenced_keys(manifest, outbox)
