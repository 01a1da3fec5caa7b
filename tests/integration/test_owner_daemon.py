"""One writer per system id, as users meet it: two state directories (two machines) sharing
one local outbox and one ``system_id``, subprocess runs of ``akoshad`` throughout."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import akoshad, base_env, manifests, start_daemon, stop_daemon, wait_for
from tests.helpers import write_config as _write
from tests.storegen import make_store

SYSTEM = "shared-box"
FORMAT1 = Path(__file__).resolve().parents[1] / "data" / "format1"
HOST = socket.gethostname()


class Machine:
    """One state directory (one machine) over the shared store and outbox."""

    def __init__(self, tmp: Path, name: str, system_id: str = SYSTEM, **extra: Any) -> None:
        self.tmp = tmp
        self.name = name
        self.state = tmp / f"state-{name}"
        self.sock = tmp / f"{name}.sock"
        self.env = base_env(tmp / "home")
        self.config = _write(
            tmp / f"{name}.yaml",
            data_dir=extra.pop("data_dir", str(tmp / "store")),
            state_dir=str(self.state),
            local_target_dir=str(tmp / "outbox"),
            socket_path=str(self.sock),
            debounce_seconds=0.2,
            max_delay_seconds=2,
            cloud_sync={"system_id": system_id},
            **extra,
        )

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(self.config), env=self.env, check=check)

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.cli("status", "--json", check=True).stdout))

    def owner_id(self) -> str:
        return (self.state / "owner_id").read_text().strip()


def owner_record(tmp: Path, system_id: str = SYSTEM) -> dict[str, Any]:
    return dict(json.loads((tmp / "outbox" / "systems" / system_id / "owner.json").read_text()))


def change(tmp: Path, n: int) -> None:
    (tmp / "store" / "notes.txt").write_text(f"change {n}\n")


def test_second_state_is_refused_and_takeover_hands_the_id_over(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    a, b = Machine(tmp_path, "a"), Machine(tmp_path, "b")
    first = a.cli("run", "--once")
    assert first.returncode == 0, first.stderr
    record = owner_record(tmp_path)
    assert record["owner_id"] == a.owner_id() and record["host"] == HOST
    assert record["lease"]["how"] == "claim"
    uploads = len(manifests(tmp_path / "outbox", SYSTEM))
    assert uploads == 1

    refused = b.cli("run", "--once")
    assert refused.returncode == 1
    assert f"owned by another akoshad state on this host ('{HOST}'" in refused.stderr
    assert "akoshad takeover" in refused.stderr and "Traceback" not in refused.stderr
    assert len(manifests(tmp_path / "outbox", SYSTEM)) == uploads  # nothing uploaded

    log = tmp_path / "b.log"
    proc = start_daemon(b.config, b.env, log)
    try:
        wait_for(b.sock.exists, 30)
        st = wait_for(lambda: (s := b.status())["state"] == "degraded" and s, 30)
        local = st["targets"]["local"]
        assert local["available"] is False and HOST in local["last_error"]
        assert "akoshad takeover" in local["last_error"]
        assert st["lease"]["host"] == HOST and st["lease"]["ours"] is False
        assert b.cli("status", "--check").returncode == 1
        shown = b.cli("status", check=True).stdout.splitlines()
        down = next(i for i, line in enumerate(shown) if line.startswith("  local  DOWN"))
        assert shown[down] == "  local  DOWN primary", shown  # the error on a line of its own
        assert shown[down + 1].startswith(f"         error: system_id '{SYSTEM}' is owned by")
        change(tmp_path, 1)
        sync = b.cli("sync", "--wait", "--json")
        assert sync.returncode == 1 and HOST in json.loads(sync.stdout)["passes"][0]["error"]
        assert len(manifests(tmp_path / "outbox", SYSTEM)) == uploads

        over = b.cli("takeover", "--json")  # through the running daemon
        assert over.returncode == 0, over.stderr
        assert json.loads(over.stdout)["previous_host"] == HOST
        assert owner_record(tmp_path)["owner_id"] == b.owner_id()
        assert owner_record(tmp_path)["lease"]["how"] == "takeover"
        st = wait_for(lambda: (s := b.status())["state"] == "idle" and s, 30)
        assert st["lease"]["ours"] is True and st["targets"]["local"]["available"] is True
        wait_for(lambda: len(manifests(tmp_path / "outbox", SYSTEM)) == uploads + 1, 30)
        newest = manifests(tmp_path / "outbox", SYSTEM)[-1]
        assert "notes.txt" in {f["path"] for f in newest["metadata"]["files"]}
    finally:
        assert stop_daemon(proc) == 0
    assert "Traceback" not in log.read_text()

    change(tmp_path, 2)  # (an unchanged store would take run --once's quick exit)
    now_refused = a.cli("run", "--once")
    assert now_refused.returncode == 1 and "akoshad takeover" in now_refused.stderr
    assert len(manifests(tmp_path / "outbox", SYSTEM)) == uploads + 1

    back = a.cli("takeover")  # no daemon on a's state: done here
    assert back.returncode == 0, back.stderr
    assert f"taken over from {HOST}" in back.stdout
    assert owner_record(tmp_path)["owner_id"] == a.owner_id()
    again = a.cli("run", "--once")
    assert again.returncode == 0, again.stderr
    assert len(manifests(tmp_path / "outbox", SYSTEM)) == uploads + 2
    assert a.cli("verify", "--all").returncode == 0
    restored = tmp_path / "restored"
    a.cli("restore", "--latest", "--dest", str(restored), check=True)
    assert (restored / "notes.txt").read_text() == "change 2\n"
    assert a.cli("takeover").stdout.startswith("this machine")  # already the owner: fine


def test_status_says_when_the_owner_record_is_damaged(tmp_path: Path) -> None:
    """owner.json damaged under a running owner (found by the prune's forced check):
    status kept saying "owner this machine" (before), and an upload within the minute the
    cache lasted still went up. Now status says the record is unreadable, why, and that
    nothing is uploaded or pruned, and indeed nothing is; a takeover makes it whole."""
    make_store(tmp_path / "store")
    a = Machine(tmp_path, "a")
    log = tmp_path / "a.log"
    proc = start_daemon(a.config, a.env, log)
    try:
        wait_for(lambda: a.sock.exists() and a.status()["state"] == "idle", 60)
        wait_for(lambda: manifests(tmp_path / "outbox", SYSTEM), 60)
        assert a.status()["lease"]["ours"] is True
        uploads = len(manifests(tmp_path / "outbox", SYSTEM))
        (tmp_path / "outbox" / "systems" / SYSTEM / "owner.json").write_text("{")
        pruned = a.cli("prune", "--json")
        assert pruned.returncode == 1, pruned.stdout + pruned.stderr
        lease = a.status()["lease"]
        assert lease["ours"] is None and lease["host"] is None, lease
        assert lease["unreadable"].startswith("the owner record is not JSON"), lease
        shown = a.cli("status").stdout.splitlines()
        (line,) = [x for x in shown if x.startswith("owner ")]
        assert line.startswith("owner      UNREADABLE (nothing is uploaded or pruned"), line
        assert "the owner record is not JSON (run `akoshad takeover`" in line
        change(tmp_path, 1)
        sync = a.cli("sync", "--wait", "--json")
        assert sync.returncode == 1, sync.stdout
        assert "the owner record is not JSON" in json.loads(sync.stdout)["passes"][0]["error"]
        assert len(manifests(tmp_path / "outbox", SYSTEM)) == uploads

        assert a.cli("takeover").returncode == 0
        wait_for(lambda: len(manifests(tmp_path / "outbox", SYSTEM)) == uploads + 1, 30)
        lease = a.status()["lease"]
        assert lease["ours"] is True and lease["unreadable"] is None, lease
    finally:
        assert stop_daemon(proc) == 0
    assert "Traceback" not in log.read_text()


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_a_legacy_outbox_is_claimed_by_its_first_writer_and_still_restores(
    tmp_path: Path,
) -> None:
    expected = json.loads((FORMAT1 / "expected.json").read_text())
    system_id = expected["system_id"]
    shutil.copytree(FORMAT1 / "outbox", tmp_path / "outbox")
    a, b = Machine(tmp_path, "a", system_id), Machine(tmp_path, "b", system_id)
    a.cli("restore", "--latest", "--dest", str(tmp_path / "store"), check=True)
    assert not (tmp_path / "outbox" / "systems" / system_id / "owner.json").exists()

    first = a.cli("run", "--once")
    assert first.returncode == 0, first.stderr
    record = owner_record(tmp_path, system_id)
    assert record["owner_id"] == a.owner_id() and record["lease"]["how"] == "legacy"
    refused = b.cli("run", "--once")
    assert refused.returncode == 1 and HOST in refused.stderr

    assert a.cli("verify", "--all").returncode == 0
    for upload_id, files in expected["uploads"].items():
        dest = tmp_path / f"restored-{upload_id}"
        a.cli("restore", "--upload-id", upload_id, "--dest", str(dest), check=True)
        assert _hashes(dest) == files


def _vanished_is_gone(func: Any, path: str, exc_info: Any) -> None:
    """``shutil.rmtree``'s error handler: an entry removed meanwhile is gone, as asked."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def test_a_state_dir_removed_under_the_daemon_stops_it_and_the_restart_still_owns(
    tmp_path: Path,
) -> None:
    """Before, the daemon went on in files no longer there (its lock gone: a second run on
    the directory was let in) and its next start was another machine, refused as not the
    owner until someone ran takeover. It now stops with exit 1 saying why, its owner id
    written there again: the restart (a service manager's) still owns the system id."""
    make_store(tmp_path / "store")
    a = Machine(tmp_path, "a")
    log = tmp_path / "a.log"
    proc = start_daemon(a.config, a.env, log)
    try:
        wait_for(lambda: manifests(tmp_path / "outbox", SYSTEM), 60)
        owner_id = a.owner_id()
        shutil.rmtree(a.state, onerror=_vanished_is_gone)  # the daemon's temp files come and go
        assert proc.wait(30) == 1
    finally:
        stop_daemon(proc)
    said = log.read_text()
    assert f"state_dir {a.state} was removed while akoshad ran" in said, said
    assert "owner id is written there again" in said and "Traceback" not in said
    assert a.owner_id() == owner_id
    change(tmp_path, 1)
    again = a.cli("run", "--once")
    assert again.returncode == 0, again.stderr
    assert owner_record(tmp_path)["owner_id"] == owner_id
    assert len(manifests(tmp_path / "outbox", SYSTEM)) == 2


def test_a_daemon_with_nothing_to_send_claims_no_system_id(tmp_path: Path) -> None:
    """The first machine that uploads owns the id: a daemon waiting for its data_dir (or
    with nothing to send) only reads the record, and the machine with a store gets it."""
    a = Machine(tmp_path, "a", data_dir=str(tmp_path / "not-yet"))
    b = Machine(tmp_path, "b")
    make_store(tmp_path / "store")
    proc = start_daemon(a.config, a.env, tmp_path / "a.log")
    try:
        wait_for(lambda: a.cli("status", "--json").returncode == 0, 60)
        time.sleep(2)  # its first passes (nothing due) are over
        assert not (tmp_path / "outbox" / "systems" / SYSTEM / "owner.json").exists()
        assert a.status()["lease"] is None
        first = b.cli("run", "--once")
        assert first.returncode == 0, first.stderr
        assert owner_record(tmp_path)["owner_id"] == b.owner_id()
    finally:
        assert stop_daemon(proc) == 0
