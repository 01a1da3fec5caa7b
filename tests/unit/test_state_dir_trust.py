"""A state_dir another user can write to: they could plant a symlink as akoshad.lock (the
lock's open truncated and wrote through it), or swap state.db, owner_id, name_keys.json.
akoshad refuses such a state_dir (exit 78, one line), like ssh refuses a shared ~/.ssh,
and never opens its lock through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from akoshad import fastpath
from akoshad.cli.config import state_dir_refusal
from akoshad.errors import ConfigError
from akoshad.private import shared_dir_problem
from akoshad.runtime.wiring import StateLock
from tests.helpers import akoshad, base_env, write_config


def planted(tmp_path: Path, mode: int) -> tuple[Path, Path]:
    """A state_dir of ``mode`` holding ``akoshad.lock`` -> a file outside it."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, state / "akoshad.lock")
    return state, victim


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_state_dir_others_can_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    state, victim = planted(tmp_path, mode)
    with pytest.raises(ConfigError) as info:
        StateLock(state).acquire()
    assert info.value.exit_code == 78
    assert str(info.value) == (
        f"state_dir {state} (mode {mode:04o}) can be written by other users, who could plant "
        f"or replace akoshad's files there; run `chmod 700 {state}` or set state_dir to a "
        "directory only you can write to"
    )
    assert state_dir_refusal(state) == str(info.value)  # config check says the same
    assert victim.read_text() == "precious\n"


def test_a_lock_file_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    state, victim = planted(tmp_path, 0o700)
    with pytest.raises(ConfigError, match=r"akoshad\.lock is a symlink") as info:
        StateLock(state).acquire()
    assert info.value.exit_code == 78
    assert victim.read_text() == "precious\n"


def test_a_parent_others_can_replace_it_in_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    (parent / "state").mkdir(parents=True, mode=0o700)
    parent.chmod(0o777)
    problem = shared_dir_problem("state_dir", parent / "state")
    assert problem is not None and f"the directory above it {parent} (mode 0777" in problem
    parent.chmod(0o1777)  # sticky: others cannot rename ours away
    assert shared_dir_problem("state_dir", parent / "state") is None
    assert shared_dir_problem("state_dir", parent / "new") is None  # made 0700 by akoshad


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    problem = shared_dir_problem("state_dir", state)
    assert problem is not None and problem.startswith(f"state_dir {state} is owned by ")
    assert "(uid 65534), not you" in problem


def test_run_once_and_prune_refuse_a_shared_state_dir(tmp_path: Path) -> None:
    state, victim = planted(tmp_path, 0o777)
    (tmp_path / "store").mkdir()
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(state),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
    )
    for command in (["run", "--once"], ["prune"]):
        proc = akoshad(*command, "--config", str(cfg), env=base_env(tmp_path))
        assert proc.returncode == 78, proc.stderr
        assert proc.stderr.startswith(f"akoshad: state_dir {state} (mode 0777) can be written")
        assert len(proc.stderr.splitlines()) == 1
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in state.iterdir()) == ["akoshad.lock"]


def test_drill_refuses_a_shared_state_dir(tmp_path: Path) -> None:
    # drill ran (exit 0) in a state_dir others could write to: it makes its restore
    # directory there and records its result in state.db
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.txt").write_text("a")
    state = tmp_path / "state"
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(state),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
    )
    env = base_env(tmp_path)
    assert akoshad("run", "--once", "--config", str(cfg), env=env).returncode == 0
    state.chmod(0o777)
    proc = akoshad("drill", "--config", str(cfg), env=env)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.startswith(f"akoshad: state_dir {state} (mode 0777) can be written")
    assert not [p for p in state.iterdir() if p.name.startswith("drill-")]


def test_run_once_writes_no_record_through_a_link_in_a_shared_cache(tmp_path: Path) -> None:
    # the quick check's record was written with a fixed temporary name, through a link:
    # with ~/.cache/akoshad 0777 another user's link there had the file it points at
    # replaced by the record (and a record they wrote would have been believed)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.txt").write_text("a")
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
    )
    env = base_env(tmp_path)
    argv = ["run", "--once", "--config", str(cfg)]
    key = fastpath.inputs_key(argv, env, cfg)
    assert key is not None
    record = fastpath.cache_file(env, key)
    record.parent.mkdir(parents=True)
    record.parent.chmod(0o777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, record.with_name(record.name + ".tmp"))
    assert akoshad(*argv, env=env).returncode == 0
    assert victim.read_text() == "precious\n"
    assert not record.exists()
    record.parent.chmod(0o700)  # private: recorded, and the next run is answered by it
    os.unlink(record.with_name(record.name + ".tmp"))
    (tmp_path / "store" / "b.txt").write_text("b")
    assert akoshad(*argv, env=env).returncode == 0
    assert record.exists() and stat.S_IMODE(record.stat().st_mode) == 0o600
