"""An ``include`` glob that selects no file while others do (a typo, a path not relative
to data_dir): what it names was never backed up while every run reported a success. It is
now a warning in ``config check``, at each reconcile that finds it, and in every
``run --once`` (no quick no-change answer is recorded that would skip it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from akoshad.pipeline.storefiles import PathFilter
from tests.helpers import (
    akoshad,
    base_env,
    daemon_config,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)

TYPO = "knowlege_graph.duckdb"


def test_idle_includes_are_the_globs_that_select_no_file() -> None:
    flt = PathFilter(("*.json", "sessions", TYPO, "/abs/notes.json"), ())
    assert flt.idle_includes(["notes.json", "sessions/a.json"]) == [TYPO, "/abs/notes.json"]
    assert PathFilter().idle_includes(["notes.json"]) == []


def test_an_include_typo_is_a_warning_in_config_check_and_every_run_once(
    tmp_path: Path,
) -> None:
    config, env = daemon_config(tmp_path, "typo", include=["reflection.duckdb", TYPO])
    said = f"include '{TYPO}' selects no file in data_dir {tmp_path / 'store'}"

    check = akoshad("config", "check", "--config", str(config), env=env)
    assert check.returncode == 0, check.stderr
    assert f"warning: {said}" in check.stdout

    for _ in range(2):  # the second run would be answered by the quick check
        run = akoshad("run", "--once", "--config", str(config), env=env)
        assert run.returncode == 0, run.stderr
        assert said in run.stderr, run.stderr


def test_no_warning_when_every_include_selects_a_file(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "typo", include=["reflection.duckdb", "*.db"])
    check = akoshad("config", "check", "--config", str(config), env=env)
    assert check.returncode == 0 and "selects no file" not in check.stdout
    run = akoshad("run", "--once", "--config", str(config), env=env)
    assert run.returncode == 0 and "selects no file" not in run.stderr


def test_run_once_of_a_missing_data_dir_still_says_so(tmp_path: Path) -> None:
    """The record's check of the include globs reads the daemon's feed, which a run that
    stops before the walk (no data_dir) never made: it is exit 1 with its own line."""
    config, env = daemon_config(tmp_path, "typo", store=False, include=["reflection.duckdb"])
    run = akoshad("run", "--once", "--config", str(config), env=env)
    assert run.returncode == 1
    assert f"data_dir {tmp_path / 'store'} does not exist: nothing is backed up" in run.stderr
    assert "AttributeError" not in run.stderr


@pytest.mark.parametrize(
    ("name", "glob", "hint"),
    [
        ("exclude", "{store}/secret.json", "give 'secret.json'"),
        ("exclude", "./sessions/*", "give 'sessions/*'"),
        ("include", "../other/reflection.duckdb", "it names no path under data_dir"),
        ("include", "/etc/passwd", "it names no path under data_dir"),
    ],
)
def test_a_glob_no_store_path_can_match_is_refused(
    tmp_path: Path, name: str, glob: str, hint: str
) -> None:
    """Store paths are relative to data_dir: ``exclude: [/abs/secret.json]`` left out
    nothing (the file uploaded) with 'configuration ok'; it is now exit 78, one line."""
    store = tmp_path / "store"
    pattern = glob.format(store=store)
    config = write_config(tmp_path / "c.yaml", data_dir=str(store), **{name: ["*.x", pattern]})
    check = akoshad("config", "check", "--config", str(config), env=base_env(tmp_path))
    assert check.returncode == 78, check.stdout
    assert check.stderr.strip() == (
        f"akoshad: invalid configuration: configuration: {name}[1] {pattern!r} can match no "
        f"file: globs are relative to data_dir {store} ({hint}) (from file {config})"
    )


def test_globs_that_may_match_are_taken(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        exclude=["~$lock.docx", "*/cache/", "sessions/**"],
        include=["*"],
    )
    check = akoshad("config", "check", "--config", str(config), env=base_env(tmp_path))
    assert check.returncode == 0, check.stderr


def test_the_daemons_status_warns_of_an_include_typo(tmp_path: Path) -> None:
    """A daemon said it once in its log at start; ``akoshad status`` (and its JSON
    ``warnings``) now says it while it holds (``--check`` stays healthy: it may be a file
    not made yet)."""
    config, env = daemon_config(tmp_path, "typo", include=["reflection.duckdb", TYPO])
    proc = start_daemon(config, env, tmp_path / "d.log")
    try:

        def warned() -> dict[str, Any] | None:
            st = akoshad("status", "--json", "--config", str(config), env=env)
            if st.returncode != 0:
                return None
            got: dict[str, Any] = json.loads(st.stdout)
            return got if any(TYPO in w for w in got["warnings"]) else None

        status = wait_for(warned, 60)
        assert status["state"] != "degraded"
    finally:
        assert stop_daemon(proc) == 0


def test_an_exclude_that_leaves_out_no_file_is_a_note_in_config_check(tmp_path: Path) -> None:
    """``exclude: [activity.dbb]`` (meant: activity.db) left the file in every upload with
    'configuration ok' and no word; config check now notes the glob that leaves out nothing."""
    config, env = daemon_config(tmp_path, "typo", exclude=["activity.dbb", "*.json"])
    check = akoshad("config", "check", "--config", str(config), env=env)
    assert check.returncode == 0, check.stderr
    notes = [line for line in check.stdout.splitlines() if "leaves out no file" in line]
    assert notes == [
        f"note: exclude 'activity.dbb' leaves out no file in data_dir {tmp_path / 'store'} now "
        "(a typo? what it is meant to leave out would be uploaded)"
    ]
