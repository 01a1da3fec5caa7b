"""Configuration rules across keys: one primary target for every command, force_method
that has somewhere to go, S3 settings without a bucket told, akoshad's own directories
apart from the store, absolute paths only, and values checked as they are used later."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import sys
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from akoshad.cli.config import check_lines, render_sources, state_dir_refusal
from akoshad.config import Settings, load_config, load_settings
from akoshad.config.groups import ALL_WEBHOOK_EVENTS
from akoshad.errors import ConfigError
from akoshad.restore import drill as restore_drill
from akoshad.restore.readback import _target_for
from akoshad.runtime.logs import setup_logging
from akoshad.runtime.metrics_server import parse_listen
from akoshad.runtime.ownership import primary_name
from akoshad.runtime.wiring import StateLock
from tests.helpers import akoshad, base_env, write_config

SECRET = "wJalrXUtnFEMI-planted-secret-K7MDENG"
AKOSHA = "http://127.0.0.1:8682/mcp"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), **extra}


def load(tmp_path: Path, text: str, **extra: str) -> Settings:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    return load_settings(cfg, environ=env(tmp_path, **extra))


def refused(tmp_path: Path, text: str, **extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **extra)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 78
    return message


# ---- 1. one primary target ----------------------------------------------------------------
class _Picked(Exception):
    pass


def _drill_target(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """The target ``akoshad drill`` (run in the command) opens."""

    def make_target(name: str, _settings: Settings) -> Any:
        raise _Picked(name)

    monkeypatch.setattr(restore_drill, "make_target", make_target)
    with pytest.raises(_Picked) as info:
        asyncio.run(restore_drill._drill_here(settings))
    return str(info.value)


@pytest.mark.parametrize(
    ("cloud_sync", "akosha", "expected"),
    [
        ("  cloud_bucket: akoshad\n", False, "cloud"),
        ("  cloud_bucket: akoshad\n  force_method: cloud\n", False, "cloud"),
        ("  cloud_bucket: akoshad\n  force_method: http\n", True, "local"),
        ("  force_method: auto\n", False, "local"),
        ("  force_method: http\n", True, "local"),
    ],
)
def test_every_command_reads_the_target_run_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cloud_sync: str,
    akosha: bool,
    expected: str,
) -> None:
    text = (f"akosha_url: {AKOSHA}\n" if akosha else "") + "cloud_sync:\n" + cloud_sync
    settings = load(tmp_path, text)
    assert settings.primary_target == expected
    assert primary_name(settings) == expected  # run --once, takeover
    args = argparse.Namespace(target="auto")
    assert _target_for(args, settings).name == expected  # uploads, verify, restore
    assert _drill_target(settings, monkeypatch) == expected  # drill
    shown = check_lines(load_config(tmp_path / "c.yaml", environ=env(tmp_path)))[0]
    where = "target=s3://akoshad" if expected == "cloud" else f"target={settings.local_target_dir}"
    assert where in shown  # config check


# ---- 2. force_method needs somewhere to go ----------------------------------------------
def test_force_cloud_needs_a_bucket(tmp_path: Path) -> None:
    message = refused(tmp_path, "cloud_sync:\n  force_method: cloud\n")
    assert "force_method: cloud needs cloud_sync.cloud_bucket" in message
    # an empty variable unsets the file's bucket: the same error, naming the variable
    text = "cloud_sync:\n  force_method: cloud\n  cloud_bucket: akoshad\n"
    message = refused(tmp_path, text, AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET="")
    assert "needs cloud_sync.cloud_bucket" in message
    assert "AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET" in message


def test_an_empty_bucket_is_unset_everywhere(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "cloud_sync:\n  cloud_bucket: akoshad\n",
        AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET="",
        AKOSHAD_CLOUD_SYNC__SECRET_ACCESS_KEY="",
        AKOSHAD_CLOUD_SYNC__ACCESS_KEY_ID="",
    )
    assert settings.cloud_sync.cloud_bucket is None and not settings.bucket_configured
    assert settings.cloud_sync.secret_access_key is None
    assert settings.primary_target == "local" and settings.warnings == ()


def test_force_http_needs_akosha_url(tmp_path: Path) -> None:
    message = refused(tmp_path, "cloud_sync:\n  force_method: http\n  cloud_bucket: b\n")
    assert "cloud_sync.force_method: http needs akosha_url" in message
    assert load(tmp_path, f"akosha_url: {AKOSHA}\ncloud_sync:\n  force_method: http\n")


def test_force_cloud_without_bucket_exits_78(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "memories.json").write_text("[]")  # was uploaded to the outbox
    cfg = write_config(
        tmp_path / "c.yaml", data_dir=str(tmp_path / "store"), cloud_sync={"force_method": "cloud"}
    )
    res = akoshad("run", "--once", "--config", str(cfg), env=base_env(tmp_path), timeout=60)
    assert res.returncode == 78, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs cloud_sync.cloud_bucket" in lines[0]
    assert not (tmp_path / ".local" / "share" / "akoshad" / "outbox").exists()


# ---- 3. S3 settings with no bucket: a warning, not an error -------------------------------
def test_s3_settings_without_a_bucket_are_told(tmp_path: Path) -> None:
    text = (
        "cloud_sync:\n  cloud_endpoint: https://s3.example.com\n"
        f"  access_key_id: AKIAEXAMPLE\n  secret_access_key: {SECRET}\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    cfg.chmod(0o600)  # holding the secret: no warning of its mode
    loaded = load_config(cfg, environ=env(tmp_path))
    warning = next(line for line in check_lines(loaded) if line.startswith("warning: "))
    assert "cloud_sync.cloud_endpoint" in warning and "cloud_sync.access_key_id" in warning
    assert f"uploads go to the local target {loaded.settings.local_target_dir}" in warning
    assert "no cloud_sync.cloud_bucket" in warning
    assert warning.removeprefix("warning: ") in loaded.settings.notes  # logged at start
    assert "# warning: " in render_sources(loaded)
    assert SECRET not in warning and "s3.example.com" not in warning


def test_run_once_logs_the_no_bucket_warning(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "memories.json").write_text("[]")
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        cloud_sync={"cloud_endpoint": "http://127.0.0.1:9"},
    )
    res = akoshad("run", "--once", "--config", str(cfg), env=base_env(tmp_path), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("set but no cloud_sync.cloud_bucket: uploads go to the local") == 1


def test_no_warning_with_a_bucket_or_nothing_of_s3(tmp_path: Path) -> None:
    assert load(tmp_path, "cloud_sync:\n  cloud_endpoint: https://s3.example.com\n").warnings
    text = "cloud_sync:\n  cloud_bucket: b\n  cloud_endpoint: https://s3.example.com\n"
    assert load(tmp_path, text).warnings == ()
    assert load(tmp_path, "debounce_seconds: 3\n").warnings == ()


@pytest.mark.parametrize(
    "selection",
    [
        'exclude: ["*.duckdb"]\n',
        'exclude: ["reflection.duckdb"]\n',
        'include: ["sessions/**", "*.db"]\n',
    ],
)
def test_akosha_url_with_reflection_duckdb_left_out_is_warned(
    tmp_path: Path, selection: str
) -> None:
    """Memories are read from reflection.duckdb: an include/exclude that leaves it out with
    akosha_url set delivers nothing to Akosha, which config check and the start say."""
    loaded = load_config(
        _written(tmp_path, f"akosha_url: {AKOSHA}\n{selection}"), environ=env(tmp_path)
    )
    warning = next(line for line in check_lines(loaded) if line.startswith("warning: "))
    assert "reflection.duckdb" in warning and "no memory reaches Akosha" in warning
    assert warning.removeprefix("warning: ") in loaded.settings.notes  # logged at start


def test_reflection_duckdb_selected_or_no_akosha_is_not_warned(tmp_path: Path) -> None:
    assert load(tmp_path, f"akosha_url: {AKOSHA}\nexclude: ['*.db']\n").warnings == ()
    text = f"akosha_url: {AKOSHA}\ninclude: ['*.duckdb']\n"
    assert load(tmp_path, text).warnings == ()
    assert load(tmp_path, "exclude: ['*.duckdb']\n").warnings == ()  # no akosha_url


def _written(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    return cfg


# ---- 4. akoshad's own directories apart from the store ------------------------------------
@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('data_dir: "~"\n', ("state_dir", "is inside data_dir")),  # the defaults are in ~
        ("data_dir: {t}/d\nlocal_target_dir: {t}/d/out\n", ("local_target_dir", "inside")),
        ("data_dir: {t}/d\nstate_dir: {t}/d\n", ("state_dir", "the same directory as")),
        ("data_dir: {t}/st/d\nstate_dir: {t}/st\n", ("state_dir", "holds data_dir")),
        ("data_dir: {t}/o/d\nlocal_target_dir: {t}/o\n", ("local_target_dir", "holds")),
        ("data_dir: {t}/d\nlog_file: {t}/d/logs/akoshad.log\n", ("log_file", "own log")),
    ],
)
def test_own_directories_not_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, names: tuple[str, ...]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # what ~ expands to
    message = refused(tmp_path, text.format(t=tmp_path))
    assert all(name in message for name in names), message
    assert "data_dir" in message and f"(from file {tmp_path / 'c.yaml'})" in message


def test_nesting_is_seen_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    message = refused(tmp_path, f"data_dir: {tmp_path}/link\nstate_dir: {tmp_path}/real/st\n")
    assert f"state_dir {tmp_path}/real/st is inside data_dir {tmp_path}/link" in message
    load(tmp_path, f"data_dir: {tmp_path}/real-store\nstate_dir: {tmp_path}/real/st\n")


# ---- 5. absolute paths only ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("state_dir: st/rel\n", "state_dir"),
        ("data_dir: store\n", "data_dir"),
        ("socket_path: run/a.sock\n", "socket_path"),
        ("local_target_dir: ./outbox\n", "local_target_dir"),
        ("encryption:\n  identity_file: key.txt\n", "encryption.identity_file"),
    ],
)
def test_relative_paths_are_refused(tmp_path: Path, text: str, key: str) -> None:
    message = refused(tmp_path, text)
    assert f"{key}: must be an absolute path or start with ~" in message


@pytest.mark.parametrize(
    ("text", "key", "name"),
    [
        ("local_target_dir: /mnt/$USER/outbox\n", "local_target_dir", "$USER"),
        ("data_dir: ${HOME}/.claude/data\n", "data_dir", "${HOME}"),
        ("state_dir: $XDG_STATE_HOME/akoshad\n", "state_dir", "$XDG_STATE_HOME"),
        ("encryption:\n  identity_file: $HOME/id.txt\n", "encryption.identity_file", "$HOME"),
    ],
)
def test_paths_naming_an_environment_variable_are_refused(
    tmp_path: Path, text: str, key: str, name: str
) -> None:
    """YAML expands no variable: ``/mnt/$USER/outbox`` was taken as is (config check ok,
    uploads into a directory named '$USER'); it is now exit 78 naming the variable."""
    message = refused(tmp_path, text)
    assert f"{key}: names the environment variable {name}, which is not expanded" in message
    assert load(tmp_path, f"data_dir: {tmp_path}/price$5\n").data_dir == tmp_path / "price$5"


@pytest.mark.parametrize("region", ["us east 1", "auto ", "eu-west-1/", "-x", "1234"])
def test_a_region_name_botocore_refuses_is_a_config_error(tmp_path: Path, region: str) -> None:
    """Before: config check ok, then each start 'open the S3 client: InvalidRegionError',
    exit 1 (systemd restarting it every few seconds)."""
    message = refused(tmp_path, f'cloud_sync:\n  cloud_region: "{region}"\n')
    assert "cloud_sync.cloud_region: is not a region name" in message
    for fine in ("auto", "us-east-1", "EU-WEST-1", ""):
        assert load(tmp_path, f'cloud_sync:\n  cloud_region: "{fine}"\n').cloud_sync


def test_home_relative_paths_and_cli_paths_are_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # what ~ expands to
    settings = load(tmp_path, "state_dir: ~/st\nencryption:\n  identity_file: ~/key.txt\n")
    assert settings.state_dir == tmp_path / "st"
    assert settings.encryption.identity_file == tmp_path / "key.txt"
    monkeypatch.chdir(tmp_path)  # --data-dir and --identity mean the shell's directory
    overrides = {"data_dir": "store", "encryption": {"identity_file": "k.txt"}}
    settings = load_settings(overrides=overrides, environ=env(tmp_path))
    assert settings.data_dir == tmp_path / "store"
    assert settings.encryption.identity_file == tmp_path / "k.txt"


def test_defaults_are_absolute_and_relative_xdg_is_ignored(tmp_path: Path) -> None:
    settings = load_settings(
        environ=env(tmp_path, XDG_STATE_HOME="st", XDG_DATA_HOME="da", XDG_RUNTIME_DIR="run")
    )
    assert settings.state_dir == tmp_path / ".local" / "state" / "akoshad"
    assert settings.local_target_dir == tmp_path / ".local" / "share" / "akoshad" / "outbox"
    assert settings.socket_path == settings.state_dir / "akoshad.sock"
    for path in (settings.data_dir, settings.state_dir, settings.local_target_dir):
        assert path.is_absolute()


# ---- 6. values checked as they are used later -----------------------------------------------
@pytest.mark.parametrize(
    ("bucket", "hint"),
    [
        ("s3://akoshad", "without s3://"),
        ("akoshad/sub", "holds a '/'"),
        (" akoshad", "is not a bucket name"),
        ("ako shad", "is not a bucket name"),
        (f"s3://AKIA:{SECRET}@akoshad", "without s3://"),
    ],
)
def test_bucket_names_as_botocore_checks_them(tmp_path: Path, bucket: str, hint: str) -> None:
    message = refused(tmp_path, f'cloud_sync:\n  cloud_bucket: "{bucket}"\n')
    assert "cloud_sync.cloud_bucket: " in message and hint in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "bucket",
    ["akoshad", "my.bucket_1-a", "arn:aws:s3:us-west-2:123456789012:accesspoint/backups"],
)
def test_good_bucket_names(tmp_path: Path, bucket: str) -> None:
    assert load(tmp_path, f"cloud_sync:\n  cloud_bucket: {bucket}\n").bucket_configured


@pytest.mark.parametrize(
    "listen",
    [
        "http://127.0.0.1:9464",
        "127.0.0.1:9464/metrics",
        "127.0.0.1",
        ":9464",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:\uff19\uff14\uff16\uff14",  # digits, but not ASCII ones
        "::1:9464",
        "[nope]:9464",
        " 127.0.0.1:9464",
        # not IPv4 addresses: 'Name or service not known' at the start, backups on, the
        # metrics retried every minute (or 010 read as octal: 8.0.0.1)
        "999.1.1.1:9464",
        "127.0.0.256:9464",
        "010.0.0.1:9464",
        "127.1:9464",
    ],
)
def test_bad_metrics_listen(tmp_path: Path, listen: str) -> None:
    assert "metrics_listen: " in refused(tmp_path, f'metrics_listen: "{listen}"\n')


def test_a_bare_port_as_metrics_listen_says_what_is_missing(tmp_path: Path) -> None:
    """``metrics_listen: 9464`` (a YAML number) said "Input should be a valid string"."""
    line = refused(tmp_path, "metrics_listen: 9464\n")
    assert "must be host:port" in line and "127.0.0.1:9464" in line, line


@pytest.mark.parametrize(
    ("listen", "exposed"),
    [
        ("0.0.0.0:9464", True),
        ("[::]:9464", True),
        ("192.168.1.5:9464", True),
        ("127.0.0.1:9464", False),
        ("127.0.0.2:9464", False),
        ("[::1]:9464", False),
        ("localhost:9464", False),
    ],
)
def test_metrics_listen_off_loopback_is_warned_of(
    tmp_path: Path, listen: str, exposed: bool
) -> None:
    """/metrics has no authentication; 0.0.0.0 served it to every network silently."""
    warned = [w for w in load(tmp_path, f'metrics_listen: "{listen}"\n').warnings if "metrics" in w]
    assert bool(warned) == exposed, warned
    assert not warned or warned[0].startswith(f"metrics_listen {listen} is not a loopback")


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
    ],
)
def test_good_metrics_listen_parse_as_served(
    tmp_path: Path, listen: str, parsed: tuple[str, int]
) -> None:
    settings = load(tmp_path, f'metrics_listen: "{listen}"\n')
    assert settings.metrics_listen is not None
    assert parse_listen(settings.metrics_listen) == parsed


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    message = refused(tmp_path, f"state_dir: {tmp_path}/file\n")
    assert f"state_dir: {tmp_path}/file exists and is not a directory" in message
    message = refused(tmp_path, f"state_dir: {tmp_path}/file/st\n")
    assert f"{tmp_path}/file exists and is not a directory" in message
    message = refused(tmp_path, f"local_target_dir: {tmp_path}/file\n")
    assert "local_target_dir: " in message
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    assert "dangling" in refused(tmp_path, f"state_dir: {tmp_path}/dangling\n")


def test_log_file_that_cannot_be_made(tmp_path: Path) -> None:
    """A directory named as log_file (``log_file: /var/log/``), or a file among its
    parents: config check passed and run failed with 'run failed: IsADirectoryError', exit 1,
    which systemd restarts for ever. Now exit 78 naming log_file, from config check too."""
    (tmp_path / "file").write_text("x")
    message = refused(tmp_path, f"log_file: {tmp_path}/\n")
    assert f"log_file: {tmp_path} is a directory: name the file to log to" in message
    message = refused(tmp_path, f"log_file: {tmp_path}/file/x/akoshad.log\n")
    assert f"cannot be made: {tmp_path}/file exists and is not a directory" in message
    assert load(tmp_path, f"log_file: {tmp_path}/new/akoshad.log\n").log_file


def test_log_file_that_cannot_be_opened_is_exit_78(tmp_path: Path) -> None:
    """One made unopenable after the check (a directory put there since): exit 78, one
    line naming it, not a traceback's last line with exit 1."""
    settings = load(tmp_path, f"log_file: {tmp_path}/later\n")
    (tmp_path / "later").mkdir()
    try:
        with pytest.raises(ConfigError) as info:
            setup_logging(settings, environ={}, stream=io.StringIO())
    finally:
        logger.remove()
        logger.add(io.StringIO())
    assert str(info.value).startswith(f"log_file {tmp_path}/later cannot be written: ")
    assert info.value.exit_code == 78


