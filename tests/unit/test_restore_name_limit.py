"""Names longer than --dest's file system takes: the files are told apart before anything
is written, and the looks at what is in the way (a side file's name with its suffix can be
over the limit) take such a name as no file there, instead of raising ENAMETOOLONG."""

from __future__ import annotations

import os
from pathlib import Path

from akoshad.restore.destdir import dest_conflict, remove_stale
from akoshad.restore.name_limit import name_max, overlong
from akoshad.storage.stored import StoredFile


def _file(path: str) -> StoredFile:
    return StoredFile(path=path, kind="file", size=0, sha256="0" * 64, parts=())


def test_overlong_names_the_files_over_the_limit(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        limit = name_max(fd)
    finally:
        os.close(fd)
    assert limit == 255
    files = [_file("a/b.json"), _file("a/" + "x" * 256), _file("é" * 128 + "/c")]  # 256 bytes
    out = overlong(files, limit)
    assert [f.path for f, _ in out] == [files[1].path, files[2].path]
    assert "is 256 bytes long" in out[0][1] and "at most 255 bytes" in out[0][1]
    assert overlong(files, None) == []


def test_a_side_name_too_long_is_nothing_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    db = "d" * 252 + ".db"  # 255 bytes: its side file's name with '-wal' is not
    assert dest_conflict(tmp_path, [f"a/{db}", f"a/{db}-wal"], force=True) is None
    fd = os.open(tmp_path / "a", os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_stale(fd, db + "-wal", f"a/{db}-wal")  # none there: nothing to remove
    finally:
        os.close(fd)
