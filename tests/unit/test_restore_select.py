"""What a restore takes (``--at``, ``--path``) and how many files it fetches at once."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from akoshad.cli.parser import build_parser
from akoshad.restore import parallel
from akoshad.restore.select import (
    SelectError,
    candidates_at,
    databases_without_wal,
    matching_paths,
    parse_at,
    pick_at,
    select_entries,
)

STORE = [
    "reflection.duckdb",
    "reflection.duckdb.wal",
    "knowledge_graph.duckdb",
    "activity.db",
    "sessions/s-1/state.json",
    "sessions/s-2/state.json",
    "a.json",
]


def test_star_crosses_slashes_and_the_whole_path_must_match() -> None:
    assert matching_paths(STORE, ["*.json"]) == {
        "a.json",
        "sessions/s-1/state.json",
        "sessions/s-2/state.json",
    }
    assert matching_paths(STORE, ["sessions/*-2/*"]) == {"sessions/s-2/state.json"}
    assert matching_paths(STORE, ["activity.db"]) == {"activity.db"}
    assert matching_paths(STORE, ["a.jso?", "[ak]*.db"]) == {"a.json", "activity.db"}


def test_a_name_with_glob_characters_given_as_it_is_matches_itself() -> None:
    """``notes [draft].md`` named as listed: '[draft]' alone would be a class of one
    character, and the file was 'matched by no glob'."""
    store = [*STORE, "notes [draft].md", "star*glob?.txt", "notes d.md", "starXglobY.txt"]
    assert matching_paths(store, ["notes [draft].md"]) == {"notes [draft].md", "notes d.md"}
    assert matching_paths(store, ["star*glob?.txt"]) == {"star*glob?.txt", "starXglobY.txt"}
    assert matching_paths(store, ["notes [[]draft].md"]) == {"notes [draft].md"}


def test_a_duckdb_database_brings_its_wal() -> None:
    assert matching_paths(STORE, ["reflection.duckdb"]) == {
        "reflection.duckdb",
        "reflection.duckdb.wal",
    }
    assert matching_paths(STORE, ["knowledge*"]) == {"knowledge_graph.duckdb"}  # no WAL listed
    # and a WAL its database: one without the other would pair two points in time
    assert matching_paths(STORE, ["*.wal"]) == {"reflection.duckdb", "reflection.duckdb.wal"}


def test_no_match_names_every_glob() -> None:
    with pytest.raises(SelectError, match=r"--path 'x\*', 'Reflection.duckdb' matches no file"):
        matching_paths(STORE, ["x*", "Reflection.duckdb"])
    # one glob of several that matches nothing: a typo, not a partial restore
    with pytest.raises(SelectError, match=r"^--path 'state.json' matches no file of the upload$"):
        matching_paths(STORE, ["state.json", "activity.db"])
    folder = r"'sessions' matches no .* \(a directory: use 'sessions/\*'\)"
    with pytest.raises(SelectError, match=folder):
        matching_paths(STORE, ["sessions"])


def test_a_glob_given_as_a_path_is_told_the_store_path() -> None:
    """``--path ./reflection.duckdb`` or the file's absolute path matched nothing with no
    hint: store paths are relative to data_dir, and the line now says which to give."""
    hint = r"\(store paths are relative to data_dir: use '{}'\)$"
    for glob, meant in (
        ("./reflection.duckdb", "reflection.duckdb"),
        ("/home/u/.claude/data/sessions/*", "sessions/*"),
    ):
        with pytest.raises(SelectError, match=hint.format(re.escape(meant))):
            matching_paths(STORE, [glob])
    with pytest.raises(SelectError, match=r"matches no file of the upload$"):
        matching_paths(STORE, ["/tmp/elsewhere/*"])  # '*' alone is no hint


def test_an_empty_path_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["restore", "--latest", "--dest", "d", "--path", ""])
    assert info.value.code == 2


@dataclass(frozen=True)
class _Entry:
    path: str


def test_select_entries_keeps_the_manifest_order() -> None:
    entries = [_Entry(p) for p in STORE]
    assert select_entries(entries, None) == entries
    assert [e.path for e in select_entries(entries, ["*.duckdb"])] == [
        "reflection.duckdb",
        "reflection.duckdb.wal",
        "knowledge_graph.duckdb",
    ]


def test_parse_at_reads_offsets_and_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    import time

    time.tzset()
    try:
        assert parse_at("2026-11-30T10:00:00+01:00") == datetime(2026, 11, 30, 9, tzinfo=UTC)
        assert parse_at("2026-11-30T10:00Z") == datetime(2026, 11, 30, 10, tzinfo=UTC)
        local = parse_at("2026-11-30T10:00")
        assert local == datetime(2026, 11, 30, 4, 30, tzinfo=UTC)
        assert parse_at("2026-11-30") == datetime(2026, 11, 29, 18, 30, tzinfo=UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    with pytest.raises(ValueError):
        parse_at("yesterday")


def test_parse_at_reads_the_end_of_a_day_and_a_lowercase_z() -> None:
    """ISO 8601's ``24:00`` ends a day: with a date alone meaning its 00:00, ``--at
    2026-11-30T24:00`` is how the store as the day ended is asked for, and it was refused as
    "not an ISO 8601 time"; so was RFC 3339's lowercase ``z``."""
    assert parse_at("2026-11-30T24:00Z") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_at("2026-12-31T24:00:00.000+01:00") == datetime(2026, 12, 31, 23, tzinfo=UTC)
    assert parse_at("20261130T2400Z") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_at("2026-11-30 24Z") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_at("2026-11-30T14:05z") == datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    assert parse_at("9999-12-31T24:00Z") == datetime.max.replace(tzinfo=UTC)
    for wrong in ("2026-11-30T24:01Z", "2026-11-30T24:00:01Z", "2026-11-30T25:00Z"):
        with pytest.raises(ValueError):
            parse_at(wrong)


