"""A target pointed at another place (another directory or bucket), or another system id,
with the same state: the next run uploads the whole store there, where before it said
"nothing changed" (exit 0) and later uploads pointed at objects only the old place held."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import yaml

from tests.helpers import (
    akoshad,
    daemon_config,
    manifests,
    start_daemon,
    stop_daemon,
    tree_files,
    wait_for,
)


def _set(config: Path, **changes: object) -> None:
    settings = yaml.safe_load(config.read_text())
    for key, value in changes.items():
        if key == "system_id":
            settings["cloud_sync"]["system_id"] = value
        else:
            settings[key] = value
    config.write_text(yaml.safe_dump(settings))


def _restored(config: Path, env: dict[str, str], dest: Path) -> dict[str, bytes | None]:
    akoshad(
        "restore", "--config", str(config), "--latest", "--dest", str(dest), env=env, check=True
    )
    return tree_files(dest)


def _store(root: Path) -> dict[str, bytes | None]:
    return tree_files(root)


def test_a_new_target_directory_gets_the_whole_store(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "moved")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    assert len(manifests(tmp_path / "outbox", "moved")) == 1
    _set(config, local_target_dir=str(tmp_path / "outbox2"))
    moved = akoshad("run", "--once", "--config", str(config), env=env, check=True)
    assert "another place than the state knew" in moved.stderr
    assert len(manifests(tmp_path / "outbox2", "moved")) == 1
    (tmp_path / "store" / "notes.json").write_text('{"after": "the move"}')
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    # the old place may go: the new one holds all it needs
    for old in (tmp_path / "outbox").rglob("*"):
        if old.is_file():
            old.unlink()
    assert _restored(config, env, tmp_path / "back") == _store(tmp_path / "store")
    verify = akoshad("verify", "--config", str(config), "--all", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_another_system_id_uploads_the_whole_store_under_it(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "first-name")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    _set(config, system_id="second-name")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    assert len(manifests(tmp_path / "outbox", "second-name")) == 1
    (tmp_path / "store" / "notes.json").write_text('{"after": "the rename"}')
    again = akoshad("run", "--once", "--config", str(config), env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(manifests(tmp_path / "outbox", "second-name")) == 2
    assert _restored(config, env, tmp_path / "back") == _store(tmp_path / "store")


def test_the_same_place_keeps_what_the_state_knows(tmp_path: Path) -> None:
    """A path written another way (a trailing slash) is the same place: nothing is sent."""
    config, env = daemon_config(tmp_path, "same")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    _set(config, local_target_dir=str(tmp_path / "outbox") + "/")
    again = akoshad("run", "--once", "--config", str(config), env=env, check=True)
    assert "another place" not in again.stderr
    assert len(manifests(tmp_path / "outbox", "same")) == 1
    con = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        (rows,) = con.execute("SELECT COUNT(*) FROM ledger WHERE target = 'local'").fetchone()
    finally:
        con.close()
    assert rows > 0


def test_an_outbox_moved_with_its_uploads_is_taken_as_it_is(tmp_path: Path) -> None:
    """The outbox moved to another directory, its uploads with it: the ledger is seeded
    from the newest upload there, nothing is sent again, and `verify` finds the ledger and
    that upload in agreement (the seeded upload is this state's last one)."""
    config, env = daemon_config(tmp_path, "carried")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    shutil.move(tmp_path / "outbox", tmp_path / "moved")
    _set(config, local_target_dir=str(tmp_path / "moved"))
    # before any run: verify checks the uploads there, not a ledger of another place
    early = akoshad("verify", "--config", str(config), "--all", env=env)
    assert early.returncode == 0, early.stdout + early.stderr
    assert "knew local as another place" in early.stdout, early.stdout
    again = akoshad("run", "--once", "--config", str(config), env=env, check=True)
    assert "another place than the state knew" in again.stderr
    assert "nothing changed" in again.stderr, again.stderr
    assert len(manifests(tmp_path / "moved", "carried")) == 1
    verify = akoshad("verify", "--config", str(config), "--all", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "no completed upload" not in verify.stdout


def _swapped_for_an_older_copy(tmp: Path, sid: str) -> tuple[Path, dict[str, str], Path]:
    """Two uploads to the outbox, then the outbox swapped for a copy taken after the
    first: (config, env, outbox)."""
    config, env = daemon_config(tmp, sid)
    outbox = tmp / "outbox"
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    shutil.copytree(outbox, tmp / "older")
    (tmp / "store" / "notes.json").write_text('{"only in": "the newer outbox"}')
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    shutil.rmtree(outbox)
    shutil.move(tmp / "older", outbox)
    return config, env, outbox


def test_another_directory_swapped_in_at_the_same_path_is_seen(tmp_path: Path) -> None:
    """The outbox swapped for an older copy at the same path (a disk swapped, a copy
    restored): the last upload this machine made there is gone, so what the state knew is
    forgotten and the ledger seeded from the newest upload there. The next run sends the
    difference (before: "nothing changed", exit 0, then uploads pointing at the missing
    upload's objects); the quick check of an unchanged store does not take the swap for
    its outbox either."""
    config, env, outbox = _swapped_for_an_older_copy(tmp_path, "swapped")
    again = akoshad("run", "--once", "--config", str(config), env=env, check=True)
    assert "no longer holds upload" in again.stderr, again.stderr
    assert "nothing changed" not in again.stderr
    assert len(manifests(outbox, "swapped")) == 2
    assert _restored(config, env, tmp_path / "back") == _store(tmp_path / "store")
    verify = akoshad("verify", "--config", str(config), "--all", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_daemon_started_on_a_moved_outbox_shows_its_last_upload(tmp_path: Path) -> None:
    """A daemon that seeds its ledger from a moved outbox at start shows that upload as
    its target's last success (it read the history before the seed: none, before)."""
    config, env = daemon_config(tmp_path, "shown")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    shutil.move(tmp_path / "outbox", tmp_path / "moved")
    _set(config, local_target_dir=str(tmp_path / "moved"))
    proc = start_daemon(config, env, tmp_path / "d.log")
    try:

        def local() -> dict[str, object] | None:
            res = akoshad("status", "--json", "--config", str(config), env=env, timeout=30)
            if res.returncode not in (0, 1) or not res.stdout.strip():
                return None
            found: dict[str, object] = json.loads(res.stdout)["targets"]["local"]
            return found if found.get("last_success_at") else None

        assert wait_for(local, 60, interval=0.5)
    finally:
        assert stop_daemon(proc) == 0
    assert "another place than the state knew" in (tmp_path / "d.log").read_text()


def test_a_prune_by_hand_on_a_swapped_outbox_forgets_it_as_a_start_does(
    tmp_path: Path,
) -> None:
    """``akoshad prune`` without a daemon on an outbox swapped for an older copy: the last
    upload this machine made there is gone, so the state forgets the old place and seeds
    its ledger from the newest upload there, as a daemon's start does; the prune removes
    nothing the older copy holds, and the next run sends the difference."""
    config, env, outbox = _swapped_for_an_older_copy(tmp_path, "swapped-prune")
    pruned = akoshad("prune", "--config", str(config), env=env)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    state = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        rows = "SELECT outcome FROM uploads ORDER BY upload_id"
        outcomes = [r[0] for r in state.execute(rows)]
    finally:
        state.close()
    # the upload only the newer outbox held is superseded; the older copy's is the last
    assert outcomes == ["completed", "superseded"], outcomes
    again = akoshad("run", "--once", "--config", str(config), env=env, check=True)
    assert "nothing changed" not in again.stderr and "no longer holds" not in again.stderr
    assert len(manifests(outbox, "swapped-prune")) == 2
    assert _restored(config, env, tmp_path / "back") == _store(tmp_path / "store")


def _last_drill(tmp: Path) -> str | None:
    con = sqlite3.connect(tmp / "state" / "state.db")
    try:
        row = con.execute("SELECT value FROM kv WHERE key = 'last_drill'").fetchone()
    finally:
        con.close()
    return None if row is None else str(row[0])


def test_a_drill_by_hand_of_another_place_is_not_recorded_as_this_ones(tmp_path: Path) -> None:
    """A drill by hand of an outbox the state knows as another place passes, but is not
    kept as the state's ``last_drill`` (says so on stderr): that record is of the place
    the state describes, and its next start forgets it. After that start it is kept."""
    config, env = daemon_config(tmp_path, "drilled")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    shutil.move(tmp_path / "outbox", tmp_path / "moved")
    _set(config, local_target_dir=str(tmp_path / "moved"))
    drill = akoshad("drill", "--config", str(config), env=env)
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "not recorded in the state" in drill.stderr, drill.stderr
    assert "knew local as another place" in drill.stderr, drill.stderr
    assert _last_drill(tmp_path) is None
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    drill = akoshad("drill", "--config", str(config), env=env)
    assert drill.returncode == 0 and "not recorded" not in drill.stderr, drill.stderr
    recorded = _last_drill(tmp_path)
    assert recorded is not None and '"ok": true' in recorded, recorded
