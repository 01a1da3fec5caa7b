"""A large file's chunk list is one document shared by every upload that keeps the file
unchanged. Lost, it made every such upload unrestorable as a whole, the other files
included: ``restore --latest``, ``verify`` and ``drill`` failed the whole upload
("manifest ... is invalid: 'big.bin': chunk list ... is missing") and restored nothing.
Now that file is one problem of its own, named with the list's key, and every other file
is restored, verified and drilled (exit 1). ``--path`` reads only the chosen files' lists.
A prune stays strict: the packs only that list names are never taken for unreferenced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from akoshad.restore.marker import MARKER
from tests.helpers import akoshad, daemon_config
from tests.s3server import WeedServer

RETENTION = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}


def _store(tmp_path: Path) -> dict[str, bytes]:
    store = tmp_path / "store"
    (store / "sessions").mkdir(parents=True)
    files = {
        "notes.json": b'{"a": 1}',
        "sessions/s.json": b'{"s": 1}',
        "big.bin": os.urandom(24 << 20),  # past the inline chunk limit: a chunk list
    }
    for path, data in files.items():
        (store / path).write_bytes(data)
    return files


def _tree(root: Path) -> dict[str, bytes]:
    """The files under ``root``, but the mark of a restore that did not restore them all."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != MARKER
    }


def _lose_the_list(tmp_path: Path) -> str:
    lists = list((tmp_path / "outbox").rglob("chunklists/*/*"))
    assert len(lists) == 1, lists
    lists[0].unlink()
    return lists[0].relative_to(tmp_path / "outbox").as_posix()


