"""The coalescing table, every cell, and the timing rules of the debouncer."""

from __future__ import annotations

import itertools

import pytest

from akoshad.pipeline.debounce import COMBINE, Debouncer

KINDS = ("added", "modified", "deleted")

# Every cell of the combine table, written out so a change to the table must change this.
EXPECTED = {
    ("added", "added"): "added",
    ("added", "modified"): "added",
    ("added", "deleted"): "deleted",
    ("modified", "added"): "modified",
    ("modified", "modified"): "modified",
    ("modified", "deleted"): "deleted",
    ("deleted", "added"): "modified",
    ("deleted", "modified"): "modified",
    ("deleted", "deleted"): "deleted",
}


def test_table_is_complete() -> None:
    assert set(COMBINE) == set(itertools.product(KINDS, KINDS))


@pytest.mark.parametrize(("first", "second"), list(itertools.product(KINDS, KINDS)))
def test_every_cell(first: str, second: str) -> None:
    d = Debouncer(quiet=2, max_delay=60)
    d.touch("a", first, 0.0)  # type: ignore[arg-type]
    d.touch("a", second, 1.0)  # type: ignore[arg-type]
    assert d.due(2.9) == []
    assert d.due(3.0) == [("a", EXPECTED[(first, second)])]
    assert len(d) == 0


def test_create_then_quiet() -> None:
    d = Debouncer(2, 60)
    d.touch("new.json", "added", 10.0)
    assert d.next_deadline() == 12.0
    assert d.due(11.99) == []
    assert d.due(12.0) == [("new.json", "added")]


def test_modify_extends_quiet_window() -> None:
    d = Debouncer(2, 60)
    d.touch("x", "modified", 0.0)
    d.touch("x", "modified", 1.5)
    assert d.due(2.0) == []
    assert d.next_deadline() == 3.5
    assert d.due(3.5) == [("x", "modified")]


def test_delete_released_as_delete() -> None:
    d = Debouncer(2, 60)
    d.touch("gone", "deleted", 0.0)
    assert d.due(2.0) == [("gone", "deleted")]


def test_rename_is_two_paths() -> None:
    d = Debouncer(2, 60)
    d.touch("old.json", "deleted", 0.0)
    d.touch("new.json", "added", 0.0)
    assert sorted(d.due(2.0)) == [("new.json", "added"), ("old.json", "deleted")]


def test_modify_after_release_starts_new_window() -> None:
    d = Debouncer(2, 60)
    d.touch("x", "added", 0.0)
    assert d.due(2.0) == [("x", "added")]
    d.touch("x", "modified", 2.5)
    assert d.due(4.0) == []
    assert d.due(4.5) == [("x", "modified")]


def test_burst_across_max_delay_is_released() -> None:
    d = Debouncer(2, 10)
    t = 0.0
    released = []
    while t < 25:
        d.touch("busy.duckdb", "modified", t)
        released += [(t, p) for p, _ in d.due(t)]
        t += 0.5
    # never quiet for 2 s, still released every max_delay
    assert [p for _, p in released] == ["busy.duckdb", "busy.duckdb"]
    assert released[0][0] == 10.0
    assert released[1][0] == 20.5  # new window opened at 10.5


def test_max_delay_counts_from_first_event() -> None:
    d = Debouncer(5, 6)
    d.touch("x", "modified", 0.0)
    d.touch("x", "modified", 4.0)
    assert d.next_deadline() == 6.0


def test_oldest_first_and_independent_paths() -> None:
    d = Debouncer(1, 60)
    d.touch("b", "modified", 0.0)
    d.touch("a", "modified", 0.5)
    d.touch("c", "modified", 5.0)
    assert d.due(1.5) == [("b", "modified"), ("a", "modified")]
    assert d.paths() == ["c"]


def test_zero_quiet_releases_immediately() -> None:
    d = Debouncer(0, 0)
    d.touch("x", "added", 3.0)
    assert d.due(3.0) == [("x", "added")]


def test_flush_releases_all() -> None:
    d = Debouncer(2, 60)
    d.touch("a", "added", 0.0)
    d.touch("b", "deleted", 1.0)
    assert d.flush() == [("a", "added"), ("b", "deleted")]
    assert d.next_deadline() is None


def test_invalid_windows() -> None:
    with pytest.raises(ValueError):
        Debouncer(5, 1)
    with pytest.raises(ValueError):
        Debouncer(-1, 1)