# real places no process may write, root included: procfs makes no directory, sysfs no file
UNWRITABLE_STATE = [("/proc/akoshad-state", "No such file"), ("/sys/fs", "Permission denied")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procfs and sysfs")
@pytest.mark.parametrize(("state_dir", "reason"), UNWRITABLE_STATE)
def test_unwritable_state_dir_is_a_config_error(state_dir: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        StateLock(Path(state_dir)).acquire()
    assert str(info.value).startswith(f"state_dir {state_dir} is not writable: {reason}")
    assert info.value.exit_code == 78
    # config check tells it alike, without making anything
    assert (state_dir_refusal(Path(state_dir)) or "").startswith(str(info.value)[:40])


def test_a_full_disk_does_not_stop_the_lock_from_being_taken(tmp_path: Path) -> None:
    """The lock's pid line on a full disk raised 'run failed: OSError: [Errno 28] No space
    left on device' (naming no place); the lock is taken without it, and the state
    database's open, next, says which disk (tests/unit/test_state.py)."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, limits[1]))  # no byte can be written
    lock = StateLock(tmp_path)
    try:
        lock.acquire()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    lock.release()
    assert (tmp_path / "akoshad.lock").read_bytes() == b""


def test_config_check_of_a_state_dir_leaves_nothing(tmp_path: Path) -> None:
    assert state_dir_refusal(tmp_path / "new" / "state") is None
    assert state_dir_refusal(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procfs and sysfs")
@pytest.mark.parametrize("command", [["run", "--once"], ["prune"], ["config", "check"]])
def test_unwritable_state_dir_exits_78(tmp_path: Path, command: list[str]) -> None:
    """One line naming state_dir, exit 78: systemd's unit does not restart it in a loop.
    config check said 'configuration ok' (exit 0) for it; it agrees with run now."""
    (tmp_path / "store").mkdir()
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir="/sys/fs",
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
    )
    proc = akoshad(*command, "--config", str(cfg), env=base_env(tmp_path))
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr == (
        "akoshad: state_dir /sys/fs is not writable: Permission denied "
        "(make state_dir writable or set another)\n"
    )


def test_a_group_with_every_line_commented_out_sets_nothing(tmp_path: Path) -> None:
    """``encryption:`` whose keys are all commented out (as one leaves an unused block of
    the example) was exit 78: 'encryption: Input should be a valid dictionary or instance
    of Encryption'. A group or list YAML reads as null now sets nothing, as an empty file."""
    text = (
        "debounce_seconds: 3\nencryption:\n  # recipients: []\nretention:\n"
        "cloud_sync:\n  # cloud_bucket: b\nwebhooks:\ninclude:\nexclude:\n"
    )
    settings = load(tmp_path, text)
    assert settings.debounce_seconds == 3 and not settings.encryption.enabled
    assert settings.retention.keep_last == 10 and settings.webhooks == []
    assert settings.include == [] and settings.cloud_sync.cloud_bucket is None
    assert "data_dir" in refused(tmp_path, "data_dir:\n")  # a path left empty: still told


def test_a_list_in_a_group_with_every_entry_commented_out_sets_nothing(tmp_path: Path) -> None:
    """``recipients:`` whose keys are all commented out (turning encryption off, as the
    README says: recipients removed) was exit 78 'encryption.recipients: Input should be a
    valid list', and so was a webhook's ``events:`` left so. Such a list sets nothing, as
    ``include:`` does: no recipient (encryption off), every event."""
    text = (
        "encryption:\n  recipients:\n  #  - age1...\n"
        "webhooks:\n  - url: http://127.0.0.1:9/x\n    events:\n    #  - failure\n"
    )
    settings = load(tmp_path, text)
    assert not settings.encryption.enabled and settings.encryption.recipients == []
    assert settings.webhooks[0].events == list(ALL_WEBHOOK_EVENTS)
    assert "events" in refused(tmp_path, "webhooks:\n  - url: http://h/x\n    events: 3\n")


def test_a_yaml_error_says_what_is_wrong_without_the_file_s_words(tmp_path: Path) -> None:
    """'is not valid YAML at line 2' alone left a tab in the indentation to be guessed;
    the parser's problem is said now, but never a word of the file it quotes (a secret
    written as *x or !x is read as an alias or a tag)."""
    message = refused(tmp_path, "cloud_sync:\n\tcloud_bucket: b\n")
    assert message.endswith(
        "is not valid YAML at line 2: found character '\\t' that cannot start any token "
        "(a tab: YAML indents with spaces)"
    ), message
    for text in (f"webhooks:\n  - url: http://h/x\n    secret: *{SECRET}\n", f"x: !{SECRET} y\n"):
        message = refused(tmp_path, text)
        assert SECRET not in message and "'...'" in message, message


@pytest.mark.parametrize("key", ["DATA_DIR", "STATE_DIR"])
def test_a_directory_whose_name_is_not_utf8_is_refused(tmp_path: Path, key: str) -> None:
    """AKOSHAD_DATA_DIR with a byte that is not UTF-8: config check said ok and run
    ended with 'run failed: UnicodeEncodeError ... surrogates not allowed', exit 1 (a
    state_dir so named: every DuckDB file skipped, 'std::bad_cast'). Now exit 78."""
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/d\xffx")
    message = refused(tmp_path, "", **{f"AKOSHAD_{key}": name})
    assert f"{key.lower()}: {tmp_path}/d\\xffx is not a UTF-8 name" in message, message


@pytest.mark.parametrize(
    ("text", "told"),
    [
        (
            "prune_interval_hours: 1\n",
            "prune_interval_hours: unknown key here (it goes in the `retention:` group)",
        ),
        ("system_id: laptop\n", "system_id: unknown key here (it goes in the `cloud_sync:` group)"),
        ("keep_last: 5\n", "keep_last: unknown key here (it goes in the `retention:` group)"),
        (
            "cloud_sync:\n  data_dir: /x\n",
            "cloud_sync.data_dir: unknown key here (it is a top-level key, not one of "
            "`cloud_sync:`)",
        ),
    ],
)
def test_a_key_in_the_wrong_place_is_told_where_it_goes(
    tmp_path: Path, text: str, told: str
) -> None:
    """A key of a group written at the top level (or the other way) was 'unknown key',
    or worse a suggestion of another setting: prune_interval_hours at the top level was
    'did you mean `drill_interval_hours`?'."""
    message = refused(tmp_path, text)
    assert told in message and "did you mean" not in message, message


@pytest.mark.parametrize(
    ("var", "meant"),
    [
        ("AKOSHAD_PRUNE_INTERVAL_HOURS", "AKOSHAD_RETENTION__PRUNE_INTERVAL_HOURS"),
        ("AKOSHAD_CLOUD_SYNC__DATA_DIR", "AKOSHAD_DATA_DIR"),
        ("AKOSHAD_DEBOUNCE_SECNDS", "AKOSHAD_DEBOUNCE_SECONDS"),  # a typo: the nearest
    ],
)
def test_a_variable_of_another_place_is_pointed_there(tmp_path: Path, var: str, meant: str) -> None:
    """AKOSHAD_PRUNE_INTERVAL_HOURS suggested AKOSHAD_DRILL_INTERVAL_HOURS, the nearest
    spelling, and AKOSHAD_CLOUD_SYNC__DATA_DIR AKOSHAD_CLOUD_SYNC__SYSTEM_ID."""
    message = refused(tmp_path, "", **{var: "1"})
    assert message.endswith(f"unknown environment variable {var} (did you mean `{meant}`?)")


def test_a_retention_count_written_as_yes_or_no_is_refused(tmp_path: Path) -> None:
    """``keep_daily: yes`` (YAML's true) was taken as 1, and ``keep_last: no`` as 0: a
    prune then dropped what the user meant to keep. A count given as true/false is exit 78
    naming the field; numbers (and ``enabled: false``) are read as before."""
    for text, field, word in (
        ("retention:\n  keep_daily: yes\n", "keep_daily", "true"),
        ("retention:\n  keep_last: no\n", "keep_last", "false"),
        ("retention:\n  keep_monthly: on\n", "keep_monthly", "true"),
    ):
        message = refused(tmp_path, text)
        assert f"retention.{field}: a number of uploads is needed, not {word}" in message
    settings = load(tmp_path, "retention:\n  keep_daily: 7\n  enabled: false\n")
    assert settings.retention.keep_daily == 7 and settings.retention.enabled is False
