"""Configuration: sources, precedence, validation with one-line errors, redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from akoshad.config import load_settings, slug_system_id
from akoshad.errors import ConfigError
from tests.helpers import akoshad, base_env

SECRET = "wJalrXUtnFEMI-planted-secret-K7MDENG"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), **extra}


def test_defaults_follow_xdg(tmp_path: Path) -> None:
    s = load_settings(
        environ=env(
            tmp_path,
            XDG_STATE_HOME="/x/state",
            XDG_DATA_HOME="/x/data",
            XDG_RUNTIME_DIR="/run/user/7",
        )
    )
    assert s.data_dir == tmp_path / ".claude" / "data"
    assert s.state_dir == Path("/x/state/akoshad")
    assert s.local_target_dir == Path("/x/data/akoshad/outbox")
    assert s.socket_path == Path("/run/user/7/akoshad.sock")
    assert s.debounce_seconds == 2 and s.max_delay_seconds == 60
    assert s.min_upload_interval_seconds == 30
    cs = s.cloud_sync
    assert (cs.cloud_region, cs.max_retries, cs.retry_backoff_seconds, cs.chunk_size_mb) == (
        "auto",
        3,
        2.0,
        5,
    )
    assert cs.force_method == "auto" and cs.enable_fallback


def test_socket_falls_back_to_state_dir(tmp_path: Path) -> None:
    s = load_settings(environ=env(tmp_path))
    assert s.socket_path == s.state_dir / "akoshad.sock"


def test_precedence_cli_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "debounce_seconds: 5\nmax_delay_seconds: 100\ncloud_sync:\n"
        "  cloud_bucket: from-file\n  max_retries: 1\n"
    )
    e = env(tmp_path, AKOSHAD_DEBOUNCE_SECONDS="7", AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET="from-env")
    s = load_settings(cfg, environ=e)
    assert s.debounce_seconds == 7 and s.max_delay_seconds == 100
    assert s.cloud_sync.cloud_bucket == "from-env" and s.cloud_sync.max_retries == 1
    s = load_settings(cfg, overrides={"debounce_seconds": 9}, environ=e)
    assert s.debounce_seconds == 9


def test_config_file_from_env_and_xdg(tmp_path: Path) -> None:
    named = tmp_path / "named.yaml"
    named.write_text("debounce_seconds: 3\n")
    assert load_settings(environ=env(tmp_path, AKOSHAD_CONFIG=str(named))).debounce_seconds == 3
    xdg = tmp_path / "cfg" / "akoshad"
    xdg.mkdir(parents=True)
    (xdg / "config.yaml").write_text("debounce_seconds: 4\n")
    s = load_settings(environ=env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "cfg")))
    assert s.debounce_seconds == 4


def test_lists_from_env_as_json(tmp_path: Path) -> None:
    s = load_settings(environ=env(tmp_path, AKOSHAD_EXCLUDE='["sessions/**", "*.log"]'))
    assert s.exclude == ["sessions/**", "*.log"]


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("bogus_key: 1\n", "bogus_key: unknown key"),
        ("cloud_sync:\n  cloud_bukket: x\n", "cloud_sync.cloud_bukket: unknown key"),
        ("cloud_sync:\n  chunk_size_mb: 0\n", "cloud_sync.chunk_size_mb"),
        ("cloud_sync:\n  system_id: my.host\n", "cloud_sync.system_id"),
        ("cloud_sync:\n  force_method: carrier-pigeon\n", "cloud_sync.force_method"),
        ("cloud_sync:\n  max_retries: 11\n", "cloud_sync.max_retries"),
        ("debounce_seconds: 10\nmax_delay_seconds: 5\n", "max_delay_seconds"),
        ("min_upload_interval_seconds: -1\n", "min_upload_interval_seconds"),
        ("akosha_url: not a url\n", "akosha_url"),
        # webhook URLs that passed the check and failed at the first event
        ("webhooks:\n  - url: 'https://exa mple.com/h'\n", "holds a space or a control"),
        ("webhooks:\n  - url: 'http://user@:80/'\n", "webhooks.0.url: has no host name"),
        ("webhooks:\n  - url: 'http://[::1/h'\n", "a [ is not closed by ]"),
        ("- just\n- a list\n", "must be a mapping"),
        ("key: [unclosed\n", "not valid YAML"),
        ("cloud_sync:\n  access_key_id: AKIA\n", "set together"),
        (f"socket_path: /tmp/{'s' * 120}.sock\n", "socket_path: is 130 bytes long"),
        (
            "webhooks:\n  - url: http://h/x\n    events: [failure]\n"
            "  - url: http://h/x\n    events: [upload]\n",
            "webhooks[1] has the URL of webhooks[0]",
        ),
        ('data_dir: ""\n', "data_dir: is empty"),  # not the working directory ($HOME)
        ('state_dir: "a\\0b"\n', "state_dir: holds a NUL character"),
        # keys YAML reads as numbers or booleans are no names (was a TypeError traceback)
        ("30: x\n", "30: unknown key"),
        ("debounce_seconds: 3\non: 1\n", "True: unknown key"),
        # a key given twice: YAML would keep the last silently (the bucket dropped)
        (
            "cloud_sync:\n  cloud_bucket: b\ncloud_sync:\n  system_id: other\n",
            "key 'cloud_sync' is given twice at line 3 (only one would be read: merge them)",
        ),
        ("cloud_sync:\n  system_id: a\n  system_id: b\n", "key 'system_id' is given twice"),
        ("data_dir: /a\ndata_dir: /b\n", "key 'data_dir' is given twice at line 2"),
    ],
)
def test_invalid_config_one_line(tmp_path: Path, yaml_text: str, needle: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env(tmp_path))
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    """``<<: *anchor`` then a key of the anchor's: YAML's override, not a key given twice."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "webhooks:\n  - &hook {url: 'http://h/a', events: [failure]}\n"
        "  - <<: *hook\n    url: 'http://h/b'\n"
    )
    s = load_settings(cfg, environ=env(tmp_path))
    assert [str(w.url) for w in s.webhooks] == ["http://h/a", "http://h/b"]