def test_restore_verify_and_drill_name_the_file_and_get_the_others(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "lostlist", store=False)
    files = _store(tmp_path)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    key = _lose_the_list(tmp_path)

    dest = tmp_path / "whole"
    args = ["--latest", "--dest", str(dest)]
    whole = akoshad("restore", "--config", str(config), *args, env=env)
    assert whole.returncode == 1, whole.stderr
    problem, last = whole.stderr.strip().splitlines()
    assert problem.startswith("akoshad: 'big.bin': chunk list ") and key in problem
    assert problem.endswith("is missing")
    assert "1 of the 3 file(s) could not be restored" in last
    assert f"{dest} holds 2 of the 3 file(s)" in last
    assert _tree(dest) == {p: b for p, b in files.items() if p != "big.bin"}

    verify = akoshad("verify", "--config", str(config), env=env)
    assert verify.returncode == 1
    assert f"'big.bin': chunk list {key} is missing" in verify.stdout
    assert "2 file(s) verified, 1 problem(s)" in verify.stdout
    assert "unreadable" not in verify.stdout  # the ledger's check too takes the others

    drill = akoshad("drill", "--json", "--config", str(config), env=env)
    assert drill.returncode == 1, drill.stderr
    result = json.loads(drill.stdout)
    assert result["files"] == 2 and len(result["problems"]) == 1, result
    assert key in result["problems"][0] and result["problems"][0].startswith("'big.bin'")

    back = tmp_path / "back"
    args = ["--latest", "--dest", str(back), "--path", "*.json"]
    proc = akoshad("restore", "--config", str(config), *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("restored 2 file(s) of upload ")
    assert _tree(back) == {p: b for p, b in files.items() if p != "big.bin"}


def test_uploads_says_the_upload_restores_all_but_the_lost_file(tmp_path: Path) -> None:
    """``uploads`` listed the upload as DAMAGED (before), although restore gets back every
    other file: it now says it restores all but the named file, and keeps DAMAGED for a
    manifest that cannot be read."""
    config, env = daemon_config(tmp_path, "lostlist", store=False)
    _store(tmp_path)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    key = _lose_the_list(tmp_path)
    proc = akoshad("uploads", "--json", "--config", str(config), env=env, check=True)
    [row] = json.loads(proc.stdout)
    assert row["damaged"] is None and row["files"] == 3, row
    assert row["unrestorable"] == [f"'big.bin': chunk list {key} is missing"]
    table = akoshad("uploads", "--config", str(config), env=env, check=True).stdout
    line = table.splitlines()[1]
    assert "DAMAGED" not in line
    assert line.endswith(
        f"PARTIAL: restores all but 1 file(s): 'big.bin': chunk list {key} is missing"
    )

    manifest = next((tmp_path / "outbox").rglob("manifest.json"))
    manifest.write_bytes(b"{")
    [row] = json.loads(akoshad("uploads", "--json", "--config", str(config), env=env).stdout)
    assert row["damaged"] == "not valid JSON" and row["unrestorable"] == [], row


def test_on_s3_the_other_files_are_restored(tmp_path: Path, s3: WeedServer, system_id: str) -> None:
    config, env = daemon_config(
        tmp_path, system_id, store=False, cloud_sync=s3.cloud_sync(system_id)
    )
    files = _store(tmp_path)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    (key,) = s3.keys(f"systems/{system_id}/chunklists/")
    s3.client().delete_object(Bucket=s3.bucket, Key=key)
    dest = tmp_path / "whole"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert proc.returncode == 1
    assert f"'big.bin': chunk list {key} is missing" in proc.stderr
    assert f"{dest} holds 2 of the 3 file(s)" in proc.stderr
    assert _tree(dest) == {p: b for p, b in files.items() if p != "big.bin"}


def test_a_prune_never_takes_the_packs_of_a_lost_list_for_unreferenced(tmp_path: Path) -> None:
    """Two uploads keep big.bin unchanged (one list); its list lost, a prune that drops the
    older upload keeps big.bin's packs: the list put back, the newest upload restores whole."""
    config, env = daemon_config(tmp_path, "lostlist", store=False, retention=RETENTION)
    files = _store(tmp_path)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    files["notes.json"] = b'{"a": 2}'
    (tmp_path / "store" / "notes.json").write_bytes(files["notes.json"])
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    outbox = tmp_path / "outbox"
    (listed,) = outbox.rglob("chunklists/*/*")
    saved = listed.read_bytes()
    packs = {p.relative_to(outbox) for p in outbox.rglob("packs/*/*")}
    listed.unlink()
    proc = akoshad("prune", "--json", "--config", str(config), env=env)
    left = {p.relative_to(outbox) for p in outbox.rglob("packs/*/*")}
    assert left == packs, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and len(result["uploads_removed"]) == 1, result
    [unreadable] = result["unreadable"]
    assert unreadable.endswith(f"chunk list {listed.relative_to(outbox).as_posix()} is missing")
    listed.write_bytes(saved)
    dest = tmp_path / "back"
    args = ["--latest", "--dest", str(dest)]
    akoshad("restore", "--config", str(config), *args, env=env, check=True)
    assert _tree(dest) == files


def test_on_s3_the_lost_file_is_named_before_the_restore_ends(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """The problem line comes as the restore finds it (before: only at the end, with the
    summary, so a long restore looked clean until it ended): seen while the server is held
    stopped mid-restore, the restore still runs and has said nothing else; let go, it ends
    with the summary line (exit 1)."""
    config, env = daemon_config(
        tmp_path, system_id, store=False, cloud_sync=s3.cloud_sync(system_id)
    )
    files = _store(tmp_path)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    (key,) = s3.keys(f"systems/{system_id}/chunklists/")  # big.bin's
    files["huge.bin"] = os.urandom(96 << 20)  # keeps the restore busy for a while
    (tmp_path / "store" / "huge.bin").write_bytes(files["huge.bin"])
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    s3.client().delete_object(Bucket=s3.bucket, Key=key)
    dest = tmp_path / "whole"
    args = ["restore", "--config", str(config), "--latest", "--dest", str(dest)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert s3.proc is not None and proc.stderr is not None
    stopped = False
    try:
        first = proc.stderr.readline()
        os.killpg(s3.proc.pid, signal.SIGSTOP)
        stopped = True
        assert f"'big.bin': chunk list {key} is missing" in first
        time.sleep(2)
        assert proc.poll() is None, proc.stderr.read()
        os.killpg(s3.proc.pid, signal.SIGCONT)
        stopped = False
        out, rest = proc.communicate(timeout=120)
        assert out == ""
    finally:
        if stopped:
            os.killpg(s3.proc.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, rest
    [last] = rest.strip().splitlines()
    assert f"{dest} holds 3 of the 4 file(s)" in last
    assert _tree(dest) == {p: b for p, b in files.items() if p != "big.bin"}
