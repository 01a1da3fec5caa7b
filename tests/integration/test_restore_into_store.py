"""A restore into a directory inside ``data_dir`` warns: the daemon would back the
restored copy up with the store, a second copy in every upload from then on. Into
``data_dir`` itself (the store brought back) it does not."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import akoshad, daemon_config


def test_a_dest_inside_the_store_is_warned_about(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "inside")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    store = tmp_path / "store"
    nested = store / "restored"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(nested), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        f"akoshad: warning: --dest {nested} is inside data_dir {store}: the daemon will back "
        "the restored copy up with the store (restore elsewhere, or into data_dir itself "
        "to bring the store back)\n"
    )
    args = ["--latest", "--dest", str(store), "--force"]
    proc = akoshad("restore", "--config", str(config), *args, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    args = ["--latest", "--dest", str(tmp_path / "back")]
    proc = akoshad("restore", "--config", str(config), *args, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