def test_missing_named_file_is_an_error_default_is_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ=env(tmp_path))
    load_settings(environ=env(tmp_path))


def test_a_file_that_never_ends_is_refused_unread(tmp_path: Path) -> None:
    """--config naming /dev/zero (a link to it, or a huge file by mistake): a SIGHUP read it
    until memory ran out (the daemon's RSS at 9 GB within seconds, still growing); it is
    now one line, exit 78, and a few KB of YAML still load."""
    link = tmp_path / "c.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match=r"c\.yaml is larger than 1 MiB: not a configuration"):
        load_settings(str(link), environ={"HOME": str(tmp_path)})
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_settings(str(big), environ={"HOME": str(tmp_path)})
    big.write_text("# " + "x" * 4000 + "\ndebounce_seconds: 5\n")
    assert load_settings(str(big), environ={"HOME": str(tmp_path)}).debounce_seconds == 5


def test_secret_redacted_everywhere(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cloud_sync:\n  access_key_id: AKIAEXAMPLE\n  secret_access_key: {SECRET}\n")
    s = load_settings(cfg, environ=env(tmp_path))
    assert s.cloud_sync.secret_access_key is not None
    assert s.cloud_sync.secret_access_key.get_secret_value() == SECRET
    for text in (repr(s), str(s), str(s.redacted()), repr(s.cloud_sync)):
        assert SECRET not in text


def test_cli_config_check_show_and_exit_78(tmp_path: Path) -> None:
    e = base_env(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text(
        f"cloud_sync:\n  access_key_id: AKIAEXAMPLE\n  secret_access_key: {SECRET}\n"
        "  system_id: box\n"
    )
    res = akoshad("config", "check", "--config", str(good), env=e)
    assert res.returncode == 0 and "configuration ok" in res.stdout
    res = akoshad("config", "show", "--config", str(good), env=e)
    assert res.returncode == 0 and "secret_access_key: '**********'" in res.stdout
    assert SECRET not in res.stdout + res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"cloud_sync:\n  secret_access_key: {SECRET}\n  chunk_size_mb: 1000\n")
    res = akoshad("config", "check", "--config", str(bad), env=e)
    assert res.returncode == 78
    assert res.stderr.count("\n") == 1 and "cloud_sync.chunk_size_mb" in res.stderr
    assert "Traceback" not in res.stderr and SECRET not in res.stderr
    e2 = dict(e, AKOSHAD_MAX_DELAY_SECONDS="soon")
    res = akoshad("run", "--once", env=e2)
    assert res.returncode == 78 and "max_delay_seconds" in res.stderr


@pytest.mark.parametrize("what", ["file", "directory", "shared directory"])
def test_config_check_refuses_a_socket_path_that_run_refuses(tmp_path: Path, what: str) -> None:
    """``config check`` says what ``run`` would (exit 78), and changes nothing."""
    parent = tmp_path / "run"
    parent.mkdir(mode=0o700)
    sock = parent / "a.sock"
    if what == "file":
        sock.write_text("")
    elif what == "directory":
        sock.mkdir()
    else:
        parent.chmod(0o777)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"socket_path: {sock}\nstate_dir: {tmp_path / 'state'}\n")
    e = base_env(tmp_path)
    for args in (("config", "check"), ("run",)):
        res = akoshad(*args, "--config", str(cfg), env=e, timeout=60)
        assert res.returncode == 78, (args, res.stderr)
        assert f"socket_path {sock}" in res.stderr.splitlines()[-1]
    assert not (tmp_path / "state").exists()  # run refused it before writing anything


