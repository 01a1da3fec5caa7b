"""``akoshad uploads``, ``restore --at`` and ``restore --path``, run as users run them
(subprocesses against a local target), and the parallel restore against SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from akoshad.manifest.layout import MAX_MANIFEST_BYTES
from tests.helpers import akoshad, base_env, wait_for, write_config
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.integration.test_pipeline_s3 import S3Setup
from tests.s3server import WeedServer
from tests.storegen import LiveWriter, make_store

UTC_Z = UTC
ZONE = "Asia/Kolkata"  # +05:30 all year: a naive --at is read in this zone


class Uploads:
    """Three uploads of one store: the first with a live DuckDB writer (its WAL is in
    it), then two small changes. ``fresh`` reads the same outbox with an empty state."""

    def __init__(self, tmp: Path) -> None:
        self.setup = Setup(tmp)
        s = self.setup
        make_store(s.store)
        writer = LiveWriter(s.store / "reflection.duckdb", interval=0.02, log=tmp / "w.log")
        try:
            wait_for(lambda: len(writer.committed()) >= 5, timeout=30)
            assert s.once().returncode == 0
        finally:
            writer.stop()
        for i in (1, 2):
            (s.store / "sessions" / f"session-{i}" / "state.json").write_text(f'{{"v": {i}}}')
            assert s.once().returncode == 0
        self.manifests = s.manifests()
        assert len(self.manifests) == 3
        self.ids = [m["metadata"]["upload_id"] for m in self.manifests]
        settings = {
            "data_dir": str(tmp / "elsewhere"),
            "state_dir": str(tmp / "fresh-state"),
            "local_target_dir": str(s.outbox),
            "cloud_sync": {"system_id": SYSTEM},
        }
        self.fresh_config = write_config(tmp / "fresh.yaml", **settings)
        self.env = dict(s.env, TZ=ZONE)

    def cli(self, *args: str) -> Any:
        return akoshad(*args, "--config", str(self.fresh_config), env=self.env)

    def times(self) -> list[datetime]:
        return [datetime.fromisoformat(m["uploaded_at"]) for m in self.manifests]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Uploads:
    return Uploads(tmp_path_factory.mktemp("uploads"))


def _folder_bytes(outbox: Path, upload_id: str) -> int:
    folder = outbox / "systems" / SYSTEM / "uploads" / upload_id
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _stored_bytes(root: Path) -> int:
    """Every object of a system the uploads reference (not the owner record, not keys)."""
    return sum(
        p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and p.name != "owner.json" and "keys" not in p.relative_to(root).parts
    )


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _one_line_error(res: Any) -> str:
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("akoshad:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


# ---- uploads --------------------------------------------------------------------------


def test_uploads_json_lists_every_upload_from_the_target_alone(up: Uploads) -> None:
    res = up.cli("uploads", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["upload_id"] for r in rows] == up.ids  # oldest first
    for row, manifest in zip(rows, up.manifests, strict=True):
        assert row["files"] == len(manifest["metadata"]["files"])
        assert row["total_size_bytes"] == manifest["total_size_bytes"]
        assert row["uploaded_at"] == manifest["uploaded_at"]
        assert row["stored_bytes"] >= _folder_bytes(up.setup.outbox, row["upload_id"])
        assert row["damaged"] is None
    # every stored object counted once, by the first upload that references it
    system = up.setup.outbox / "systems" / SYSTEM
    assert sum(r["stored_bytes"] for r in rows) == _stored_bytes(system)
    # the last upload stored only the session file that changed (in a pack of its own) and
    # its manifest (which lists every file: most of what it stores on a store this small)
    last = up.manifests[2]["metadata"]
    changed = [
        f
        for f in last["files"]
        if f["chunks"]
        and f["chunks"][0]["key"]
        not in {
            c["key"] for m in up.manifests[:2] for e in m["metadata"]["files"] for c in e["chunks"]
        }
    ]
    assert len(changed) == 1, changed
    assert rows[2]["stored_bytes"] < rows[0]["stored_bytes"] / 5
    assert not (up.setup.tmp / "fresh-state" / "state.db").exists()


def test_uploads_human_table(up: Uploads) -> None:
    res = up.cli("uploads")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["UPLOAD_ID", "TIME", "FILES", "STORED", "TOTAL"]
    assert [line.split()[0] for line in lines[1:]] == up.ids
    files = len(up.manifests[0]["metadata"]["files"])
    assert lines[1].split()[2] == str(files)


def test_a_local_target_dir_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    """A typo in ``local_target_dir``: uploads, restore and verify say the directory is not
    there (exit 1), not "no uploads" (exit 0), and create nothing."""
    typo = tmp_path / "outbx"
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(typo),
    )
    env = base_env(tmp_path / "home")
    for args in (["uploads"], ["restore", "--latest", "--dest", str(tmp_path / "r")], ["verify"]):
        res = akoshad(*args, "--config", str(cfg), env=env)
        line = _one_line_error(res)
        assert line == f"akoshad: local_target_dir {typo} does not exist: no upload can be there"
    assert not typo.exists() and not (tmp_path / "r").exists()


def test_uploads_of_a_system_without_any(up: Uploads, tmp_path: Path) -> None:
    """A system id without uploads (a new machine's host name is another default one):
    uploads, restore and verify name the system ids the target does hold (before: only
    'no uploads for system nobody in local')."""
    res = up.cli("uploads", "--system-id", "nobody")
    assert res.returncode == 0, res.stderr
    hint = (
        f"no uploads for system nobody in local; it holds system id(s) {SYSTEM}: name one "
        "with --system-id, or set cloud_sync.system_id to go on with its uploads (then "
        "akoshad takeover)"
    )
    assert res.stdout.strip() == hint
    res = up.cli("uploads", "--system-id", "nobody", "--json")
    assert json.loads(res.stdout) == []
    for args in (["restore", "--latest", "--dest", str(tmp_path / "r")], ["verify"]):
        res = up.cli(*args, "--system-id", "nobody")
        assert res.returncode == 1 and res.stderr.strip() == f"akoshad: {hint}", res.stderr


def _two_uploads(tmp_path: Path) -> tuple[Setup, str, str]:
    """A store uploaded twice (a file added between): the setup and both upload ids."""
    s = Setup(tmp_path)
    make_store(s.store)
    assert s.once().returncode == 0
    (s.store / "a.json").write_text("{}")
    assert s.once().returncode == 0
    first, second = (m["metadata"]["upload_id"] for m in s.manifests())
    return s, first, second


def test_a_damaged_manifest_is_listed_as_damaged(tmp_path: Path) -> None:
    s, first, second = _two_uploads(tmp_path)
    path = s.outbox / "systems" / SYSTEM / "uploads" / first / "manifest.json"
    path.write_text('{"uploaded_at": "yesterday", ')
    huge = s.outbox / "systems" / SYSTEM / "uploads" / "20261130T000000000000Z-hhhhhh"
    huge.mkdir()
    with (huge / "manifest.json").open("wb") as fh:  # sparse: costs no disk
        fh.truncate(MAX_MANIFEST_BYTES + 1)
    res = s.cli("uploads", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["upload_id"]: r for r in json.loads(res.stdout)}
    assert rows[huge.name]["damaged"] == (
        f"manifest is {MAX_MANIFEST_BYTES + 1} bytes, over the {MAX_MANIFEST_BYTES} limit"
    )
    assert rows[huge.name]["uploaded_at"] == "2026-11-30T00:00:00+00:00"  # from the id
    assert rows[first]["damaged"] == "not valid JSON"
    assert rows[first]["files"] is None
    assert rows[second]["damaged"] is None and rows[second]["files"] == 9
    human = s.cli("uploads").stdout.splitlines()
    (bad,) = [line for line in human if line.startswith(first)]
    assert bad.endswith("DAMAGED: not valid JSON")
    assert "Traceback" not in s.cli("uploads").stderr


def test_a_manifest_nested_too_deep_is_damaged_not_a_failure(tmp_path: Path) -> None:
    s, first, second = _two_uploads(tmp_path)
    path = s.outbox / "systems" / SYSTEM / "uploads" / first / "manifest.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # 200 KB: JSON nested past Python's stack
    owner = s.outbox / "systems" / SYSTEM / "owner.json"
    res = s.cli("uploads", "--json")  # before: "uploads failed: RecursionError: ...", exit 1
    assert res.returncode == 0, res.stderr
    rows = {r["upload_id"]: r for r in json.loads(res.stdout)}
    assert rows[first]["damaged"] == "not valid JSON"
    assert rows[second]["damaged"] is None and rows[second]["files"] == 9
    res = s.cli("verify", "--all")  # the other upload is still verified
    assert res.returncode == 1 and "RecursionError" not in res.stderr + res.stdout
    assert f"{first}: manifest of upload {first} is not valid JSON" in res.stdout
    assert f"{second}: 9 file(s) verified, ok" in res.stdout
    res = s.cli("restore", "--upload-id", first, "--dest", str(tmp_path / "r"))
    assert res.returncode == 1
    assert res.stderr.strip() == f"akoshad: manifest of upload {first} is not valid JSON"
    owner.write_text("[" * 5_000 + "]" * 5_000)  # the target's owner record: the same
    (s.store / "b.json").write_text("{}")
    res = s.once()
    assert res.returncode == 1 and "RecursionError" not in res.stderr, res.stderr
    assert "the owner record is not JSON" in res.stderr


# ---- restore --at ---------------------------------------------------------------------


def _restored_upload(res: Any) -> str:
    assert res.returncode == 0, res.stderr
    return str(res.stdout.split(" of upload ")[1].split()[0])


def test_restore_at_picks_the_newest_upload_at_or_before(up: Uploads, tmp_path: Path) -> None:
    t = up.times()
    plus5 = timezone(timedelta(hours=5))
    cases = [
        ((t[0] + (t[1] - t[0]) / 2).astimezone(plus5).isoformat(), up.ids[0]),
        ((t[1] + (t[2] - t[1]) / 2).astimezone(UTC_Z).isoformat(), up.ids[1]),
        (t[2].isoformat(), up.ids[2]),  # "at" counts
        ((t[2] + timedelta(days=3)).isoformat(), up.ids[2]),
    ]
    for n, (when, expected) in enumerate(cases):
        res = up.cli("restore", "--at", when, "--dest", str(tmp_path / f"r{n}"))
        assert _restored_upload(res) == expected, when
    session = tmp_path / "r0" / "sessions" / "session-1" / "state.json"
    assert session.read_text() != '{"v": 1}'  # the first upload: before that change
    assert (tmp_path / "r1" / "sessions" / "session-1" / "state.json").read_text() == '{"v": 1}'


def test_restore_at_without_offset_is_local_time(up: Uploads, tmp_path: Path) -> None:
    t = up.times()
    middle = (t[1] + (t[2] - t[1]) / 2).astimezone(ZoneInfo(ZONE)).replace(tzinfo=None)
    res = up.cli("restore", "--at", middle.isoformat(), "--dest", str(tmp_path / "r"))
    assert _restored_upload(res) == up.ids[1]
    # the same wall-clock text read as UTC would be 5.5 hours later: the newest upload
    res = up.cli("restore", "--at", middle.isoformat() + "Z", "--dest", str(tmp_path / "z"))
    assert _restored_upload(res) == up.ids[2]


def test_restore_at_before_the_first_upload_fails(up: Uploads, tmp_path: Path) -> None:
    before = (up.times()[0] - timedelta(seconds=1)).isoformat()
    res = up.cli("restore", "--at", before, "--dest", str(tmp_path / "r"))
    line = _one_line_error(res)
    assert f"no upload of system {SYSTEM} in local was made at or before" in line
    assert not (tmp_path / "r").exists()


def test_restore_at_usage(up: Uploads, tmp_path: Path) -> None:
    dest = str(tmp_path / "r")
    res = up.cli("restore", "--at", "2026-01-01", "--latest", "--dest", dest)
    assert res.returncode == 2 and "not allowed with" in res.stderr
    res = up.cli("restore", "--at", "last tuesday", "--dest", dest)
    assert res.returncode == 2 and "not an ISO 8601 time" in res.stderr


# ---- restore --path -------------------------------------------------------------------


def test_restore_path_brings_the_wal_with_its_database(up: Uploads, tmp_path: Path) -> None:
    paths = {e["path"] for e in up.manifests[0]["metadata"]["files"]}
    assert "reflection.duckdb.wal" in paths  # the live writer's WAL was captured
    dest = tmp_path / "r"
    res = up.cli(
        "restore", "--upload-id", up.ids[0], "--path", "reflection.duckdb", "--dest", str(dest)
    )
    assert res.returncode == 0, res.stderr
    assert set(_tree(dest)) == {"reflection.duckdb", "reflection.duckdb.wal"}
    entries = {e["path"]: e["sha256"] for e in up.manifests[0]["metadata"]["files"]}
    assert all(entries[p] == sha for p, sha in _tree(dest).items())


def test_restore_path_globs_match_the_whole_path(up: Uploads, tmp_path: Path) -> None:
    dest = tmp_path / "r"
    res = up.cli("restore", "--latest", "--path", "*.json", "--path", "*.db", "--dest", str(dest))
    assert res.returncode == 0, res.stderr
    expected = {
        e["path"]
        for e in up.manifests[2]["metadata"]["files"]
        if e["path"].endswith((".json", ".db"))
    }
    assert "sessions/session-1/state.json" in expected  # "*" crosses "/"
    assert set(_tree(dest)) == expected
    assert "restored 6 file(s)" in res.stdout
    # --force into the same directory, another glob: only that file is (re)written
    res = up.cli("restore", "--latest", "--path", "sessions/*-2/*", "--dest", str(dest), "--force")
    assert res.returncode == 0 and "restored 1 file(s)" in res.stdout


def test_a_restore_refused_by_its_destination_writes_nothing(up: Uploads, tmp_path: Path) -> None:
    """A directory where a restored file goes (even with --force), or a file where a
    directory goes (without it), is found before anything is written: no file of the
    upload lands beside the refusal."""
    dest = tmp_path / "r"
    (dest / "reflection.duckdb").mkdir(parents=True)
    res = up.cli("restore", "--latest", "--dest", str(dest), "--force")
    assert _one_line_error(res) == "akoshad: reflection.duckdb in --dest is a directory"
    assert sorted(p.name for p in dest.iterdir()) == ["reflection.duckdb"]
    dest = tmp_path / "s"
    dest.mkdir()
    (dest / "sessions").write_text("a file where a directory goes")
    res = up.cli("restore", "--latest", "--dest", str(dest))  # not empty: needs --force
    assert res.returncode == 1 and "is not empty" in res.stderr
    (dest / "zz").mkdir()  # another way to be not empty, still with --force only
    res = up.cli("restore", "--latest", "--dest", str(dest), "--force")
    assert res.returncode == 0, res.stderr  # --force replaces the file with the directory
    assert (dest / "sessions").is_dir()


def test_restore_path_matching_nothing_fails(up: Uploads, tmp_path: Path) -> None:
    dest = tmp_path / "r"
    res = up.cli(
        "restore", "--latest", "--path", "nope*", "--path", "Reflection.duckdb", "--dest", str(dest)
    )
    line = _one_line_error(res)
    assert "'nope*', 'Reflection.duckdb'" in line and "matches no file" in line
    assert not dest.exists() or not any(dest.iterdir())


# ---- parallel restore against S3 ------------------------------------------------------


@pytest.mark.s3
def test_parallel_restore_is_byte_identical_and_names_a_damaged_file(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    s = S3Setup(tmp_path, s3, system_id)
    make_store(s.store, conversations=200)
    for i in range(20):  # more files than fetch workers
        (s.store / "notes" / f"n{i}.txt").parent.mkdir(exist_ok=True)
        (s.store / "notes" / f"n{i}.txt").write_bytes(os.urandom(1000 + 5000 * i))
    assert s.once().returncode == 0
    (manifest,) = s.manifests()
    entries = {e["path"]: e for e in manifest["metadata"]["files"]}
    dest = tmp_path / "restored"
    s.cli("restore", "--latest", "--dest", str(dest), check=True)
    tree = _tree(dest)
    assert tree == {p: e["sha256"] for p, e in entries.items()}
    res = s.cli("uploads", "--json")
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"systems/{system_id}/")
    assert row["files"] == len(entries) == 28
    assert row["stored_bytes"] == sum(
        o["Size"] for o in listing["Contents"] if not o["Key"].endswith("/owner.json")
    )

    (chunk,) = entries["notes/n19.txt"]["chunks"]  # packed with the other small files
    client = s3.client()
    stored = client.get_object(Bucket=s3.bucket, Key=chunk["key"])["Body"].read()
    start = chunk["offset"] + 1000
    damaged = stored[:start] + bytes(b ^ 0xFF for b in stored[start : start + 1000])
    client.put_object(Bucket=s3.bucket, Key=chunk["key"], Body=damaged + stored[start + 1000 :])
    again = tmp_path / "again"
    res = s.cli("restore", "--latest", "--dest", str(again))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    problem, last = res.stderr.strip().splitlines()
    assert problem.startswith("akoshad: notes/n19.txt: chunk 1 of 1 "), problem
    assert f"{again} holds 27 of the 28 file(s)" in last, last
    # every other file restored (before: the restore stopped at the damaged one)
    restored = _tree(again)
    assert restored.pop(".akoshad-incomplete-restore")  # not the whole upload: marked
    assert restored == {p: sha for p, sha in tree.items() if p != "notes/n19.txt"}
    left = [p.relative_to(again).as_posix() for p in again.rglob("*")]
    assert not [n for n in left if n.startswith(".akoshad-restore-")]


@pytest.mark.s3
def test_uploads_with_a_missing_bucket_is_an_error(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    s = S3Setup(tmp_path, s3, system_id, cloud_bucket="no-such-bucket")
    res = s.cli("uploads")
    line = _one_line_error(res)
    assert "no-such-bucket" in line
    assert "no uploads" not in res.stdout


@pytest.mark.s3
@pytest.mark.parametrize(
    "command",
    [("uploads",), ("verify",), ("restore", "--latest", "--dest", "{dest}"), ("drill",)],
    ids=lambda c: c[0],
)
def test_a_missing_bucket_is_one_line_and_nothing_else(
    tmp_path: Path, s3: WeedServer, system_id: str, command: tuple[str, ...]
) -> None:
    """The target that failed its start is closed too: no 'Unclosed connector' noise after
    the error line (a missing bucket is the first thing a new user may meet)."""
    s = S3Setup(tmp_path, s3, system_id, cloud_bucket="no-such-bucket")
    res = s.cli(*(a.format(dest=tmp_path / "dest") for a in command))
    line = _one_line_error(res)
    assert "no-such-bucket" in line
    assert res.stderr.splitlines() == [line], res.stderr


def test_uploads_lists_a_format_2_upload(tmp_path: Path) -> None:
    from akoshad.restore.listing import upload_rows
    from akoshad.storage.format2 import build_manifest2
    from akoshad.targets.local import LocalTarget
    from tests.format2_store import Store, write_upload
    from tests.integration.test_storage_format2_local import SID, UPLOADS
    from tests.integration.test_storage_format2_local import make_store as make_store2

    root, staging = tmp_path / "data", tmp_path / "staging"
    staging.mkdir(mode=0o700)
    make_store2(root)
    target = LocalTarget(tmp_path / "outbox")

    async def run() -> list[Any]:
        await target.start()
        files = await Store(target, SID, staging).store_tree(root)
        built = build_manifest2(system_id=SID, upload_id=UPLOADS[0], files=files, skipped={})
        assert "index" in built.manifest["metadata"]  # the entries are in index parts
        await write_upload(target, SID, UPLOADS[0], built)
        return await upload_rows(target, SID)

    (row,) = asyncio.run(run())
    assert row.damaged is None
    assert row.files == 251
    assert row.total_size_bytes == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    manifest = tmp_path / "outbox" / "systems" / SID / "uploads" / UPLOADS[0] / "manifest.json"
    # its manifest, and the packs and documents it is the first to reference
    assert row.stored_bytes == _stored_bytes(tmp_path / "outbox" / "systems" / SID)
    assert row.stored_bytes > manifest.stat().st_size


def test_uploads_takes_the_sizes_from_one_listing(tmp_path: Path) -> None:
    """One listing of the system's folder has every object's size (S3's ListObjectsV2
    too): the stored bytes are counted without a HEAD per pack or document."""
    from akoshad.restore.listing import upload_rows
    from akoshad.storage.format2 import build_manifest2
    from akoshad.targets.local import LocalTarget
    from tests.format2_store import Store, write_upload
    from tests.integration.test_storage_format2_local import SID, UPLOADS
    from tests.integration.test_storage_format2_local import make_store as make_store2

    class Counted(LocalTarget):
        heads: list[str] = []

        async def head(self, key: str) -> int | None:
            self.heads.append(key)
            return await super().head(key)

    root, staging = tmp_path / "data", tmp_path / "staging"
    staging.mkdir(mode=0o700)
    make_store2(root)
    target = Counted(tmp_path / "outbox")

    async def run() -> list[Any]:
        await target.start()
        files = await Store(target, SID, staging).store_tree(root)
        built = build_manifest2(system_id=SID, upload_id=UPLOADS[0], files=files, skipped={})
        await write_upload(target, SID, UPLOADS[0], built)
        target.heads.clear()
        return await upload_rows(target, SID)

    (row,) = asyncio.run(run())
    assert row.stored_bytes == _stored_bytes(tmp_path / "outbox" / "systems" / SID)
    assert target.heads == []
