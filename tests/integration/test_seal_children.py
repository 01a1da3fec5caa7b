"""A large encrypted upload through the real pipeline (drain, uploader, local target):
its large chunks and, once the children are at work, its small files are sealed in
sealing children; a session-sized upload starts none; every child has ended when the
pass returns, and the identity gives the store back byte for byte."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from akoshad.pipeline import packing, seal_worker
from akoshad.storage.crypto import load_identity
from tests.f2_rig import close_rig, open_sealed_rig
from tests.sealed_read import restore_sealed

MiB = 1024 * 1024


class CountingWorkers(seal_worker.SealingWorkers):
    """The real workers, remembering each pass's instance and what it sealed where."""

    made: list[CountingWorkers] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[int] = []
        self.pids: tuple[int, ...] = ()
        CountingWorkers.made.append(self)

    def seal_many(self, bodies: list[bytes]) -> list[bytes]:  # type: ignore[override]
        self.batches.append(len(bodies))
        out = super().seal_many(bodies)
        self.pids = tuple(sorted(set(self.pids) | set(self.children)))
        return out


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_large_chunks_and_small_files_are_sealed_in_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packing, "SealingWorkers", CountingWorkers)
    CountingWorkers.made = []
    rig = await open_sealed_rig(tmp_path, "enc-children")
    rng = random.Random(5)
    identity = load_identity(tmp_path / "id.txt")
    try:
        big = rng.randbytes(24 * MiB)  # about 96 large chunks: past the warm-up
        rig.write("reflection.duckdb", big)
        for i in range(300):
            rig.write(f"sessions/s{i % 7}/state-{i}.json", b'{"n": %d, "x": "%s"}' % (i, b"y" * i))
        (first,) = await rig.sync()
        assert first.error is None and first.upload_id
        (workers,) = CountingWorkers.made
        assert len(workers.pids) in (1, 2)  # one child per sealing thread at most
        assert max(workers.batches) > 1  # small files went in batches
        assert sum(workers.batches) > 300  # and every large chunk too
        assert all(gone(pid) for pid in workers.pids)  # ended with the pass
        restored = await restore_sealed(rig.target, await rig.manifest(first.upload_id), identity)
        assert restored == rig.on_disk()

        rig.write("sessions/s0/state-0.json", b'{"changed": true}')
        rig.write("reflection.duckdb", big + rng.randbytes(2 * MiB))
        (session,) = await rig.sync()
        assert session.error is None and session.upload_id
        assert CountingWorkers.made[-1].pids == ()  # a session-sized upload starts no child
        restored = await restore_sealed(rig.target, await rig.manifest(session.upload_id), identity)
        assert restored == rig.on_disk()
    finally:
        await close_rig(rig)