def test_system_id_slug() -> None:
    assert slug_system_id("mac.local") == "mac-local"
    assert slug_system_id("...") == "akoshad"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "data_dir",
                "debounce_seconds",
                "max_delay_seconds",
                "include",
                "log_level",
                "akosha_url",
                "cloud_sync",
                "unknown",
                "log_format",
            ]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-5, 10**6),
            st.floats(allow_nan=True),
            st.text(max_size=20),
            st.lists(st.text(max_size=5), max_size=3),
            st.dictionaries(st.text(max_size=10), st.integers(), max_size=3),
        ),
        max_size=5,
    )
)
def test_any_config_is_valid_or_one_clear_line(data: dict[str, object]) -> None:
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "c.yaml"
        cfg.write_text(yaml.safe_dump(data))
        try:
            load_settings(cfg, environ={"HOME": d})
        except ConfigError as exc:
            text = str(exc)
            assert text.startswith("invalid configuration") or "configuration file" in text
            assert "\n" not in text


def test_a_value_with_a_newline_is_quoted_on_one_line(tmp_path: Path) -> None:
    """Found by the property above: ``data_dir: "0\\n"`` echoed its newline."""
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": "0\n"}))
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={"HOME": str(tmp_path)})
    assert "\n" not in str(err.value) and "not relative (0\\n)" in str(err.value)


