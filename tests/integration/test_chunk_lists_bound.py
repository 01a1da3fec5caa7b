"""What the documents of one manifest decode to is bounded together, not only each one.

Each chunk list was bounded (64 MiB of JSON) and their stored bytes together (1 GiB), but
gzip stores 64 MiB of repeated chunk refs in some 270 KB: a manifest naming a few dozen
such lists (a hostile or damaged target) made ``uploads``, ``verify`` and ``restore`` parse
gigabytes (8 of them: 1.7 GB RSS for ``uploads``, each more another 200 MB). Now the lists
decode to at most ``MAX_TOTAL_DECODED_BYTES`` together; the files of a list past it are
named as unrestorable, like those of a damaged list, and the rest are read."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from akoshad.storage import format2_read
from akoshad.storage.chunk_lists_read import Unreadable
from akoshad.storage.format2_read import read_entries
from akoshad.targets.local import LocalTarget
from tests.helpers import akoshad, daemon_config

SYSTEM = "listbound"
CHUNKS = 2_000  # about 520 KB of JSON per list


def _add_lists(outbox: Path, count: int) -> tuple[dict[str, Any], int]:
    """``count`` files whose chunk lists each name CHUNKS chunks (a chunk of an existing
    small file, again and again): the changed manifest, and what a list decodes to."""
    (path,) = outbox.glob(f"systems/{SYSTEM}/uploads/*/manifest.json")
    manifest = json.loads(path.read_text())
    files = manifest["metadata"]["files"]
    small = next(f for f in files if "chunks" in f and len(f["chunks"]) == 1)
    ref = small["chunks"][0]
    for i in range(count):
        doc = json.dumps({"chunks": [ref] * CHUNKS}).encode() + b" " * i
        sha = hashlib.sha256(doc).hexdigest()
        key = f"systems/{SYSTEM}/chunklists/{sha[:2]}/{sha}.json.gz"
        (outbox / key).parent.mkdir(parents=True, exist_ok=True)
        (outbox / key).write_bytes(gzip.compress(doc))
        entry = {k: v for k, v in small.items() if k not in ("chunks", "json_ok", "rows")}
        entry.update(
            path=f"many{i}.bin",
            name=f"many{i}.bin",
            kind="file",
            size=CHUNKS * ref["size"],
            chunk_list={"key": key, "compression": "gzip"},
        )
        files.append(entry)
    path.write_text(json.dumps(manifest))
    return manifest, len(doc)


def test_chunk_lists_decode_to_a_bounded_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, env = daemon_config(tmp_path, SYSTEM)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    manifest, one_list = _add_lists(tmp_path / "outbox", 6)
    bound = one_list * 5 // 2  # two lists fit
    monkeypatch.setattr(format2_read, "MAX_TOTAL_DECODED_BYTES", bound, raising=False)

    lost: list[Unreadable] = []
    files = asyncio.run(read_entries(LocalTarget(tmp_path / "outbox"), manifest, lost=lost))
    over = "the manifest's documents decode to more than"
    assert lost and all(over in u.reason for u in lost), [u.reason for u in lost]
    assert all(u.file.path.startswith("many") for u in lost)
    read = {f.path for f in files}
    assert {"reflection.duckdb", "sessions/session-0/state.json"} <= read  # the others
    assert len(read) + len(lost) == len(manifest["metadata"]["files"])
    assert sum(1 for p in read if p.startswith("many")) <= 2 and len(lost) >= 4


def test_uploads_reads_the_documents_of_few_manifests_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``uploads`` read 8 manifests at once, each with its documents and every file's
    chunks held: many small manifests naming the same hostile lists took 8 times the bound
    (9 such uploads: 6.9 GB RSS). Now only ``listing.PARSING`` manifests read and hold
    their documents at once (1.6 GB); the manifests themselves are still fetched 8 at once."""
    from akoshad.restore import listing

    config, env = daemon_config(tmp_path, SYSTEM)
    for i in range(5):
        (tmp_path / "store" / "akosha_sync_state.json").write_text(f'{{"n": {i}}}')
        akoshad("run", "--once", "--config", str(config), env=env, check=True)
    now = 0
    most = 0
    real = listing.read_entries

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal now, most
        now += 1
        most = max(most, now)
        try:
            await asyncio.sleep(0.05)
            return await real(*args, **kwargs)
        finally:
            now -= 1

    monkeypatch.setattr(listing, "read_entries", counted)
    rows = asyncio.run(listing.upload_rows(LocalTarget(tmp_path / "outbox"), SYSTEM))
    assert len(rows) == 5 and all(r.damaged is None for r in rows)
    assert most == 2  # before: 5, all of them