def test_parse_at_refuses_local_times_that_daylight_saving_makes_twice_or_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In Paris 2026-03-29T02:30 never happened (02:00 became 03:00) and 2026-10-25T02:30
    happened twice: either would be read as some other time without a word (the first one
    an hour before any reading of it), so each is refused with the offsets to add."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    import time

    time.tzset()
    try:
        with pytest.raises(ValueError, match=r"happens twice .*\+02:00 or \+01:00"):
            parse_at("2026-10-25T02:30")
        gap = r"does not exist in local time .*: add an offset, \+01:00 .* or \+02:00"
        with pytest.raises(ValueError, match=gap):
            parse_at("2026-03-29T02:30")
        assert parse_at("2026-03-29T02:30+01:00") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
        assert parse_at("2026-03-29T02:30+02:00") == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
        assert parse_at("2026-03-29T01:59") == datetime(2026, 3, 29, 0, 59, tzinfo=UTC)
        assert parse_at("2026-03-29T03:00") == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
        assert parse_at("2026-10-25T02:30+01:00") == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_date_alone_is_its_first_moment_where_the_clocks_jump_at_midnight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In Beirut the clocks go from 00:00 to 01:00 on 2026-03-29: ``--at 2026-03-29`` (no
    time typed) was refused as "2026-03-29T00:00:00 does not exist in local time". A day
    asked as a date starts at its first moment; a time typed in the gap is still refused."""
    import time

    monkeypatch.setenv("TZ", "Asia/Beirut")
    time.tzset()
    try:
        first = datetime(2026, 3, 28, 22, tzinfo=UTC)  # 01:00+03:00, right after the jump
        assert parse_at("2026-03-29") == first
        assert parse_at("2026-03-28T24:00") == first
        with pytest.raises(ValueError, match="does not exist in local time"):
            parse_at("2026-03-29T00:00")
        monkeypatch.setenv("TZ", "America/Havana")  # 00:00-01:00 twice on 2026-11-01
        time.tzset()
        assert parse_at("2026-11-01") == datetime(2026, 11, 1, 4, tzinfo=UTC)  # the first
        with pytest.raises(ValueError, match="happens twice"):
            parse_at("2026-11-01T00:30")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _id(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S%fZ") + "-abc123"


T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def test_pick_at_uses_uploaded_at_and_refuses_a_damaged_manifest_in_range() -> None:
    times = [T0 + timedelta(hours=h) for h in (0, 1, 2, 50)]
    uploads = [_id(t) for t in times]
    manifests: dict[str, Any] = {
        u: {"uploaded_at": t.isoformat()} for u, t in zip(uploads, times, strict=True)
    }
    read: list[str] = []

    async def load(upload_id: str) -> dict[str, Any]:
        read.append(upload_id)
        if upload_id == uploads[2]:
            raise SelectError("damaged")
        return dict(manifests[upload_id])

    def pick(when: datetime) -> str:
        read.clear()
        return asyncio.run(pick_at(uploads, when, load, "system s"))[0]

    assert pick(T0 + timedelta(minutes=30)) == uploads[0]
    assert pick(T0 + timedelta(hours=1)) == uploads[1]  # at counts
    # the damaged one is dated at or before TIME: it may be the one asked for, so no older
    # one is restored in its place (as --latest does not)
    with pytest.raises(SelectError, match=rf"upload {uploads[2]} of system s, perhaps the"):
        pick(T0 + timedelta(hours=2, minutes=5))
    assert uploads[3] not in read  # dated two days after TIME: its manifest is not read
    # dated after TIME (within the margin the id's clock may be off): skipped
    assert pick(T0 + timedelta(hours=2) - timedelta(seconds=1)) == uploads[1]
    assert pick(T0 + timedelta(days=9)) == uploads[3]
    with pytest.raises(SelectError, match="no upload of system s was made at or before"):
        pick(T0 - timedelta(seconds=1))


def test_at_the_edges_of_time_takes_every_upload_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--at 9999-12-31`` ("after everything") and ``--at 0001-01-01`` are times a user
    types; the first made ``restore failed: OverflowError: date value out of range`` (TIME
    plus the id margin), and without an offset both were called "not an ISO 8601 time"
    (the local zone cannot place them)."""
    uploads = [_id(T0), _id(T0 + timedelta(hours=1))]
    manifests = {u: {"uploaded_at": upload_time_of(u)} for u in uploads}

    async def load(upload_id: str) -> dict[str, Any]:
        return manifests[upload_id]

    monkeypatch.setenv("TZ", "America/New_York")
    import time

    time.tzset()
    try:
        for text in ("9999-12-31", "9999-12-31T23:59:59.999999", "9999-12-31T23:59:59+00:00"):
            when = parse_at(text)
            assert asyncio.run(pick_at(uploads, when, load, "system s"))[0] == uploads[1]
        for text in ("0001-01-01", "0001-01-01T00:00+05:00"):
            with pytest.raises(SelectError, match="no upload of system s was made at or before"):
                asyncio.run(pick_at(uploads, parse_at(text), load, "system s"))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def upload_time_of(upload_id: str) -> str:
    return datetime.strptime(upload_id[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC).isoformat()


def test_candidates_keep_ids_without_a_time() -> None:
    uploads = [_id(T0), "legacy-upload", _id(T0 + timedelta(days=5))]
    assert candidates_at(uploads, T0) == ["legacy-upload", _id(T0)]


def test_fetch_all_bounds_workers_and_bytes() -> None:
    sizes = [1, 2, 3, 30, 40, 50, 4, 5, 6, 7, 8, 9] * 3
    live: list[int] = []
    peak = {"n": 0, "weight": 0}
    done: list[int] = []

    async def job(i: int) -> None:
        live.append(i)
        peak["n"] = max(peak["n"], len(live))
        peak["weight"] = max(peak["weight"], sum(min(sizes[j], 32) for j in live))
        await asyncio.sleep(0.001 * (i % 5))
        live.remove(i)
        done.append(i)

    async def run() -> None:
        old = parallel.FILE_WEIGHT
        parallel.FILE_WEIGHT = 32
        try:
            await parallel.fetch_all(
                list(range(len(sizes))), job, lambda i: sizes[i], workers=4, budget=64
            )
        finally:
            parallel.FILE_WEIGHT = old

    asyncio.run(run())
    assert sorted(done) == list(range(len(sizes)))
    # parallel, and never more than the workers (a large unit may wait for its share)
    assert 3 <= peak["n"] <= 4
    assert peak["weight"] <= 64  # two large files at most


def test_fetch_all_lands_small_units_while_large_ones_stream() -> None:
    """The smallest units do not wait for every large one: some workers take them first,
    within a share of the budget the large ones leave, and the budget still holds. (Each
    large unit here waits, up to a second, for the small ones to be done.)"""
    sizes = [40] * 6 + [1] * 6
    live: list[int] = []
    done: list[int] = []
    peak = {"weight": 0}

    async def job(i: int, smalls_done: asyncio.Event) -> None:
        live.append(i)
        peak["weight"] = max(peak["weight"], sum(min(sizes[j], 32) for j in live))
        if sizes[i] == 40:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(smalls_done.wait(), 1)
        else:
            await asyncio.sleep(0)
        live.remove(i)
        done.append(sizes[i])
        if done.count(1) == 6:
            smalls_done.set()

    async def run() -> None:
        old = parallel.FILE_WEIGHT
        parallel.FILE_WEIGHT = 32
        smalls_done = asyncio.Event()
        try:
            await parallel.fetch_all(
                list(range(len(sizes))),
                lambda i: job(i, smalls_done),
                lambda i: sizes[i],
                workers=4,
                budget=64,
            )
        finally:
            parallel.FILE_WEIGHT = old

    asyncio.run(run())
    assert done == [1] * 6 + [40] * 6  # the small ones all landed before the first large
    assert peak["weight"] <= 64


def test_fetch_all_stops_and_raises_the_first_failure_in_manifest_order() -> None:
    started: list[int] = []

    async def job(i: int) -> None:
        started.append(i)
        await asyncio.sleep(0.01 if i == 3 else 0)
        if i in (3, 5):
            raise ValueError(f"bad {i}")

    entries = list(range(40))
    with pytest.raises(ValueError, match="bad 3"):
        asyncio.run(parallel.fetch_all(entries, job, lambda i: 100, workers=2))
    assert len(started) < len(entries)  # no new file after a failure


def test_read_ahead_keeps_order_and_errors_and_ends_its_reader() -> None:
    read: list[int] = []

    async def source(fail: bool) -> AsyncIterator[bytes]:
        for i in range(10):
            read.append(i)
            yield bytes([i])
        if fail:
            raise KeyError("gone")

    async def run() -> None:
        got = [p async for p in parallel.read_ahead(source(False), depth=2)]
        assert got == [bytes([i]) for i in range(10)]
        got.clear()
        with pytest.raises(KeyError):
            async for piece in parallel.read_ahead(source(True), depth=2):
                got.append(piece)
        assert len(got) == 10  # every piece before the error
        read.clear()
        chunks = parallel.read_ahead(source(False), depth=2)
        async for _ in chunks:
            break
        await chunks.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
        assert len(read) <= 4  # read at most depth ahead, then stopped
        assert {t.get_coro().__name__ for t in asyncio.all_tasks()} == {"run"}  # type: ignore[union-attr]

    asyncio.run(run())


@dataclass(frozen=True)
class _KindEntry:
    path: str
    kind: str


def test_a_duckdb_database_of_any_name_brings_its_wal() -> None:
    """DuckDB is told by its header, not its name: ``kg.db`` is captured with
    ``kg.db.wal`` (kind ``duckdb-wal``), and ``--path kg.db`` must bring the WAL (its
    last commits), as a restore of everything would; a WAL-less database is known too."""
    entries = [
        _KindEntry("kg.db", "duckdb"),
        _KindEntry("kg.db.wal", "duckdb-wal"),
        _KindEntry("other.db", "duckdb"),
        _KindEntry("activity.db", "sqlite"),
        _KindEntry("activity.db.wal", "file"),
    ]
    assert [e.path for e in select_entries(entries, ["kg.db"])] == ["kg.db", "kg.db.wal"]
    assert [e.path for e in select_entries(entries, ["activity.db"])] == ["activity.db"]
    assert databases_without_wal(entries) == {"other.db"}
