"""The mark of a restore that has not restored every file (``restore.marker``): made
without writing through a link put in its place, read back bounded, removed; a manifest
path that is the mark's name is not restored over it."""

from __future__ import annotations

import os
from pathlib import Path

from akoshad.restore.marker import MARKER, mark, marked, only_marker, refused, unmark
from akoshad.storage.stored import StoredFile


def _file(path: str) -> StoredFile:
    return StoredFile(path=path, kind="file", size=0, sha256="0" * 64, parts=())


def test_mark_replaces_a_link_and_unmark_removes_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / MARKER).symlink_to(victim)
    assert marked(dest) is None  # a link so named is not a mark
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mark(fd, "20261205T000000000000Z-abcdef")
    finally:
        os.close(fd)
    assert victim.read_text() == "keep"
    line = marked(dest)
    assert line is not None and "upload 20261205T000000000000Z-abcdef" in line
    assert "\n" not in line
    assert only_marker(dest)
    unmark(dest)
    assert not os.path.lexists(dest / MARKER) and marked(dest) is None
    unmark(dest)  # none: nothing to do


def test_a_store_path_named_as_the_mark_is_refused() -> None:
    files = [_file(MARKER), _file(f"sub/{MARKER}"), _file("a.json")]
    out = refused(files)
    assert [f.path for f, _ in out] == [MARKER]
    assert "not restored" in out[0][1]
