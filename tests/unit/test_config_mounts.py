"""A place of akoshad's own shown inside data_dir through a mount (mountinfo given)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akoshad.config import load_settings
from akoshad.config.mounts import mounted_inside, parse_mountinfo
from akoshad.errors import ConfigError

ROOT = "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"


def test_a_bind_mount_showing_the_state_inside_data_dir_is_refused() -> None:
    """`mount --bind /srv/ak /srv/ak/store/loop` (state_dir /srv/ak/state): config check
    said 'configuration ok', and the daemon backed up its own outbox and state, each
    upload a change for the next (66 uploads in 12 s, without end)."""
    text = ROOT + "90 22 253:0 /srv/ak /srv/ak/store/loop rw,relatime shared:1 - ext4 /dev/vda rw\n"
    own = {"state_dir": Path("/srv/ak/state"), "local_target_dir": Path("/srv/out")}
    problem = mounted_inside(Path("/srv/ak/store"), own, parse_mountinfo(text))
    assert problem is not None
    assert problem.startswith(
        "state_dir /srv/ak/state shows inside data_dir /srv/ak/store through the mount at "
        "/srv/ak/store/loop: the daemon would back up its own files forever"
    )


def test_mounts_that_show_none_of_its_places_are_fine() -> None:
    text = (
        ROOT
        + "90 22 253:0 /data/other /srv/ak/store/other rw - ext4 /dev/vda rw\n"
        + "91 22 0:40 / /srv/ak/store/tmp rw - tmpfs tmpfs rw\n"
        + "92 22 0:41 / /srv/ak/state rw - tmpfs tmpfs rw\n"  # the state on its own fs
        + "93 22 253:0 /srv/ak/state /mnt/elsewhere rw - ext4 /dev/vda rw\n"
    )
    own = {"state_dir": Path("/srv/ak/state"), "log_file": None}
    assert mounted_inside(Path("/srv/ak/store"), own, parse_mountinfo(text)) is None


def test_a_mount_point_with_a_space_is_read() -> None:
    text = ROOT + "90 22 253:0 /home/u /home/u/my\\040store/x rw - ext4 /dev/vda rw\n"
    own = {"local_target_dir": Path("/home/u/outbox")}
    problem = mounted_inside(Path("/home/u/my store"), own, parse_mountinfo(text))
    assert problem is not None and "the mount at /home/u/my store/x" in problem


def test_the_configuration_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `config check` and `run` load: refused (exit 78), naming the mount."""
    import akoshad.config.mounts as mounts_mod

    top = os.path.realpath(tmp_path)
    info = tmp_path / "mountinfo"
    info.write_text(ROOT + f"90 22 253:0 {top} {top}/store/loop rw - ext4 /dev/vda rw\n")
    monkeypatch.setattr(mounts_mod, "MOUNTINFO", info)
    (tmp_path / "store" / "loop").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"shows inside data_dir .* through the mount at"):
        load_settings(
            None,
            overrides={
                "data_dir": str(tmp_path / "store"),
                "state_dir": str(tmp_path / "state"),
                "local_target_dir": str(tmp_path / "outbox"),
            },
            environ={"HOME": str(tmp_path)},
        )
