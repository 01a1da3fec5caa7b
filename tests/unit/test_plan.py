"""The upload plan: captures + ledger -> what to send, what to reuse, what leaves."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from akoshad.manifest.facts import Facts
from akoshad.pipeline.capture.snapshot import (
    Captured,
    CapturedFile,
    CaptureResult,
    LiveStat,
    Skipped,
    Vanished,
)
from akoshad.pipeline.plan import (
    attempt_record,
    ledger_row,
    plan_upload,
    resolve_ledger,
    stored_file,
)
from akoshad.storage.refs import ChunkRef
from akoshad.store.db import LedgerEntry, QueueItem
from akoshad.store.records import decode_chunk_ids, encode_chunk_ids

SHA_A = "a" * 64
SHA_B = "b" * 64


def item(path: str) -> QueueItem:
    return QueueItem(path, "modified", 0.0, 0.0, 1, 1, 0.0, "in_flight", None)


def row(path: str, sha: str = SHA_A, group: str | None = None) -> LedgerEntry:
    return LedgerEntry(
        target="local",
        path=path,
        group_path=group or path,
        size=3,
        live=LiveStat(3, 1, 1, 1),
        sha256=sha,
        key=f"systems/s/uploads/u0/{path}",
        name=path,
        stored_size=3,
        compression="none",
        kind="file",
        upload_id="u0",
    )


def cfile(
    path: str, sha: str | None = SHA_A, *, mtime: int = 2, kind: str = "file"
) -> CapturedFile:
    return CapturedFile(
        path=path,
        staged=Path("/staging") / path,
        size=3,
        sha256=sha,
        kind=kind,
        live=LiveStat(3, mtime, mtime, 7),
        mode=0o600,
    )


def test_unchanged_file_is_reused_with_its_new_stat_identity() -> None:
    ledger = {"a.txt": row("a.txt")}
    plan = plan_upload([Captured("a.txt", (cfile("a.txt"),))], [item("a.txt")], ledger)
    assert not plan.changed and plan.send == []
    [reused] = plan.reused
    assert reused.key == ledger["a.txt"].key  # still the earlier object
    assert (reused.live.mtime_ns, reused.live.inode, reused.mode) == (2, 7, 0o600)
    assert [i.path for i in plan.done] == ["a.txt"] and plan.retry == []


def test_a_chmod_makes_an_upload_that_reuses_the_object() -> None:
    ledger = {"a.txt": replace(row("a.txt"), mode=0o640), "b.txt": row("b.txt")}
    plan = plan_upload([Captured("a.txt", (cfile("a.txt"),))], [item("a.txt")], ledger)
    assert plan.changed and plan.send == []  # nothing sent again ...
    [reused] = plan.reused  # ... the earlier object, with the mode the upload records
    assert (reused.key, reused.mode) == (ledger["a.txt"].key, 0o600)


def test_a_row_that_recorded_no_mode_is_not_a_change() -> None:
    ledger = {"a.txt": row("a.txt")}  # an earlier akoshad's row: mode None
    plan = plan_upload([Captured("a.txt", (cfile("a.txt"),))], [item("a.txt")], ledger)
    assert not plan.changed and plan.reused[0].mode == 0o600


def test_changed_file_is_sent_and_untouched_entries_are_kept() -> None:
    ledger = {"a.txt": row("a.txt"), "b.txt": row("b.txt")}
    plan = plan_upload([Captured("a.txt", (cfile("a.txt", SHA_B),))], [item("a.txt")], ledger)
    assert plan.changed
    assert [(g, f.path) for g, f in plan.send] == [("a.txt", "a.txt")]
    assert [e.path for e in plan.kept] == ["b.txt"] and plan.reused == []


def test_without_deduplication_everything_captured_is_sent() -> None:
    ledger = {"a.txt": row("a.txt")}
    plan = plan_upload(
        [Captured("a.txt", (cfile("a.txt"),))], [item("a.txt")], ledger, deduplicate=False
    )
    assert plan.changed and [f.path for _, f in plan.send] == ["a.txt"]


def test_new_file_is_sent() -> None:
    plan = plan_upload([Captured("n.txt", (cfile("n.txt", None),))], [item("n.txt")], {})
    assert plan.changed and [f.path for _, f in plan.send] == ["n.txt"]


def test_vanished_file_leaves_the_ledger_and_is_reported_deleted() -> None:
    ledger = {"a.txt": row("a.txt"), "b.txt": row("b.txt")}
    plan = plan_upload([Vanished("a.txt")], [item("a.txt")], ledger)
    assert plan.changed and plan.removed == ["a.txt"] and plan.deleted == ["a.txt"]
    assert [e.path for e in plan.kept] == ["b.txt"]


def test_vanished_file_never_uploaded_changes_nothing() -> None:
    plan = plan_upload([Vanished("x")], [item("x")], {})
    assert not plan.changed and plan.deleted == [] and [i.path for i in plan.done] == ["x"]


def test_skip_for_good_removes_the_entry_and_says_why() -> None:
    ledger = {"a.txt": row("a.txt")}
    plan = plan_upload([Skipped("a.txt", "permission denied")], [item("a.txt")], ledger)
    assert plan.changed and plan.removed == ["a.txt"] and plan.deleted == []
    assert plan.skipped == {"a.txt": "permission denied"}
    assert [i.path for i in plan.done] == ["a.txt"]


def test_transient_skip_goes_back_to_the_queue_untouched() -> None:
    ledger = {"a.txt": row("a.txt")}
    plan = plan_upload([Skipped("a.txt", "kept changing", retry=True)], [item("a.txt")], ledger)
    assert not plan.changed and plan.removed == [] and plan.done == []
    assert [i.path for i in plan.retry] == ["a.txt"]
    assert plan.retrying == {"a.txt": "kept changing"} and plan.skipped == {}
    assert [e.path for e in plan.kept] == ["a.txt"]


def test_side_file_gone_from_a_group_is_removed() -> None:
    ledger = {
        "r.duckdb": row("r.duckdb", group="r.duckdb"),
        "r.duckdb.wal": row("r.duckdb.wal", group="r.duckdb"),
    }
    cap = Captured(
        "r.duckdb", (cfile("r.duckdb", kind="duckdb"),), refused=(("r.duckdb.wal", "a link"),)
    )
    plan = plan_upload([cap], [item("r.duckdb")], ledger)
    assert plan.changed and plan.removed == ["r.duckdb.wal"] and plan.send == []
    assert [r.path for r in plan.reused] == ["r.duckdb"]
    assert plan.skipped == {"r.duckdb.wal": "a link"}
    assert plan.captured == [cap]


# ---- ledger rows <-> stored files (format 2) ---------------------------------------------
def ref(sha: str, key: str = "systems/s/packs/ab/" + "ab" * 32, offset: int = 0) -> ChunkRef:
    return ChunkRef(sha, 3, key, offset, 3, "none", "none")


def chunked_row(path: str, shas: list[str]) -> LedgerEntry:
    return replace(
        row(path, SHA_B),
        size=3 * len(shas),
        key="",
        name="",
        chunks=encode_chunk_ids((s, 3) for s in shas),
    )


def test_a_chunked_row_is_located_through_the_chunk_table() -> None:
    r = chunked_row("big.duckdb", [SHA_A, SHA_B])
    table = {SHA_A: ref(SHA_A), SHA_B: ref(SHA_B, offset=3)}
    f = stored_file(r, table)
    assert f is not None and f.whole is None
    assert [c.offset for c in f.chunks] == [0, 3] and f.size == 6
    moved = {**table, SHA_B: ref(SHA_B, key="systems/s/packs/cd/" + "cd" * 32)}
    g = stored_file(r, moved)  # a repack moved a chunk: the row follows the table
    assert g is not None and g.chunks[1].key.startswith("systems/s/packs/cd/")


def test_a_row_with_a_chunk_the_table_lost_is_stale() -> None:
    ledger = {
        "a.txt": row("a.txt"),  # a format-1 whole object: always resolvable
        "b.bin": chunked_row("b.bin", [SHA_A]),
        "c.bin": chunked_row("c.bin", [SHA_A, SHA_B]),
    }
    usable, stale = resolve_ledger(ledger, {SHA_A: ref(SHA_A)})
    assert set(usable) == {"a.txt", "b.bin"} and [e.path for e in stale] == ["c.bin"]
    assert stored_file(ledger["c.bin"], {SHA_A: ref(SHA_A)}) is None


def test_a_format_1_row_is_its_whole_object() -> None:
    f = stored_file(row("a.txt"), {})
    assert f is not None and f.whole is not None
    assert f.whole.key == "systems/s/uploads/u0/a.txt" and f.name == "a.txt"


def test_ledger_row_round_trips_both_shapes() -> None:
    live = LiveStat(9, 8, 7, 6)
    table = {SHA_A: ref(SHA_A), SHA_B: ref(SHA_B)}
    chunked = stored_file(chunked_row("big.duckdb", [SHA_A, SHA_B]), table)
    assert chunked is not None
    r = ledger_row("local", chunked, group="big.duckdb", live=live, upload_id="u9")
    assert r.chunk_ids == [(SHA_A, 3), (SHA_B, 3)] and r.key == "" and r.upload_id == "u9"
    assert r.live == LiveStat(9, 8, 7, 6)
    whole = stored_file(row("a.txt"), {})
    assert whole is not None
    w = ledger_row("local", whole, group="a.txt", live=live, upload_id="u9")
    assert w.chunks is None and w.key == "systems/s/uploads/u0/a.txt"
    assert w.upload_id == "u0"  # the upload that holds the object


def test_attempt_record_lists_what_recovery_needs() -> None:
    ledger = {"a.txt": row("a.txt"), "gone.txt": row("gone.txt")}
    plan = plan_upload(
        [Captured("a.txt", (cfile("a.txt"),)), Captured("b.txt", (cfile("b.txt", SHA_B),)),
         Vanished("gone.txt")],
        [item("a.txt"), item("b.txt"), item("gone.txt")],
        ledger,
    )  # fmt: skip
    record = attempt_record(plan)
    assert record["new"] == ["b.txt"] and record["removed"] == ["gone.txt"]
    assert record["live"] == {"a.txt": [3, 2, 2, 7], "b.txt": [3, 2, 2, 7]}
    assert record["groups"] == {"a.txt": "a.txt", "b.txt": "b.txt"}


def test_chunk_ids_column_is_compact_json() -> None:
    """Spelt out directly for hex identities, by ``json`` otherwise: the same text."""
    for ids in (
        [(SHA_A, 5)],
        [(SHA_A, 0), ("0f" * 40, 1 << 40)],
        [],
        [('we"ird\\', 3)],
        [("ABCDEF", 2)],
        [(SHA_A, True)],
    ):
        text = encode_chunk_ids(ids)
        assert text == json.dumps([list(p) for p in ids], separators=(",", ":"))


def test_facts_column_is_compact_sorted_json() -> None:
    for facts in (Facts(json_ok=True), Facts(rows=(("a", 1), ("b", 2))), Facts(json_ok=False)):
        spelt = json.dumps(facts.as_fields(), sort_keys=True, separators=(",", ":"))
        assert facts.to_json() == facts.to_json() == spelt
        assert Facts.from_json(facts.to_json()) == facts
    assert Facts().to_json() == "{}"


def test_chunk_ids_column_is_strict() -> None:
    assert decode_chunk_ids(encode_chunk_ids([(SHA_A, 5)])) == [(SHA_A, 5)]
    for bad in ('{"a": 1}', '[["x"]]', "[[1, 2]]", '[["x", true]]'):
        with pytest.raises(ValueError):
            decode_chunk_ids(bad)


def test_a_file_whose_name_became_a_directory_leaves_when_a_file_below_is_captured() -> None:
    ledger = {"n.json": row("n.json"), "b.txt": row("b.txt")}
    got = [Captured("n.json/inner.txt", (cfile("n.json/inner.txt", None),))]
    plan = plan_upload(got, [item("n.json/inner.txt")], ledger)
    assert plan.changed and plan.removed == ["n.json"] and plan.deleted == ["n.json"]
    assert [e.path for e in plan.kept] == ["b.txt"]
    assert [f.path for _, f in plan.send] == ["n.json/inner.txt"]


def test_files_below_a_path_that_became_a_file_leave_when_it_is_captured() -> None:
    ledger = {"d/a.txt": row("d/a.txt"), "d/e/b.txt": row("d/e/b.txt"), "dd.txt": row("dd.txt")}
    plan = plan_upload([Captured("d", (cfile("d", None),))], [item("d")], ledger)
    assert plan.changed and sorted(plan.removed) == ["d/a.txt", "d/e/b.txt"]
    assert sorted(plan.deleted) == ["d/a.txt", "d/e/b.txt"]
    assert [e.path for e in plan.kept] == ["dd.txt"]


def test_a_displaced_file_of_this_pass_is_decided_once() -> None:
    ledger = {"n.json": row("n.json")}
    got: list[CaptureResult] = [
        Vanished("n.json"),
        Captured("n.json/x", (cfile("n.json/x", None),)),
    ]
    plan = plan_upload(got, [item("n.json"), item("n.json/x")], ledger)
    assert plan.removed == ["n.json"] and plan.deleted == ["n.json"]


# ---- a file named like a side file, backed up on its own while no database bore its name --
def test_a_wal_backed_up_on_its_own_leaves_once_its_database_is_captured_without_it() -> None:
    ledger = {"x.wal": row("x.wal"), "b.txt": row("b.txt")}  # no file x when it was captured
    plan = plan_upload([Captured("x", (cfile("x", None, kind="duckdb"),))], [item("x")], ledger)
    assert plan.removed == ["x.wal"] and [e.path for e in plan.kept] == ["b.txt"]


def test_a_wal_backed_up_on_its_own_becomes_its_database_wal_when_unchanged() -> None:
    ledger = {"x.wal": row("x.wal")}
    files = (cfile("x", SHA_B, kind="duckdb"), cfile("x.wal", kind="duckdb-wal"))
    plan = plan_upload([Captured("x", files)], [item("x")], ledger)
    [wal] = plan.reused
    assert (wal.group_path, wal.kind, wal.key) == ("x", "duckdb-wal", ledger["x.wal"].key)
    assert plan.changed and plan.removed == []


def test_a_side_file_name_beside_a_file_of_another_kind_stays_a_file_of_its_own() -> None:
    """``x.wal`` beside a plain file ``x`` (or a SQLite ``x``) is no side file of it: both
    are sent, and one backed up before stays in the ledger."""
    got: list[CaptureResult] = [Captured("x.wal", (cfile("x.wal"),)), Captured("x", (cfile("x"),))]
    plan = plan_upload(got, [item("x.wal"), item("x")], {})
    assert sorted((g, f.path) for g, f in plan.send) == [("x", "x"), ("x.wal", "x.wal")]
    ledger = {"x.wal": row("x.wal"), "x-wal": row("x-wal")}
    sqlite = Captured("x", (cfile("x", SHA_B, kind="sqlite"),))
    plan = plan_upload([sqlite], [item("x")], ledger)
    assert plan.removed == ["x-wal"] and [e.path for e in plan.kept] == ["x.wal"]


def test_a_side_file_captured_on_its_own_beside_its_database_is_left_to_the_database() -> None:
    files = (cfile("x", SHA_B, kind="duckdb"), cfile("x.wal", kind="duckdb-wal"))
    got: list[CaptureResult] = [Captured("x.wal", (cfile("x.wal"),)), Captured("x", files)]
    plan = plan_upload(got, [item("x.wal"), item("x")], {})
    assert [(g, f.path, f.kind) for g, f in plan.send] == [
        ("x", "x", "duckdb"),
        ("x", "x.wal", "duckdb-wal"),
    ]
    assert sorted(i.path for i in plan.done) == ["x", "x.wal"]
