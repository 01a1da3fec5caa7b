"""restore, verify, drill and uploads on format-2 uploads, through the command line, on the
local target and on SeaweedFS: many small files packed together, a DuckDB database and a
random file cut into chunks (with a ``chunk_list``, split into parts), the entries in index
parts (more than ``INDEX_INLINE_MAX`` files), and a whole object kept from a format-1 upload
beside them.
A missing pack or a flipped byte makes verify, restore and drill fail in one line naming
the file and the chunk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from akoshad.manifest.layout import manifest_key, new_upload_id, upload_prefix
from akoshad.storage import chunk_parts
from akoshad.storage.documents import DOCUMENT_COMPRESSION, decode_document
from akoshad.storage.format2 import INDEX_INLINE_MAX, build_manifest2
from akoshad.storage.format2_read import read_entries
from akoshad.storage.stored import StoredFile, WholeObject
from akoshad.targets.base import Target
from akoshad.targets.local import LocalTarget
from akoshad.targets.s3.target import S3Target
from tests.format2_store import Store, make_duckdb, write_upload
from tests.helpers import akoshad, base_env, write_config
from tests.s3server import WeedServer

T = TypeVar("T")
NOW = datetime.now(UTC).replace(microsecond=0)
T1, T2 = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
SMALL = INDEX_INLINE_MAX + 60
LEGACY = "legacy/notes.json"


def make_tree(root: Path) -> None:
    for i in range(SMALL):
        d = root / "sessions" / f"{i // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"state-{i:03d}.json").write_text(json.dumps({"session": i, "notes": "n" * i}))
    make_duckdb(root / "reflection.duckdb", 20000)
    (root / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "empty.txt").write_bytes(b"")


def hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The store at the first upload, and at the second (one file changed, one added)."""
    base = tmp_path_factory.mktemp("trees")
    v1, v2 = base / "v1", base / "v2"
    make_tree(v1)
    shutil.copytree(v1, v2)
    (v2 / "sessions" / "01" / "state-150.json").write_text('{"session": 150, "later": true}')
    (v2 / "sessions" / "new.json").write_text('{"new": 1}')
    return v1, v2


@dataclass
class Rig:
    """A target (local or S3) holding two format-2 uploads, and a config pointing at it."""

    tmp: Path
    system_id: str
    make: Callable[[], Target]
    config: Path
    s3: WeedServer | None = None
    uploads: tuple[str, str] = ("", "")
    legacy_key: str = ""

    def run(self, job: Callable[[Target], Awaitable[T]]) -> T:
        async def go() -> T:
            target = self.make()
            await target.start(clean_up=False)
            try:
                return await job(target)
            finally:
                await target.close()

        return asyncio.run(go())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(self.config), env=base_env(self.tmp / "home"))

    def files(self, upload_id: str) -> list[StoredFile]:
        async def job(t: Target) -> list[StoredFile]:
            data = b"".join([p async for p in t.read(manifest_key(self.system_id, upload_id))])
            return await read_entries(t, json.loads(data), system_id=self.system_id)

        return self.run(job)

    def read(self, key: str) -> bytes:
        async def job(t: Target) -> bytes:
            return b"".join([p async for p in t.read(key)])

        return self.run(job)

    def delete(self, key: str) -> None:
        self.run(lambda t: t.delete_keys([key]))

    def flip(self, key: str, offset: int) -> None:
        """Flip one bit of the stored object, in place (as a failing disk would)."""
        data = bytearray(self.read(key))
        data[offset] ^= 0x01
        if self.s3 is not None:
            self.s3.client().put_object(Bucket=self.s3.bucket, Key=key, Body=bytes(data))
        else:
            (self.tmp / "outbox" / key).write_bytes(bytes(data))


async def _store(
    target: Target, rig: Rig, trees: tuple[Path, Path], staging: Path
) -> tuple[str, str]:
    store = Store(target, rig.system_id, staging)
    first = new_upload_id(T1)
    src = staging.parent / "legacy.json"
    src.write_text(json.dumps({"kept": "since format 1"}) * 40)
    legacy_key = upload_prefix(rig.system_id, first) + "legacy__notes.json.gz"
    obj = await target.put_file(legacy_key, src, "gzip")
    data = src.read_bytes()
    legacy = StoredFile(
        path=LEGACY,
        kind="file",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        parts=(WholeObject(legacy_key, obj.stored_size, "gzip", len(data), obj.sha256),),
        mode=0o640,
        name="legacy__notes.json.gz",
    )
    rig.legacy_key = legacy_key
    known: frozenset[str] = frozenset()
    ids = []
    for tree, when in zip(trees, (T1, T2), strict=True):
        upload_id = first if when == T1 else new_upload_id(T2)
        files = [*await store.store_tree(tree), legacy]
        built = build_manifest2(
            system_id=rig.system_id,
            upload_id=upload_id,
            files=files,
            skipped={},
            known_documents=known,
            uploaded_at=when,
        )
        assert "index" in built.manifest["metadata"]
        assert any("/chunklists/" in k for k in built.document_keys)
        await write_upload(target, rig.system_id, upload_id, built)
        known = built.document_keys
        ids.append(upload_id)
    return ids[0], ids[1]


