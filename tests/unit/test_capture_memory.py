"""The pure parts of capturing small files into memory: the budget, the runs handed to
the chunk thread, the JSON facts computed from bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akoshad.fileio import LinkRefused, LiveStat, read_resolved
from akoshad.manifest.facts import Facts, json_facts, json_facts_of
from akoshad.pipeline.capture.files import (
    Captured,
    CapturedFile,
    MemoryBudget,
    Skipped,
    Vanished,
    hop_batches,
)
from akoshad.pipeline.packing import SentFile


def _file(name: str, size: int) -> tuple[str, CapturedFile]:
    live = LiveStat(size, 0, 0, 1)
    return name, CapturedFile(name, Path(name), size, None, "file", live)


def test_budget_takes_gives_and_releases() -> None:
    budget = MemoryBudget(100)
    assert budget.take(60) and not budget.take(41) and budget.take(40)
    budget.give(40)
    held = budget.keep(b"x" * 60)
    assert budget.used == 60 and held.data == b"x" * 60
    budget.release()
    assert held.data is None and budget.used == 0 and budget.take(100)


def test_runs_end_past_the_bytes_or_at_the_count() -> None:
    files = [_file(f"f{i}", 10) for i in range(7)]
    runs = list(hop_batches(files, max_bytes=25, max_files=100))
    assert [len(r) for r in runs] == [3, 3, 1]
    assert [f for r in runs for f in r] == files  # in order, each once
    assert [len(r) for r in hop_batches(files, max_bytes=10**9, max_files=4)] == [4, 3]
    big = [_file("big", 10**9), *files[:2]]
    assert [len(r) for r in hop_batches(big, max_bytes=25, max_files=100)] == [1, 2]
    assert list(hop_batches([], max_bytes=1, max_files=1)) == []


def test_json_facts_from_bytes_match_the_staged_copy(tmp_path: Path) -> None:
    for name, data in [("a.json", b'{"a": 1}'), ("t.JSON", b'{"a": '), ("x.txt", b"{}")]:
        path = tmp_path / name
        path.write_bytes(data)
        assert json_facts_of(name, data) == json_facts(name, path)
    assert json_facts_of("a.json", b"\xff") == Facts(json_ok=False)
    assert json_facts_of("a.json", b"[1]") == Facts(json_ok=True)


def test_a_small_file_is_read_at_once_with_the_open_checks(tmp_path: Path) -> None:
    """``read_resolved`` (one ``os.read`` for a small file) refuses what ``open_resolved``
    refuses: a symlink swapped in, something that is not a regular file, a directory on
    the way that became a link; and reads at most ``limit`` bytes."""
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "a.json"
    f.write_bytes(b"x" * 1000)
    assert read_resolved(f, 1001) == b"x" * 1000
    assert read_resolved(f, 10) == b"x" * 10
    (tmp_path / "link.json").symlink_to(f)
    with pytest.raises(LinkRefused):
        read_resolved(tmp_path / "link.json", 100)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(LinkRefused, match="not a regular file"):
        read_resolved(tmp_path / "fifo", 100)  # never blocks waiting for a writer
    (tmp_path / "d").rename(tmp_path / "e")
    (tmp_path / "d").symlink_to(tmp_path / "e")
    with pytest.raises(LinkRefused, match="became a symlink"):
        read_resolved(f, 100)


def test_the_pass_s_many_small_records_are_slotted(tmp_path: Path) -> None:
    """A pass of 100,000 small files holds a capture, a captured file and a sent file for
    each: slotted, without a ``__dict__`` of ~100 bytes each."""
    f = CapturedFile("a", tmp_path / "a", 1, "0" * 64, "file", LiveStat(1, 2, 3, 4))
    records: list[object] = [f, Captured("a", (f,)), Vanished("a"), Skipped("a", "why")]
    records.append(SentFile("a", f, "0" * 64, ()))
    assert [r for r in records if hasattr(r, "__dict__")] == []