def test_a_socket_path_too_long_to_bind_is_no_daemon_for_a_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No daemon can listen on a socket path over the system's limit: the daemon's own
    configuration refuses it (exit 78, above), and a client command, which only warns about
    the configuration, says that nobody can answer there (exit 3) instead of failing."""
    from akoshad.cli.main import main
    from akoshad.names import EXIT_NO_DAEMON, SOCKET_PATH_MAX

    sock = tmp_path / ("s" * (SOCKET_PATH_MAX + 1 - len(str(tmp_path)) - 1))
    assert len(str(sock)) == SOCKET_PATH_MAX + 1
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"socket_path: {sock}\n")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env(tmp_path).items():
            mp.setenv(key, value)
        assert main(["status", "--config", str(cfg)]) == EXIT_NO_DAEMON
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("akoshad: warning: invalid configuration: socket_path")
    assert err[-1] == (
        f"akoshad: akoshad is not running: the socket path is {SOCKET_PATH_MAX + 1} bytes long, "
        f"and a Unix socket path may have at most {SOCKET_PATH_MAX}: choose a shorter socket_path"
    )


async def test_a_reload_that_fails_unexpectedly_keeps_the_daemon_and_its_config(
    tmp_path: Path,
) -> None:
    """A SIGHUP reload is refused, never fatal, whatever goes wrong while it loads (an error
    that is not a ConfigError used to end the daemon's task group)."""
    from loguru import logger

    from akoshad.runtime.daemon import Daemon

    settings = load_settings(environ=env(tmp_path))

    def broken() -> Any:
        raise TypeError(f"keywords must be strings ({SECRET})")

    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        daemon = Daemon(settings, reload=broken)
        assert await daemon.reload() is False
    finally:
        logger.remove(sink)
    assert daemon.settings is settings
    (line,) = [x for x in lines if "reload refused" in x]
    assert "TypeError: keywords must be strings" in line
    # the status says so too (its warnings), until a reload passes
    refused = daemon.reload_refused
    assert refused is not None and refused.startswith(line.strip())


def test_a_reload_names_the_settings_that_wait_for_a_restart(tmp_path: Path) -> None:
    """Settings read once at start (the log sinks, the watchdog, the health watch) are not
    silently ignored by a reload: it names them (the log, status's warnings) until the
    daemon restarts or they are set back; those applied at once are not named."""
    from akoshad.runtime.reload import waiting_for_restart

    settings = load_settings(environ=env(tmp_path))
    changed = settings.model_copy(
        update={
            "log_level": "DEBUG",
            "log_file": tmp_path / "logs" / "akoshad.log",
            "watchdog_stall_seconds": 900.0,
            "degraded_fail_after_minutes": 5.0,
            "debounce_seconds": 1.0,  # applied at once: not named
        }
    )
    assert waiting_for_restart(settings, changed) == [
        "log_level",
        "log_file",
        "watchdog_stall_seconds",
        "degraded_fail_after_minutes",
    ]
    assert waiting_for_restart(settings, settings) == []


async def test_a_reload_with_the_configuration_file_gone_keeps_the_running_one(
    tmp_path: Path,
) -> None:
    """The default file read at start, moved away (or caught mid-save) at a SIGHUP: the
    reload took the defaults, so retention came back on (enabled: false was the file's)
    and prunes would delete uploads, while status named only data_dir as waiting. The
    reload is now refused, the running configuration kept."""
    from akoshad.runtime.daemon import Daemon
    from akoshad.runtime.health import config_problems
    from akoshad.runtime.reload import reloader

    e = env(tmp_path)
    cfg = Path(e["HOME"]) / ".config" / "akoshad" / "config.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("retention:\n  enabled: false\n")
    settings = load_settings(environ=e)
    daemon = Daemon(settings, reload=reloader(None, {}, e))
    cfg.rename(cfg.with_name("moved.yaml"))
    assert await daemon.reload() is False
    assert daemon.settings.retention.enabled is False
    refused = daemon.reload_refused or ""
    assert f"configuration file {cfg} is gone (it was read at start)" in refused
    (problem,) = config_problems({"reload_refused": refused})
    assert problem.endswith("the next start would run on the defaults")
    cfg.with_name("moved.yaml").rename(cfg)
    assert reloader(None, {}, e)().retention.enabled is False  # back: read as before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_a_file_holding_secrets_that_others_may_read_is_warned_of(
    tmp_path: Path, mode: int
) -> None:
    """A configuration file with the S3 secret or a webhook's secret, readable by others
    (0644 by the usual umask): nothing said so, while an identity file gets a warning.
    config check, config show and the daemon's start now warn, never showing the secret."""
    from akoshad.cli.config import check_lines
    from akoshad.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cloud_sync:\n  cloud_bucket: b\n  access_key_id: AK\n"
        f"  secret_access_key: {SECRET}\n"
        "webhooks:\n  - url: http://127.0.0.1:9/h\n  - url: http://127.0.0.1:9/i\n"
        f"    secret: {SECRET}\n"
    )
    cfg.chmod(mode)
    loaded = load_config(cfg, environ=env(tmp_path))
    text = "\n".join(check_lines(loaded))
    assert SECRET not in text
    line = (
        f"warning: configuration file {cfg} holds cloud_sync.secret_access_key, "
        f"webhooks[1].secret and others may read it (mode {mode:04o}): run chmod 600 {cfg}"
    )
    assert (line in text.splitlines()) is (mode != 0o600)
    assert any("others may read it" in n for n in loaded.settings.notes) is (mode != 0o600)
    cfg.chmod(0o644)
    cfg.write_text("debounce_seconds: 3\n")  # no secret: nothing to say
    assert "others may read" not in "\n".join(check_lines(load_config(cfg, environ=env(tmp_path))))