@pytest.fixture(params=["local", pytest.param("cloud", marks=pytest.mark.s3)])
def rig(
    request: pytest.FixtureRequest, tmp_path: Path, system_id: str, trees: tuple[Path, Path]
) -> Rig:
    settings: dict[str, Any] = {
        "data_dir": str(tmp_path / "store"),
        "state_dir": str(tmp_path / "state"),
        "local_target_dir": str(tmp_path / "outbox"),
        "socket_path": str(tmp_path / "s.sock"),
    }
    s3: WeedServer | None = None
    make: Callable[[], Target]
    if request.param == "cloud":
        s3 = request.getfixturevalue("s3")
        assert s3 is not None
        server = s3
        settings["cloud_sync"] = server.cloud_sync(system_id)
        make = lambda: S3Target(  # noqa: E731
            bucket=server.bucket,
            endpoint=server.endpoint,
            region="us-east-1",
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
            retry_backoff=0.1,
            max_retries=1,
        )
    else:
        settings["cloud_sync"] = {"system_id": system_id}
        make = lambda: LocalTarget(tmp_path / "outbox")  # noqa: E731
    config = write_config(tmp_path / "c.yaml", **settings)
    r = Rig(tmp_path, system_id, make, config, s3)
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    r.uploads = r.run(lambda t: _store(t, r, trees, staging))
    return r


