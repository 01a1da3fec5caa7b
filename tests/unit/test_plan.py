"""The upload plan: captures + ledger -> what to send, what to reuse, what leaves."""

from __future__ import annotations

from pathlib import Path

from akoshad.pipeline.capture.snapshot import (
    Captured,
    CapturedFile,
    LiveStat,
    Skipped,
    Vanished,
)
from akoshad.pipeline.plan import plan_upload
from akoshad.store.db import LedgerEntry, QueueItem

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
        live_size=3,
        mtime_ns=1,
        ctime_ns=1,
        inode=1,
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
    assert (reused.mtime_ns, reused.inode, reused.mode) == (2, 7, 0o600)
    assert [i.path for i in plan.done] == ["a.txt"] and plan.retry == []


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
