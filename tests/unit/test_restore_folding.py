"""A restore into a file system that takes two of the upload's paths for one name (case,
Unicode normalization: APFS, NTFS, an ext4 casefold directory) is refused before anything
is written; it used to land the second file over the first and say every file restored."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from akoshad.errors import RestoreError
from akoshad.restore import folding
from akoshad.restore.destdir import open_dest
from akoshad.restore.readback import restore_files
from tests.format2_store import MemTarget, Store

NFC = unicodedata.normalize("NFC", "café.json")
NFD = unicodedata.normalize("NFD", "café.json")


def test_clashes_are_one_name_once_folded_or_a_file_on_a_directory() -> None:
    paths = ["Notes.txt", "notes.txt", NFC, NFD, "K", "k/x", "Dir/a", "dir/b", "plain"]
    assert folding.clashes(paths) == [(NFD, NFC), ("Notes.txt", "notes.txt"), ("K", "k/x")]
    assert folding.clashes(paths, str.casefold) == [("Notes.txt", "notes.txt"), ("K", "k/x")]
    assert folding.clashes(["a", "b/c", "B/d"]) == []  # two directories meet: both land


def test_a_file_system_that_tells_names_apart_is_asked_once_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    fd = open_dest(tmp_path / "d")
    try:
        assert folding.dest_fold(fd) is None
        assert folding.folded_clash(fd, "d", ["Notes.txt", "notes.txt"]) is None
    finally:
        os.close(fd)
    assert list((tmp_path / "d").iterdir()) == []


async def _restore(tmp_path: Path) -> tuple[int, Path]:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in (("Notes.txt", "upper"), ("notes.txt", "lower"), (NFC, "c"), (NFD, "d")):
        (src / name).write_text(text)
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    target = MemTarget()
    files = await Store(target, "sys", staging).store_tree(src)
    dest = tmp_path / "dest"
    return await restore_files(target, files, dest), dest


async def test_both_land_where_names_are_told_apart(tmp_path: Path) -> None:
    restored, dest = await _restore(tmp_path)
    assert restored == 4 and (dest / "notes.txt").read_text() == "lower"


@pytest.mark.parametrize(
    ("fold", "what", "named"),
    [
        (str.casefold, "case", "'Notes.txt' and 'notes.txt'"),
        (folding.fold_all, "case and Unicode normalization", f"{NFD!a} and {NFC!a}"),
        (lambda p: unicodedata.normalize("NFC", p), "Unicode normalization", ascii(NFD)),
    ],
)
async def test_a_folding_dest_is_refused_before_anything_is_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fold: Callable[[str], str],
    what: str,
    named: str,
) -> None:
    monkeypatch.setattr(folding, "dest_fold", lambda fd: (fold, what))
    with pytest.raises(RestoreError) as err:
        await _restore(tmp_path)
    assert f"ignores {what} in names: " in str(err.value) and named in str(err.value)
    assert "nothing was restored" in str(err.value)
    assert list((tmp_path / "dest").iterdir()) == []
