"""A JSON file rewritten in place (truncate, then write) is empty or half written for a
moment: a read that finds it so, and does not parse, looks again before it is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.manifest.facts import Facts
from akoshad.pipeline.capture.files import captured_chunks
from akoshad.pipeline.capture.snapshot import Captured, Snapshotter

WHOLE = b'{"sessions": ["a", "b"], "n": 2}'


def _snap(tmp_path: Path, held: bool, sleep: list[float]) -> Snapshotter:
    (tmp_path / "store").mkdir()
    snap = Snapshotter(tmp_path / "store", tmp_path / "staging", sleep=sleep.append)
    snap.reset_staging()
    snap.memory_max_file = snap.memory_max_file if held else 0  # in memory, or copied
    return snap


def _bytes(res: Captured) -> bytes:
    (f,) = res.files
    return b"".join(c.data for c in captured_chunks(f))


@pytest.mark.parametrize("held", [True, False])
@pytest.mark.parametrize("torn", [b"", WHOLE[:11]])
def test_a_json_caught_mid_rewrite_is_read_again(tmp_path: Path, held: bool, torn: bytes) -> None:
    path = tmp_path / "store" / "state.json"
    naps: list[float] = []

    def writer_finishes(seconds: float) -> None:
        naps.append(seconds)
        path.write_bytes(WHOLE)

    snap = _snap(tmp_path, held, [])
    snap.sleep = writer_finishes
    path.write_bytes(torn)  # truncated, the rest not written yet
    res = snap.capture("state.json")
    assert isinstance(res, Captured)
    assert _bytes(res) == WHOLE and res.files[0].facts == Facts(json_ok=True)
    assert len(naps) == 1


@pytest.mark.parametrize("held", [True, False])
def test_a_json_that_never_parses_is_kept_as_it_is(tmp_path: Path, held: bool) -> None:
    naps: list[float] = []
    snap = _snap(tmp_path, held, naps)
    (tmp_path / "store" / "broken.json").write_bytes(b"{not json")
    (tmp_path / "store" / "notes.txt").write_bytes(b"{not json")
    res = snap.capture("broken.json")
    assert isinstance(res, Captured)
    assert _bytes(res) == b"{not json" and res.files[0].facts == Facts(json_ok=False)
    assert len(naps) == 3 and sum(naps) < 0.5  # three looks more, within half a second
    naps.clear()
    assert isinstance(snap.capture("notes.txt"), Captured) and naps == []  # no JSON: once