def partly_restored(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """A restore that went on past the files it could not restore (exit 1, no traceback):
    those files' lines (without ``akoshad: ``); the last line checked to count them and
    to say that --dest holds the others."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    *named, last = [line.removeprefix("akoshad: ") for line in proc.stderr.strip().splitlines()]
    found = re.search(r"^(\d+) of the (\d+) file\(s\) .* holds (\d+) of the (\d+) file", last)
    assert found is not None, last
    failed, total, landed, _ = map(int, found.groups())
    assert failed == len(named) and landed == total - failed and landed > 0, proc.stderr
    return named


def one_line_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed (exit 1) with one line on stderr, no traceback; that line."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_verify_and_restore_both_uploads(rig: Rig, trees: tuple[Path, Path]) -> None:
    first, second = rig.uploads
    files = rig.files(second)
    assert len(files) == SMALL + 5  # the small files, new.json, the database, blob, empty, legacy
    db = next(f for f in files if f.path == "reflection.duckdb")
    assert len(db.chunks) > 64  # stored as a chunk list
    packs = {ref.key for f in files if f.path.startswith("sessions/") for ref in f.chunks}
    assert len(packs) < 10  # small files share packs
    assert next(f for f in files if f.path == LEGACY).whole is not None

    proc = rig.cli("verify", "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{second}: {len(files)} file(s) verified, ok" in proc.stdout
    assert f"{first}: {len(files) - 1} file(s) verified, ok" in proc.stdout

    legacy = {LEGACY: hashlib.sha256(json.dumps({"kept": "since format 1"}).encode() * 40)}
    for which, tree in ((["--latest"], trees[1]), (["--upload-id", first], trees[0])):
        dest = rig.tmp / f"dest-{len(which)}"
        proc = rig.cli("restore", *which, "--dest", str(dest))
        assert proc.returncode == 0, proc.stderr
        want = {**hashes(tree), LEGACY: legacy[LEGACY].hexdigest()}
        assert hashes(dest) == want
        assert (dest / LEGACY).stat().st_mode & 0o777 == 0o640


def test_restore_path_and_at(rig: Rig, trees: tuple[Path, Path]) -> None:
    v1 = hashes(trees[0])
    at = (T1 + timedelta(minutes=5)).isoformat()
    dest = rig.tmp / "picked"
    proc = rig.cli("restore", "--at", at, "--dest", str(dest), "--path", "sessions/01/*")
    assert proc.returncode == 0, proc.stderr
    assert f"of upload {rig.uploads[0]}" in proc.stdout
    got = hashes(dest)
    assert got == {p: h for p, h in v1.items() if p.startswith("sessions/01/")}
    assert got["sessions/01/state-150.json"] != hashes(trees[1])["sessions/01/state-150.json"]

    proc = rig.cli("restore", "--at", at, "--dest", str(rig.tmp / "db"), "--path", "*.duckdb")
    assert proc.returncode == 0, proc.stderr
    assert hashes(rig.tmp / "db") == {"reflection.duckdb": v1["reflection.duckdb"]}

    before = (T1 - timedelta(minutes=5)).isoformat()
    proc = rig.cli("restore", "--at", before, "--dest", str(rig.tmp / "none"))
    one_line_failure(proc, "no upload", "at or before")
    proc = rig.cli("restore", "--latest", "--dest", str(rig.tmp / "x"), "--path", "nope/*")
    one_line_failure(proc, "matches no file")


def test_a_missing_pack_and_a_flipped_byte_are_named(rig: Rig) -> None:
    second = rig.uploads[1]
    files = {f.path: f for f in rig.files(second)}
    db = files["reflection.duckdb"]
    small = files["sessions/00/state-042.json"].chunks[0]
    # a chunk of the database stored apart from the small file (the last such: how many
    # chunks the database makes, and which pack each lands in, vary between runs)
    gone = next(ref for ref in reversed(db.chunks) if ref.key != small.key)
    rig.delete(gone.key)
    rig.flip(small.key, small.offset + small.length // 2)

    proc = rig.cli("verify")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    problems = [line for line in proc.stdout.splitlines() if "problem" not in line]
    missing = [p for p in problems if "is missing" in p]
    n = len(db.chunks)
    index = next(i for i, ref in enumerate(db.chunks) if ref.key == gone.key)  # first one read
    assert any(
        p.startswith(f"{second}: reflection.duckdb: chunk {index + 1} of {n} ")
        and gone.key in p
        and db.chunks[index].sha256[:12] in p
        for p in missing
    ), problems
    damaged = [p for p in problems if "sessions/00/state-042.json: chunk 1 of 1" in p]
    assert damaged and "is damaged" in damaged[0] and small.key in damaged[0], problems

    proc = rig.cli("restore", "--latest", "--dest", str(rig.tmp / "dest"))
    named = partly_restored(proc)
    assert any(p.startswith("reflection.duckdb: chunk ") and gone.key in p for p in named), named
    assert any(
        p.startswith("sessions/00/state-042.json: chunk 1 of 1") and small.key in p for p in named
    ), named
    left = [p for p in (rig.tmp / "dest").rglob("*") if p.name.startswith(".akoshad-restore-")]
    assert left == []

    # the whole object of the format-1 upload is checked too
    rig.flip(rig.legacy_key, len(rig.read(rig.legacy_key)) // 2)
    proc = rig.cli("verify", "--upload-id", rig.uploads[0])
    assert proc.returncode == 1
    assert f"{LEGACY}: object {rig.legacy_key}" in proc.stdout, proc.stdout


def test_a_missing_index_part_or_chunk_list_is_named(rig: Rig) -> None:
    second = rig.uploads[1]
    lists = [k for k in rig.run(_all_keys(rig.system_id)) if "/chunklists/" in k]
    assert lists
    for key in lists:
        rig.delete(key)
    # each file whose list is lost is named, the others restored (before: none was)
    named = partly_restored(rig.cli("restore", "--latest", "--dest", str(rig.tmp / "d1")))
    for line in named:  # a list's file, or the DuckDB partner of one
        lost = "chunk list " in line and " is missing" in line and any(k in line for k in lists)
        assert lost or ": not restored: " in line, line

    manifest = json.loads(rig.read(manifest_key(rig.system_id, second)))
    part = manifest["metadata"]["index"]["parts"][0]["key"]
    rig.delete(part)
    proc = rig.cli("verify")
    assert proc.returncode == 1
    want = f"{second}: manifest of upload {second} is invalid: index part {part} is missing"
    assert want in proc.stdout, proc.stdout
    line = one_line_failure(rig.cli("restore", "--latest", "--dest", str(rig.tmp / "d2")))
    assert f"index part {part} is missing" in line


def _document(rig: Rig, key: str) -> Any:
    return decode_document(rig.read(key), DOCUMENT_COMPRESSION, key, 1 << 26)


def test_a_split_chunk_list_reads_and_a_missing_part_is_named(rig: Rig) -> None:
    """blob.bin (3 MiB in 8 KiB chunks) has its chunk list split into parts (``chunk_parts``):
    verify and restore read it whole; with one part gone, both name the file and the part."""
    second = rig.uploads[1]
    blob = next(f for f in rig.files(second) if f.path == "blob.bin")
    assert len(blob.chunks) > chunk_parts.SPLIT_MIN_CHUNKS
    manifest = json.loads(rig.read(manifest_key(rig.system_id, second)))
    entries = [
        e for p in manifest["metadata"]["index"]["parts"] for e in _document(rig, p["key"])["files"]
    ]
    top = _document(rig, next(e for e in entries if e["path"] == "blob.bin")["chunk_list"]["key"])
    assert len(top["parts"]) > 3 and sum(p["count"] for p in top["parts"]) == len(blob.chunks)
    part = top["parts"][len(top["parts"]) // 2]["key"]
    rig.delete(part)
    proc = rig.cli("verify")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    want = f"{second}: 'blob.bin': chunk list part {part} is missing"
    assert want in proc.stdout, proc.stdout
    named = partly_restored(rig.cli("restore", "--latest", "--dest", str(rig.tmp / "d")))
    assert named == [f"'blob.bin': chunk list part {part} is missing"]


def _all_keys(system_id: str) -> Callable[[Target], Awaitable[list[str]]]:
    async def job(t: Target) -> list[str]:
        return [k async for k in t.list_keys(f"systems/{system_id}/")]

    return job


def test_drill_on_format2(rig: Rig) -> None:
    proc = rig.cli("drill", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["upload_id"] == rig.uploads[1]
    assert result["files"] == SMALL + 5
    assert result["problems"] == [] and result["bytes"] > 4 * 1024 * 1024, result

    db = next(f for f in rig.files(rig.uploads[1]) if f.path == "reflection.duckdb")
    ref = db.chunks[3]
    rig.flip(ref.key, ref.offset)
    proc = rig.cli("drill", "--json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    problems = json.loads(proc.stdout)["problems"]
    # one problem: the damaged database is named with its chunk, and not opened
    assert len(problems) == 1, problems
    assert problems[0].startswith("reflection.duckdb: chunk ") and ref.key in problems[0]


def test_uploads_lists_format2(rig: Rig) -> None:
    proc = rig.cli("uploads", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["upload_id"] for r in rows] == list(rig.uploads)
    assert [r["files"] for r in rows] == [SMALL + 4, SMALL + 5]
    assert all(r["damaged"] is None for r in rows)

    async def total(t: Target) -> int:  # every object, counted once by the first upload
        return sum([await t.head(k) or 0 async for k in t.list_keys(f"systems/{rig.system_id}/")])

    assert sum(r["stored_bytes"] for r in rows) == rig.run(total)
    assert rows[1]["stored_bytes"] < rows[0]["stored_bytes"] / 4  # one file changed, one added


def test_drill_rate_limit_applies_to_chunk_reads(tmp_path: Path) -> None:
    """A drill reads chunks through its token bucket: every ranged read is paid for, and a
    slow rate makes it wait."""
    from akoshad.restore.throttle import DrillReader, TokenBucket
    from akoshad.storage.fetch import fetch_file

    (tmp_path / "tree").mkdir()
    make_duckdb(tmp_path / "tree" / "r.duckdb", 8000)
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    class Counted(LocalTarget):
        ranged = 0

        async def read_range(self, key: str, offset: int, length: int) -> bytes:
            self.ranged += 1
            return await super().read_range(key, offset, length)

    target = Counted(tmp_path / "outbox")

    async def go() -> tuple[int, int, int]:
        await target.start()
        (f,) = await Store(target, "sid", staging).store_tree(tmp_path / "tree")
        bucket = TokenBucket(50_000, clock=lambda: 0.0, sleep=sleep)
        reader = DrillReader(target, bucket)
        size, _ = await fetch_file(reader, f)
        return size, reader.bytes_read, sum(r.length for r in set(f.chunks))

    size, read, distinct = asyncio.run(go())
    assert size == (tmp_path / "tree" / "r.duckdb").stat().st_size
    assert distinct <= read < size  # chunk reads (compressed), coalesced, all paid for
    assert target.ranged > 0  # ranged reads, not whole packs
    assert read > 100_000 and sum(waited) >= (read - 50_000) / 50_000 * 0.99
