"""``restore --dest LINK``: a symlink as the destination itself is refused (one line,
exit 1), never followed; the directories above ``--dest`` are the path the user named and
are resolved as usual."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akoshad.cli import main as cli
from akoshad.errors import RestoreError
from akoshad.restore.destdir import DestError, open_dest
from akoshad.restore.readback import restore_files, restore_upload
from tests.format2_store import MemTarget, Store


async def _stored(tmp_path: Path) -> tuple[MemTarget, Path]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text('{"a": 1}')
    (src / "sub" / "b.txt").write_text("b\n")
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    target = MemTarget()
    await Store(target, "sys", staging).store_tree(src)
    return target, src


@pytest.mark.parametrize("dangling", [False, True])
def test_open_dest_refuses_a_symlink(tmp_path: Path, dangling: bool) -> None:
    real = tmp_path / "real"
    if not dangling:
        real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(DestError, match=r"^--dest .*link is a symlink \(to .*real\)"):
        open_dest(link)
    assert link.is_symlink() and real.exists() is not dangling  # nothing made through it


async def test_restore_into_a_symlinked_dest_is_refused(tmp_path: Path) -> None:
    target, _ = await _stored(tmp_path)
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(RestoreError, match="is a symlink"):
        await restore_upload(target, "sys", "any", link)
    with pytest.raises(DestError, match="is a symlink"):
        await restore_files(target, [], link)
    assert list(real.iterdir()) == []


async def test_a_symlink_above_dest_is_resolved_as_before(tmp_path: Path) -> None:
    """Only ``--dest`` itself is refused: a link among its parents (``/tmp`` on macOS, a
    home on another disk) is part of the path named, and the restore lands beneath it."""
    target, src = await _stored(tmp_path)
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "up").symlink_to(real)
    files = await Store(target, "sys", tmp_path / "staging").store_tree(src)
    assert await restore_files(target, files, tmp_path / "up" / "dest") == len(files)
    assert (real / "dest" / "sub" / "b.txt").read_text() == "b\n"
    assert not (real / "dest").is_symlink()


def test_cli_refuses_a_symlinked_dest_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith(("XDG_", "AKOSHAD_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "outbox").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'store'}\nstate_dir: {tmp_path / 'state'}\n"
        f"local_target_dir: {tmp_path / 'outbox'}\ncloud_sync:\n  system_id: sys\n"
    )
    (tmp_path / "empty").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "empty")
    args = ["restore", "--upload-id", "u1", "--dest", str(link), "--config", str(config)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err == f"akoshad: --dest {link} is a symlink (to {tmp_path / 'empty'}): " + (
        "a restore follows no symlink; name the directory itself\n"
    )
    assert list((tmp_path / "empty").iterdir()) == []