def test_a_relative_xdg_config_home_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XDG_CONFIG_HOME=cfg (relative) named the file under the working directory, so the
    configuration followed the directory a command started in, while a relative
    XDG_STATE_HOME or XDG_DATA_HOME is ignored as the XDG spec says. It is ignored too now."""
    from akoshad.cli.keygen import default_identity_path
    from akoshad.fastpath import resolve_config_path

    (tmp_path / "cfg" / "akoshad").mkdir(parents=True)
    (tmp_path / "cfg" / "akoshad" / "config.yaml").write_text("debounce_seconds: 7\n")
    (tmp_path / "cfg" / "session-buddy").mkdir()
    (tmp_path / "cfg" / "session-buddy" / "config.yaml").write_text(
        "cloud_sync:\n  system_id: from-cwd\n"
    )
    monkeypatch.chdir(tmp_path)
    e = env(tmp_path / "home", XDG_CONFIG_HOME="cfg")
    settings = load_settings(environ=e)
    assert settings.debounce_seconds == 2 and settings.cloud_sync.system_id != "from-cwd"
    home_config = tmp_path / "home" / ".config"
    assert resolve_config_path(None, e) == (home_config / "akoshad" / "config.yaml", False)
    assert default_identity_path(e) == home_config / "akoshad" / "identity.txt"
    absolute = env(tmp_path / "home", XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    assert load_settings(environ=absolute).debounce_seconds == 7  # an absolute one counts


def test_a_readable_file_with_credentials_in_a_url_is_warned_of(tmp_path: Path) -> None:
    """A user name and password in akosha_url (a proxy with HTTP Basic before Akosha), or a
    webhook URL holding its token (user:pw@, a Slack-like path), are secrets too: a file
    others may read that holds one is warned of, without showing it."""
    from akoshad.cli.config import check_lines
    from akoshad.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "akosha_url: http://me:pw-0123456789@127.0.0.1:8682/mcp\n"
        "webhooks:\n  - url: http://127.0.0.1:9/h\n"
        "  - url: https://hooks.example.com/services/T0/B0/AbCdEfGh1234567890xyz\n"
    )
    cfg.chmod(0o644)
    text = "\n".join(check_lines(load_config(cfg, environ=env(tmp_path))))
    assert f"{cfg} holds akosha_url, webhooks[1].url and others may read it" in text, text
    assert "pw-0123456789" not in text and "AbCdEfGh1234567890xyz" not in text
    cfg.write_text("akosha_url: http://127.0.0.1:8682/mcp\n")
    assert "others may read" not in "\n".join(check_lines(load_config(cfg, environ=env(tmp_path))))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('exclude: "*.duckdb"\n', "exclude"),
        ("webhooks: http://127.0.0.1:1/hook\n", "webhooks"),
        ("encryption:\n  recipients: age1-one-key\n", "encryption.recipients"),
    ],
)
def test_one_value_where_a_list_goes_says_how_to_write_a_list(
    tmp_path: Path, text: str, where: str
) -> None:
    """Before: 'Input should be a valid list', which says nothing of YAML's list forms;
    the value itself is never echoed (a webhook URL may hold credentials)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env(tmp_path))
    msg = str(info.value)
    assert f"{where}: give a list, even of one item" in msg and "'- item'" in msg
    assert "127.0.0.1" not in msg and "age1-one-key" not in msg


def test_a_url_scheme_in_capitals_is_taken_in_lower_case(tmp_path: Path) -> None:
    """``HTTP://`` and ``Https://`` name the same schemes (they have no case): taken, and
    kept in lower case, for the Akosha URL, the S3 endpoint and a webhook."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "akosha_url: HTTP://127.0.0.1:8682/mcp\n"
        "cloud_sync:\n  cloud_bucket: b\n  cloud_endpoint: Https://s3.example:9000\n"
        "webhooks:\n  - url: HTTPS://hooks.example/a\n"
    )
    s = load_settings(cfg, environ=env(tmp_path))
    assert s.akosha_url == "http://127.0.0.1:8682/mcp"
    assert s.cloud_sync.cloud_endpoint == "https://s3.example:9000"
    assert s.webhooks[0].url == "https://hooks.example/a"
