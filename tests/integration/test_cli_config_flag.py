"""``python -m akoshad`` as users run it: --config before or after every command, the quick
check reading the same file, unknown AKOSHAD_* variables, client commands that still reach
the daemon while its configuration file is broken, and session-buddy's chunk size."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.helpers import (
    akoshad,
    base_env,
    manifests,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.tmpdirs import short_dir as make_short_dir

CLIENT = [["status"], ["sync"], ["pause"], ["resume"], ["queue"]]
OTHERS = [
    ["run", "--once"],
    ["config", "check"],
    ["config", "show"],
    ["verify"],
    ["restore", "--latest", "--dest", "RESTORE"],
    ["service", "install", "--dry-run"],
    ["mcp"],
]


@pytest.fixture
def short_dir() -> Path:
    """A short directory for sockets (a Unix socket path is limited to ~107 bytes)."""
    return make_short_dir()


def _place(command: list[str], where: str, cfg: Path) -> list[str]:
    return (
        ["--config", str(cfg), *command] if where == "before" else [*command, "--config", str(cfg)]
    )


def _setup(tmp_path: Path, sock: Path, **extra: object) -> tuple[Path, dict[str, str]]:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    (store / "notes.json").write_text('{"a": 1}')
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(store),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(sock),
        debounce_seconds=0.2,
        max_delay_seconds=2,
        cloud_sync={"system_id": "flag"},
        **extra,
    )
    return cfg, base_env(tmp_path)


# ---- 11.1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", OTHERS, ids=lambda c: " ".join(c[:2]))
def test_missing_config_is_refused_in_either_place(
    tmp_path: Path, command: list[str], where: str
) -> None:
    nope = tmp_path / "nope.yaml"
    argv = [a.replace("RESTORE", str(tmp_path / "r")) for a in _place(command, where, nope)]
    res = akoshad(*argv, env=base_env(tmp_path), timeout=60)
    assert res.returncode == 78, res.stderr
    assert res.stderr.strip() == f"akoshad: configuration file {nope} does not exist"


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize(
    "command",
    [*CLIENT, ["status", "--check"], ["sync", "--wait"]],
    ids=lambda c: " ".join(c),
)
def test_client_commands_refuse_a_missing_named_config(
    tmp_path: Path, command: list[str], how: str
) -> None:
    """Not "not running" at the default socket (exit 3), which may be another daemon's
    (queried, paused or synced in its place): one line, exit 78."""
    nope = tmp_path / "nope.yaml"
    env = base_env(tmp_path)
    if how == "env":
        env["AKOSHAD_CONFIG"] = str(nope)
        res = akoshad(*command, env=env, timeout=60)
    else:
        res = akoshad(*command, "--config", str(nope), env=env, timeout=60)
    assert res.returncode == 78, res.stderr
    assert res.stderr == (
        f"akoshad: configuration file {nope} does not exist, so {command[0]} cannot tell "
        "where the daemon listens (fix the file, or set AKOSHAD_SOCKET_PATH)\n"
    )


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", CLIENT, ids=lambda c: c[0])
def test_client_commands_use_the_named_config_in_either_place(
    tmp_path: Path, short_dir: Path, command: list[str], where: str
) -> None:
    sock = short_dir / "named.sock"
    cfg, env = _setup(tmp_path, sock)
    res = akoshad(*_place(command, where, cfg), env=env, timeout=30)
    assert res.returncode == 3, res.stderr
    assert res.stderr.count("\n") == 1 and str(sock) in res.stderr and "not running" in res.stderr
    nope = tmp_path / "nope.yaml"  # a missing file: one line naming it, not the default
    res = akoshad(*_place(command, where, nope), env=env, timeout=30)
    assert res.returncode == 78, res.stderr
    assert res.stderr.count("\n") == 1 and f"{nope} does not exist" in res.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_show_and_run_once_read_the_named_file(
    tmp_path: Path, short_dir: Path, where: str
) -> None:
    cfg, env = _setup(tmp_path, short_dir / "a.sock")
    res = akoshad(*_place(["config", "show"], where, cfg), env=env, timeout=30)
    assert res.returncode == 0 and f"data_dir: {tmp_path / 'store'}" in res.stdout
    res = akoshad(*_place(["run", "--once"], where, cfg), env=env)
    assert res.returncode == 0, res.stderr
    (m,) = manifests(tmp_path / "outbox", "flag")
    assert [f["path"] for f in m["metadata"]["files"]] == ["notes.json"]


def test_two_config_files_are_a_usage_error(tmp_path: Path, short_dir: Path) -> None:
    cfg, env = _setup(tmp_path, short_dir / "a.sock")
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text())
    assert akoshad("run", "--once", "--config", str(cfg), env=env).returncode == 0
    for argv in (
        ["--config", str(cfg), "run", "--once", "--config", str(other)],
        ["--config", str(other), "config", "check", "--config", str(cfg)],
    ):
        res = akoshad(*argv, env=env, timeout=30)
        assert res.returncode == 2, res.stderr
        assert str(cfg) in res.stderr and str(other) in res.stderr
        assert "nothing changed" not in res.stderr


def test_an_abbreviated_config_is_refused_also_by_the_quick_check(
    tmp_path: Path, short_dir: Path
) -> None:
    """``--conf FILE`` was ``--config FILE`` to the parser; no option is taken abbreviated
    now (exit 2), and the quick no-change check never answers for one ("nothing changed"
    for a file it did not read)."""
    cfg, env = _setup(tmp_path, short_dir / "a.sock")
    for _ in range(2):  # the second run records the unchanged state
        assert akoshad("run", "--once", "--config", str(cfg), env=env).returncode == 0
    assert "nothing changed" in akoshad("run", "--once", "--config", str(cfg), env=env).stderr
    res = akoshad("run", "--once", "--conf", str(cfg), env=env)
    assert res.returncode == 2, res.stderr
    assert f"unrecognized arguments: --conf {cfg}" in res.stderr
    assert "nothing changed" not in res.stderr


# ---- 11.4 ------------------------------------------------------------------------------


def test_unknown_variable_exits_78_naming_it(tmp_path: Path) -> None:
    env = dict(base_env(tmp_path), AKOSHAD_DEBOUNCE_SECOND="3")
    for argv in (["config", "check"], ["run", "--once"]):
        res = akoshad(*argv, env=env, timeout=30)
        assert res.returncode == 78
        assert res.stderr == (
            "akoshad: invalid configuration: unknown environment variable "
            "AKOSHAD_DEBOUNCE_SECOND (did you mean `AKOSHAD_DEBOUNCE_SECONDS`?)\n"
        )
    env = dict(base_env(tmp_path), AKOSHAD_LOG_LEVEL="LOUD")
    res = akoshad("config", "check", env=env, timeout=30)
    assert res.returncode == 78 and "(from env AKOSHAD_LOG_LEVEL)" in res.stderr
    env = dict(base_env(tmp_path), AKOSHAD_DEBUG="1")  # not a setting, but ours
    assert akoshad("config", "check", env=env, timeout=30).returncode == 0


# ---- 11.5 ------------------------------------------------------------------------------


def test_status_answers_while_the_file_is_broken(tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "d.sock"
    cfg, env = _setup(tmp_path, sock)
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: akoshad("status", "--config", str(cfg), env=env).returncode == 0, 30)
        cfg.write_text(cfg.read_text() + "debounce_secondz: 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), 15)
        assert proc.poll() is None
        res = akoshad("--config", str(cfg), "status", "--json", env=env, timeout=30)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["state"] in ("idle", "syncing")
        (warning,) = res.stderr.strip().splitlines()
        assert warning.startswith("akoshad: warning: invalid configuration: debounce_secondz")
        assert "did you mean `debounce_seconds`" in warning and str(sock) in warning
        for command in (["pause"], ["resume"], ["queue"], ["sync", "--wait"]):
            res = akoshad(*command, "--config", str(cfg), env=env, timeout=60)
            assert res.returncode == 0 and res.stderr.count("\n") == 1, (command, res.stderr)
        # the commands that need a valid configuration still refuse it
        assert akoshad("config", "check", "--config", str(cfg), env=env).returncode == 78
    finally:
        assert stop_daemon(proc) == 0
    res = akoshad("status", "--config", str(cfg), env=env, timeout=30)
    assert res.returncode == 3 and "not running" in res.stderr and str(sock) in res.stderr


# ---- 11.6 ------------------------------------------------------------------------------


def test_small_chunk_size_is_raised_with_a_note(tmp_path: Path, short_dir: Path) -> None:
    cfg, env = _setup(tmp_path, short_dir / "a.sock", log_level="INFO")
    text = cfg.read_text().replace("system_id: flag", "system_id: flag\n  chunk_size_mb: 2")
    cfg.write_text(text)
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=30)
    assert res.returncode == 0 and "note: cloud_sync.chunk_size_mb 2 raised to 5" in res.stdout
    res = akoshad("config", "show", "--config", str(cfg), env=env, timeout=30)
    assert "chunk_size_mb: 5" in res.stdout and "# note: cloud_sync.chunk_size_mb 2" in res.stdout
    res = akoshad("run", "--once", "--config", str(cfg), env=env)
    assert res.returncode == 0 and "chunk_size_mb 2 raised to 5" in res.stderr


def test_session_buddy_bucket_shows_where_it_came_from(tmp_path: Path) -> None:
    sb = tmp_path / ".config" / "session-buddy" / "config.yaml"
    sb.parent.mkdir(parents=True)
    sb.write_text("cloud_sync:\n  cloud_bucket: sb-bucket\n  upload_on_session_end: true\n")
    env = base_env(tmp_path)
    res = akoshad("config", "check", env=env, timeout=30)
    assert res.returncode == 0 and "target=s3://sb-bucket" in res.stdout
    assert f"note: from session-buddy file {sb}: cloud_sync.cloud_bucket" in res.stdout
    res = akoshad("config", "show", env=dict(env, AKOSHAD_DEBOUNCE_SECONDS="4"), timeout=30)
    lines = res.stdout.splitlines()
    assert "  cloud_bucket: sb-bucket" in lines
    assert any(
        line.split()[1:] == ["cloud_sync.cloud_bucket", "session-buddy", "file", str(sb)]
        for line in lines
    )
    assert any(
        line.split()[1:] == ["debounce_seconds", "env", "AKOSHAD_DEBOUNCE_SECONDS"]
        for line in lines
    )


def test_sync_wait_timeout_gives_up_on_a_daemon_that_never_answers(
    tmp_path: Path, short_dir: Path
) -> None:
    """``sync --wait --timeout 1`` against a socket that takes the request and never
    answers (a wedged daemon): exit 1 in seconds, saying so; without --timeout it would
    wait for ever. A --timeout that is not a number of seconds above 0 is a usage error."""
    import socket
    import threading
    import time

    sock = short_dir / "akoshad.sock"
    cfg, env = _setup(tmp_path, sock)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(4)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(server.accept()[0])  # read nothing, answer nothing
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        res = akoshad("sync", "--wait", "--timeout", "1", "--config", str(cfg), env=env)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "no reply from the daemon within 1 s" in res.stderr
        assert time.monotonic() - started < 15
        for bad in ("0", "-2", "soon"):
            res = akoshad("sync", "--wait", "--timeout", bad, "--config", str(cfg), env=env)
            assert res.returncode == 2 and "--timeout" in res.stderr
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()
