"""The crash loop shared by the test suite (few cycles) and bench/crash_loop.py (many)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from akoshad.storage.format2_read import read_entries
from akoshad.targets.local import LocalTarget
from tests.helpers import start_daemon

WRITER = Path(__file__).with_name("churn_writer.py")


@dataclass
class CrashLoopResult:
    cycles: int
    uploads: int
    files_verified: int


def referenced_keys(manifest: dict[str, Any], outbox: Path) -> set[str]:
    """Every object a manifest in the local target ``outbox`` points at, resolved as restore
    resolves it (``read_entries``): whole objects (format 1); the index parts and chunk
    lists it reads (a missing one raises ``ManifestError`` naming it) and the pack of every
    chunk of every file (format 2), inline or through ``metadata.index``."""
    documents: set[str] = set()
    files = asyncio.run(read_entries(LocalTarget(outbox), manifest, documents=documents))
    return documents | {part.key for f in files for part in f.parts}


def assert_referenced_present(manifest: dict[str, Any], outbox: Path) -> None:
    """Every object ``manifest`` references (:func:`referenced_keys`) is a file in
    ``outbox``."""
    for key in referenced_keys(manifest, outbox):
        assert (outbox / key).is_file(), key


def start_writer(store: Path, seed: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(store), str(seed)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def crash_loop(
    *,
    config: Path,
    env: dict[str, str],
    store: Path,
    state: Path,
    log: Path,
    cycles: int,
    manifests: Callable[[], list[dict[str, Any]]],
    outbox: Path,
    once: Callable[[], Any],
    restore_into: Callable[[Path], Any],
    compare: Callable[[Path, Path], int],
    scratch: Path,
    seed: int = 1,
) -> CrashLoopResult:
    """kill -9 the daemon at random moments while a writer churns; then check convergence:
    after every kill, every object each manifest in ``outbox`` (a local target) references
    exists."""
    rng = random.Random(seed)
    writer = start_writer(store, seed)
    try:
        for _ in range(cycles):
            proc = start_daemon(config, env, log)
            time.sleep(rng.uniform(0.3, 3.0))  # some kills land mid-upload, some after
            proc.kill()
            proc.wait()
            for m in manifests():  # never a manifest pointing at a missing object
                assert_referenced_present(m, outbox)
    finally:
        writer.terminate()
        writer.wait(30)
    res = once()
    assert res.returncode == 0, res.stderr
    all_manifests = manifests()
    for m in all_manifests:
        assert_referenced_present(m, outbox)
    restored = scratch / "restored"
    restore_into(restored)
    verified = compare(store, restored)
    for staging in (state / "staging", state / "packs"):
        assert not staging.exists() or not list(staging.iterdir())
    con = sqlite3.connect(state / "state.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0
        assert (
            con.execute("SELECT COUNT(*) FROM uploads WHERE outcome = 'in_progress'").fetchone()[0]
            == 0
        )
        assert con.execute("SELECT COUNT(*) FROM upload_packs").fetchone()[0] == 0
    finally:
        con.close()
    return CrashLoopResult(cycles=cycles, uploads=len(all_manifests), files_verified=verified)
