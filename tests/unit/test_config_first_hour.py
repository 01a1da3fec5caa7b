"""The configuration a new user gets right or is told about: --config in either place,
AKOSHAD_* names checked like file keys, the socket found from a broken file, and
session-buddy's own cloud_sync settings taken as they are, each value's source recorded."""

from __future__ import annotations

import argparse
import io
import re
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from akoshad import fastpath
from akoshad.cli.config import check_lines, render_sources
from akoshad.cli.main import main, parse_args
from akoshad.cli.parser import build_parser
from akoshad.config import fallback_socket_path, load_config, load_settings
from akoshad.errors import ConfigError

COMMANDS = [
    ["run", "--once"],
    ["status"],
    ["sync", "--wait"],
    ["pause"],
    ["resume"],
    ["queue"],
    ["config", "check"],
    ["config", "show"],
    ["verify"],
    ["restore", "--latest", "--dest", "r"],
    ["service", "install", "--dry-run"],
    ["mcp"],
    ["uploads"],
    ["drill"],
    ["prune", "--dry-run"],
    ["takeover"],
    ["keygen"],
]


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), **extra}


def sb_config(tmp_path: Path, text: str, config_home: Path | None = None) -> Path:
    path = (config_home or tmp_path / ".config") / "session-buddy" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def usage_error(argv: list[str]) -> str:
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    return err.getvalue()


# ---- 11.1: --config before or after the command ---------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_config_is_read_before_or_after_the_command(command: list[str]) -> None:
    assert parse_args(["--config", "a.yaml", *command]).config == "a.yaml"
    assert parse_args([*command, "--config", "a.yaml"]).config == "a.yaml"
    assert parse_args(["--config=b.yaml", *command]).config == "b.yaml"
    assert parse_args(command).config is None
    # the same file in both places is fine
    same = parse_args(["--config", "a.yaml", *command, "--config", "./a.yaml"]).config
    assert same in ("a.yaml", "./a.yaml")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_debug_is_read_before_or_after_the_command(command: list[str]) -> None:
    """``akoshad status --debug`` as ``akoshad --debug status``: no usage error."""
    assert parse_args(["--debug", *command]).debug is True
    assert parse_args([*command, "--debug"]).debug is True
    assert parse_args(command).debug is False
    assert "sub_debug" not in vars(parse_args([*command, "--debug"]))


def test_every_command_is_in_the_config_placement_list() -> None:
    """CONTRACT.md: every command takes ``--config FILE``, before or after the command."""
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert isinstance(subparsers.choices, dict)
    assert set(subparsers.choices) == {c[0] for c in COMMANDS}


def test_two_different_config_files_are_a_usage_error() -> None:
    text = usage_error(["--config", "a.yaml", "run", "--once", "--config", "b.yaml"])
    assert "a.yaml" in text and "b.yaml" in text and "before and after" in text
    text = usage_error(["status", "--config", "a.yaml", "--config", "b.yaml"])
    assert "a.yaml" in text and "b.yaml" in text and "twice" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "a.yaml", "run", "--once"],
        ["run", "--once", "--config", "a.yaml"],
        ["run", "--once", "--config=a.yaml"],
        ["--config=a.yaml", "run", "--data-dir", "d", "--once"],
        ["--config", "./a.yaml", "run", "--once", "--config", "a.yaml"],
    ],
)
def test_quick_check_reads_the_config_the_parser_reads(argv: list[str]) -> None:
    assert parse_args(argv).config == "a.yaml"
    assert fastpath._config_arg(argv) == (True, "a.yaml")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--once", "--conf", "a.yaml"],  # no abbreviation: a usage error
        ["--conf=a.yaml", "run", "--once"],
        ["run", "--once", "--data", "d", "--config", "a.yaml"],
    ],
)
def test_quick_check_leaves_other_spellings_to_the_parser(argv: list[str]) -> None:
    with redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert fastpath._config_arg(argv) == (False, None)


PIECES = [
    ["--config", "a.yaml"],
    ["--config=./a.yaml"],
    ["--config", "b.yaml"],
    ["--config="],
    ["--config"],
    ["--once"],
    ["--once"],
    ["--data-dir", "d"],
    ["--data-dir=d"],
    ["--conf", "a.yaml"],
    ["run"],
    ["status"],
    ["--"],
    ["-x"],
    ["-h"],
]
pieces = st.lists(st.sampled_from(PIECES), max_size=4).map(lambda ps: [t for p in ps for t in p])


@settings(max_examples=500, deadline=None)
@given(pieces, st.booleans(), pieces)
def test_quick_check_never_disagrees_with_the_parser(
    before: list[str], run: bool, after: list[str]
) -> None:
    argv = [*before, *(["run"] if run else []), *after]
    understood, config = fastpath._config_arg(argv)
    if not understood:
        return
    with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
        args = parse_args(argv)  # a usage error here would be a disagreement
    assert args.command == "run" and args.config == config


# ---- 11.14 (part): help texts ---------------------------------------------------------


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(out.getvalue().split())


def test_sync_method_and_status_have_help() -> None:
    text = _help(["sync"])
    assert "--method {auto,cloud,http} where this drain delivers" in text
    assert "cloud = the bucket only" in text and "http = memories to Akosha only" in text
    text = _help(["status"])
    assert "Exit 3 when no daemon answers" in text
    assert "invalid configuration file only gives a warning" in text
    assert "--json print the daemon's status result object as JSON" in text
    assert "seconds between --watch refreshes (default 1, at least 0.2)" in text


# ---- 11.4: AKOSHAD_* variables are checked like file keys ----------------------------


@pytest.mark.parametrize(
    ("var", "hint"),
    [
        ("AKOSHAD_DEBOUNCE_SECOND", "AKOSHAD_DEBOUNCE_SECONDS"),
        ("AKOSHAD_LOGLEVEL", "AKOSHAD_LOG_LEVEL"),
        ("AKOSHAD_CLOUD_SYNC__CLOUD_BUCKT", "AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET"),
        ("AKOSHAD_CLOUDSYNC__CLOUD_BUCKET", "AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET"),
        ("AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET__NAME", "AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET"),
        ("AKOSHAD_DATA_DIR__X", "AKOSHAD_DATA_DIR"),
        ("AKOSHAD_ZZZ", None),
    ],
)
def test_unknown_variable_is_an_error_naming_it(tmp_path: Path, var: str, hint: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, **{var: "3"}))
    text = str(info.value)
    assert f"unknown environment variable {var}" in text and "\n" not in text
    if hint:
        assert f"did you mean `{hint}`?" in text
    else:
        assert "did you mean" not in text
    assert info.value.exit_code == 78


@pytest.mark.parametrize(
    ("var", "meant"),
    [
        ("AKOSAHD_CLOUD_SYNC__CLOUD_BUCKET", "AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET"),
        ("AKOSHADCLOUD_SYNC__CLOUD_BUCKET", "AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET"),
        ("akosahd_data_dir", "AKOSHAD_DATA_DIR"),
        ("AKSHAD_LOG_LEVEL", "AKOSHAD_LOG_LEVEL"),
        ("AKOSHAD-DEBOUNCE_SECONDS", "AKOSHAD_DEBOUNCE_SECONDS"),
        ("AKOSAHD_CONFIG", "AKOSHAD_CONFIG"),
    ],
)
def test_a_misspelt_prefix_is_warned_not_read(tmp_path: Path, var: str, meant: str) -> None:
    """A typo in the prefix was ignored without a word: the backup looked configured."""
    loaded = load_config(environ=env(tmp_path, **{var: "secret-value"}))
    (line,) = [w for w in loaded.settings.warnings if var in w]
    assert line == (
        f"environment variable {var} is not read: akoshad's variables begin with "
        f"AKOSHAD_ (did you mean `{meant}`?)"
    )
    assert all("secret-value" not in w for w in loaded.settings.notes)


def test_akoshas_own_and_other_variables_are_no_misspelt_prefix(tmp_path: Path) -> None:
    others = {"AKOSHA_DATA_DIR": "/a", "MY_DATA_DIR": "/b", "SESSION_BUDDY_LOG_LEVEL": "x"}
    loaded = load_config(environ=env(tmp_path, **others))
    assert not [w for w in loaded.settings.warnings if "is not read" in w]


def test_variables_that_are_not_settings_still_pass(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("debounce_seconds: 3\n")
    s = load_settings(
        environ=env(
            tmp_path,
            AKOSHAD_CONFIG=str(cfg),
            AKOSHAD_DEBUG="1",
            AKOSHAD_CLOUD_SYNC='{"max_retries": 1}',
            AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET="b",
        )
    )
    assert s.debounce_seconds == 3
    assert s.cloud_sync.max_retries == 1 and s.cloud_sync.cloud_bucket == "b"


def test_environment_errors_name_the_variable_not_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("debounce_seconds: 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env(tmp_path, AKOSHAD_LOG_LEVEL="LOUD"))
    text = str(info.value)
    assert "log_level" in text and "(from env AKOSHAD_LOG_LEVEL)" in text
    assert str(cfg) not in text and "file" not in text
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env(tmp_path, AKOSHAD_EXCLUDE="[not json"))
    assert "exclude" in str(info.value) and "AKOSHAD_EXCLUDE" in str(info.value)
    # a check across keys names every source involved
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env(tmp_path, AKOSHAD_MAX_DELAY_SECONDS="1"))
    assert f"file {cfg}" in str(info.value) and "env AKOSHAD_MAX_DELAY_SECONDS" in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("debounce_second: 3\n", "debounce_second: unknown key (did you mean `debounce_seconds`?)"),
        ("loglevel: DEBUG\n", "loglevel: unknown key (did you mean `log_level`?)"),
        (
            "cloud_sync:\n  cloud_bukket: x\n",
            "cloud_sync.cloud_bukket: unknown key (did you mean `cloud_bucket`?)",
        ),
        (
            "webhooks:\n  - url: http://h\n    secrett: s\n",
            "webhooks.0.secrett: unknown key (did you mean `secret`?)",
        ),
    ],
)
def test_unknown_file_key_suggests_the_nearest(tmp_path: Path, yaml_text: str, needle: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env(tmp_path))
    assert needle in str(info.value) and f"(from file {cfg})" in str(info.value)


def test_far_off_key_gets_no_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("zzzqqq: 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env(tmp_path))
    assert "zzzqqq: unknown key" in str(info.value) and "did you mean" not in str(info.value)


# ---- 11.5: the socket of a broken configuration --------------------------------------


def test_fallback_socket_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("socket_path: /x/from-file.sock\nbogus_key: 1\n")
    with pytest.raises(ConfigError):
        load_settings(cfg, environ=env(tmp_path))
    e = env(tmp_path, XDG_RUNTIME_DIR="/run/user/9")
    assert fallback_socket_path(cfg, e) == Path("/x/from-file.sock")
    e["AKOSHAD_SOCKET_PATH"] = "/x/from-env.sock"  # the environment wins, as always
    assert fallback_socket_path(cfg, e) == Path("/x/from-env.sock")
    cfg.write_text("state_dir: /x/state\nsocket_path: [unclosed\n")  # its line unreadable
    with pytest.raises(ConfigError, match="the file's socket_path line cannot be read"):
        fallback_socket_path(cfg, env(tmp_path, XDG_RUNTIME_DIR="/run/user/9"))
    cfg.write_text("state_dir: /x/state\ndebounce_seconds: [\n")  # not YAML, no socket_path
    assert fallback_socket_path(cfg, env(tmp_path, XDG_RUNTIME_DIR="/run/user/9")) == Path(
        "/run/user/9/akoshad.sock"
    )
    assert fallback_socket_path(cfg, env(tmp_path)) == Path("/x/state/akoshad.sock")
    cfg.write_text("state_dir: /x/state\nbogus: 1\n")
    assert fallback_socket_path(cfg, env(tmp_path)) == Path("/x/state/akoshad.sock")
    missing = tmp_path / "missing.yaml"  # named and missing: the default may be another's
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist"):
        fallback_socket_path(missing, env(tmp_path))
    unnamed = env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "none"))  # no default file: fine
    assert fallback_socket_path(None, unnamed) == (
        tmp_path / ".local" / "state" / "akoshad" / "akoshad.sock"
    )


@pytest.mark.parametrize(
    "tail",
    [
        "cloud_sync:\n  system_id: x\n",  # a second cloud_sync: group, the last wins in YAML
        "debounce_seconds: [\n",  # not YAML: the top-level socket_path line is read alone
        "bad: {\nsocket_path: /x/last.sock  # the last line wins, as YAML's would\n",
    ],
)
def test_fallback_socket_path_of_a_file_that_does_not_load(tmp_path: Path, tail: str) -> None:
    """A refused reload must not make status say "not running": the file's socket_path
    is still where the daemon listens."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cloud_sync:\n  system_id: a\nsocket_path: /x/file.sock\n{tail}")
    with pytest.raises(ConfigError):
        load_settings(cfg, environ=env(tmp_path))
    expected = "/x/last.sock" if "last" in tail else "/x/file.sock"
    assert fallback_socket_path(cfg, env(tmp_path)) == Path(expected)


def test_client_with_an_unreadable_socket_path_line_is_told_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "akoshad is not running" (exit 3) at a default socket: one line, exit 78."""
    monkeypatch.delenv("AKOSHAD_SOCKET_PATH", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("socket_path: [/x/file.sock\n")
    code = main(["status", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 78
    assert err == (
        f"akoshad: configuration file {cfg} is not valid YAML at line 2: expected ',' or "
        "']', but got '<stream end>'; the file's "
        "socket_path line cannot be read, so status cannot tell where the daemon listens "
        "(fix the file, or set AKOSHAD_SOCKET_PATH)\n"
    )


def test_client_with_an_unreadable_file_is_told_why_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration file that cannot be read (here a directory: --config given the
    directory it is in): the reason once, not again as a second, vaguer one, and in
    words, not '[Errno 21] Is a directory: PATH' (the path twice)."""
    monkeypatch.delenv("AKOSHAD_SOCKET_PATH", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.mkdir()
    code = main(["status", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 78
    assert err.count("is a directory") == 1 and "Errno" not in err, err
    assert err.startswith(
        f"akoshad: configuration file {cfg} is a directory: name the YAML file in it "
        "(e.g. config.yaml)"
    )
    assert err.endswith(
        ", so status cannot tell where the daemon listens (fix the file, or set "
        "AKOSHAD_SOCKET_PATH)\n"
    )


# ---- 11.6: session-buddy's settings ---------------------------------------------------


def test_session_buddy_keys_are_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cloud_sync:\n  upload_on_session_end: false\n  chunk_size_mb: 2\n")
    loaded = load_config(cfg, environ=env(tmp_path))
    assert loaded.settings.cloud_sync.upload_on_session_end is False
    assert loaded.settings.cloud_sync.chunk_size_mb == 5
    (note,) = loaded.notes
    assert "chunk_size_mb 2 raised to 5" in note and f"file {cfg}" in note
    assert loaded.settings.notes == loaded.notes  # the daemon logs them at start
    assert any("raised to 5" in line for line in check_lines(loaded))
    for bad in (0, 101):
        cfg.write_text(f"cloud_sync:\n  chunk_size_mb: {bad}\n")
        with pytest.raises(ConfigError, match=r"cloud_sync\.chunk_size_mb"):
            load_settings(cfg, environ=env(tmp_path))
    cfg.write_text("cloud_sync:\n  chunk_size_mb: 8\n")
    assert load_config(cfg, environ=env(tmp_path)).notes == ()


def test_session_buddy_fills_what_akoshad_leaves_unset(tmp_path: Path) -> None:
    sb = sb_config(
        tmp_path,
        "cloud_sync:\n  cloud_bucket: sb-bucket\n  cloud_region: eu-sb\n  system_id: sb-box\n"
        "  max_retries: 7\n  their_own_key: 1\n  access_key_id: not-taken\n"
        "paths:\n  data_dir: /not/ours\n",
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cloud_sync:\n  cloud_region: eu-own\n")
    e = env(tmp_path, SESSION_BUDDY_CLOUD_SYNC__MAX_RETRIES="2", SESSION_BUDDY_OTHER="x")
    loaded = load_config(cfg, environ=e)
    cs = loaded.settings.cloud_sync
    assert cs.cloud_bucket == "sb-bucket" and cs.system_id == "sb-box"
    assert cs.cloud_region == "eu-own"  # akoshad's file wins over session-buddy's
    assert cs.max_retries == 2  # session-buddy's variable wins over its file
    assert cs.access_key_id is None  # not a session-buddy setting: not taken
    assert loaded.settings.data_dir == tmp_path / ".claude" / "data"
    sources = loaded.effective_sources()
    assert sources["cloud_sync.cloud_bucket"] == f"session-buddy file {sb}"
    assert sources["cloud_sync.cloud_region"] == f"file {cfg}"
    assert (
        sources["cloud_sync.max_retries"]
        == "session-buddy env SESSION_BUDDY_CLOUD_SYNC__MAX_RETRIES"
    )
    assert sources["cloud_sync.enable_fallback"] == "default"
    # akoshad's own environment wins over session-buddy's
    e["AKOSHAD_CLOUD_SYNC__MAX_RETRIES"] = "9"
    e["AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET"] = "own"
    loaded = load_config(cfg, environ=e)
    assert loaded.settings.cloud_sync.max_retries == 9
    assert loaded.settings.cloud_sync.cloud_bucket == "own"
    assert loaded.effective_sources()["cloud_sync.max_retries"] == (
        "env AKOSHAD_CLOUD_SYNC__MAX_RETRIES"
    )
    assert any("from session-buddy file" in line for line in check_lines(loaded))


def test_session_buddy_file_follows_xdg_config_home(tmp_path: Path) -> None:
    sb_config(tmp_path, "cloud_sync:\n  cloud_bucket: default-place\n")
    sb_config(tmp_path, "cloud_sync:\n  cloud_bucket: xdg-place\n", tmp_path / "xdg")
    assert load_settings(environ=env(tmp_path)).cloud_sync.cloud_bucket == "default-place"
    e = env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    assert load_settings(environ=e).cloud_sync.cloud_bucket == "xdg-place"


@pytest.mark.parametrize(
    "text",
    [
        "cloud_sync:\n  max_retries: 99\n",
        "cloud_sync:\n  force_method: pigeon\n",
        "cloud_sync:\n  system_id: my.host\n",
        "cloud_sync: 5\n",
        "cloud_sync: [unclosed\n",
    ],
)
def test_invalid_session_buddy_value_names_its_file(tmp_path: Path, text: str) -> None:
    sb = sb_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path))
    assert str(sb) in str(info.value) and "\n" not in str(info.value)


def test_invalid_session_buddy_variable_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, SESSION_BUDDY_CLOUD_SYNC__MAX_RETRIES="lots"))
    assert "SESSION_BUDDY_CLOUD_SYNC__MAX_RETRIES" in str(info.value)
    # unknown session-buddy variables are not ours: ignored
    s = load_settings(environ=env(tmp_path, SESSION_BUDDY_CLOUD_SYNC__NOT_A_FIELD="x"))
    assert s.cloud_sync.cloud_bucket is None


def test_config_show_stays_the_same_yaml_with_sources(tmp_path: Path) -> None:
    sb_config(tmp_path, "cloud_sync:\n  cloud_bucket: sb-bucket\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("debounce_seconds: 3\n")
    loaded = load_config(
        cfg, overrides={"data_dir": "/d"}, environ=env(tmp_path, AKOSHAD_LOG_LEVEL="debug")
    )
    text = render_sources(loaded)
    assert all(line.startswith("#") for line in text.splitlines())
    assert yaml.safe_load(text) is None  # comments only: parsers see the same document
    lines = {" ".join(line.split()[1:3]): line for line in text.splitlines()}
    assert lines["data_dir command"].endswith("command line")
    assert lines["debounce_seconds file"].endswith(str(cfg))
    assert lines["log_level env"].endswith("AKOSHAD_LOG_LEVEL")
    assert lines["cloud_sync.cloud_bucket session-buddy"].endswith("config.yaml")
    assert lines["max_delay_seconds default"]


def test_quick_check_key_covers_session_buddy(tmp_path: Path) -> None:
    cfg = tmp_path / "none.yaml"
    e = env(tmp_path)
    base = fastpath.inputs_key(["run", "--once"], e, cfg)
    sb_config(tmp_path, "cloud_sync:\n  cloud_bucket: x\n")
    with_file = fastpath.inputs_key(["run", "--once"], e, cfg)
    assert with_file != base
    e["SESSION_BUDDY_CLOUD_SYNC__CLOUD_BUCKET"] = "y"
    assert fastpath.inputs_key(["run", "--once"], e, cfg) != with_file


@pytest.mark.parametrize("spelling", [["--data-dir", "store"], ["--data-dir=store"]])
def test_quick_check_tells_a_relative_data_dir_of_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: list[str]
) -> None:
    """``run --once --data-dir store`` run in another directory backs up another store:
    the first directory's record must not answer it with "nothing changed"."""
    e = env(tmp_path)
    argv = ["run", "--once", *spelling]
    for name in ("a", "b"):
        (tmp_path / name / "store").mkdir(parents=True)
        (tmp_path / name / "store" / f"{name}.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "a")
    store = tmp_path / "a" / "store"
    quiet = time.time_ns() + 10**10  # walked once the store's writes were long over
    fastpath.record_unchanged(
        argv, e, store, tmp_path / "state", fastpath.stat_map(store), walked_ns=quiet
    )
    assert fastpath.try_unchanged(argv, e)  # the same directory: answered at once
    monkeypatch.chdir(tmp_path / "b")
    assert not fastpath.try_unchanged(argv, e)  # another store: the full run


@pytest.mark.parametrize(
    ("log", "extra", "said"),
    [
        ({"format": "json"}, {}, "json"),
        ({"format": "text"}, {}, "text"),
        ({"level": "WARNING"}, {}, ""),
        ({"format": "json"}, {"INVOCATION_ID": "x"}, "<6>run --once: nothing changed"),
    ],
)
def test_the_quick_check_logs_as_the_configuration_says(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    log: dict[str, str],
    extra: dict[str, str],
    said: str,
) -> None:
    """``run --once`` on an unchanged store with ``log_format: json`` wrote '07:14:30 INFO
    run --once: nothing changed, no upload' on stderr, a line no JSON log reader takes
    (and wrote it at ``log_level: WARNING`` too). The answer now logs as the full run would:
    one JSON object, the text format's date and level, nothing above INFO, journald's
    priority under systemd; with a ``log_file`` the full run answers (it writes the file)."""
    e = env(tmp_path, **extra)
    argv = ["run", "--once", "--data-dir", str(tmp_path / "store")]
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.json").write_text("{}")
    stats, quiet = fastpath.stat_map(store), time.time_ns() + 10**10
    record = {"level": "INFO", "format": "text", "file": False, **log}
    fastpath.record_unchanged(argv, e, store, tmp_path / "st", stats, walked_ns=quiet, log=record)
    assert fastpath.try_unchanged(argv, e)
    err = capsys.readouterr().err
    if said == "json":
        line = yaml.safe_load(err)  # one JSON object, as the json sink writes
        assert line["level"] == "INFO" and line["message"] == fastpath.UNCHANGED, err
        assert line["time"].startswith(time.strftime("%Y-%m-%d")), err
    elif said == "text":
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"  # the text format's, to the second
        assert re.fullmatch(rf"{stamp} INFO    {fastpath.UNCHANGED}\n", err), err
    else:
        assert err == (f"{said}, no upload\n" if said else ""), err
    to_file = {**record, "file": True}
    fastpath.record_unchanged(argv, e, store, tmp_path / "st", stats, walked_ns=quiet, log=to_file)
    assert not fastpath.try_unchanged(argv, e)  # the full run writes the log_file


def wait_for_exec(pid: int) -> None:
    """Until process ``pid`` runs its own command line (a fork shows its parent's)."""
    deadline = time.monotonic() + 10
    while b"akoshad" not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.01)


def test_the_quick_check_never_takes_the_state_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --once``'s quick check tried the state's lock (flock, not waiting) to learn
    whether a daemon runs: a daemon starting at that moment, whose own lock does not wait
    either, found it taken and exited 1 'another akoshad is already running'. The check
    reads the holder's pid from the lock file instead: a live akoshad there means the full
    run (which refuses beside a daemon), a holder gone means nothing."""
    import fcntl
    import subprocess
    import sys

    def taken(*_args: object) -> None:
        raise AssertionError("the quick check took the state's lock")

    monkeypatch.setattr(fcntl, "flock", taken)
    e = env(tmp_path)
    argv = ["run", "--once", "--data-dir", str(tmp_path / "store")]
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.json").write_text("{}")
    state = tmp_path / "st"
    state.mkdir()
    stats, quiet = fastpath.stat_map(tmp_path / "store"), time.time_ns() + 10**10
    fastpath.record_unchanged(argv, e, tmp_path / "store", state, stats, walked_ns=quiet)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "akoshad"])
    try:
        wait_for_exec(holder.pid)
        (state / "akoshad.lock").write_text(f"{holder.pid}\n")  # as StateLock writes it
        assert not fastpath.try_unchanged(argv, e)  # an akoshad holds the state: full run
    finally:
        holder.kill()
        holder.wait()
    assert fastpath.try_unchanged(argv, e)  # its holder gone: answered at once


@pytest.mark.parametrize("command", [["verify"], ["restore"], ["uploads"]])
def test_target_option_has_help(command: list[str]) -> None:
    """``--target {auto,local,cloud}`` was listed with no word of what it reads."""
    text = _help(command)
    assert "--target {auto,local,cloud} the target to read: auto = where run uploads" in text


def _command_options() -> dict[str, list[argparse.Action]]:
    """Each command's own options (not -h, not --config)."""
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert isinstance(subparsers.choices, dict)
    return {
        name: [
            a
            for a in parser._actions
            if a.option_strings and a.dest not in ("help", "sub_config", "sub_debug")
        ]
        for name, parser in subparsers.choices.items()
    }


def test_every_option_of_every_command_says_what_it_does() -> None:
    """``akoshad COMMAND --help`` explains each option (a bare ``--target {auto,local,cloud}``
    left a new user guessing)."""
    silent = {
        f"{name} {a.option_strings[-1]}"
        for name, actions in _command_options().items()
        for a in actions
        if not a.help
    }
    assert silent == set()


def test_the_readme_command_table_names_every_option() -> None:
    """The README's table of commands shows each option a command takes (--identity of
    restore, verify and drill, which a restore on a new machine needs, was missing)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = []
    for name, actions in _command_options().items():
        if name == "mcp":
            continue  # its own section, no options
        cells = [  # each row's first cell: the synopsis (`akoshad pause` / `resume`)
            line.split(" | ")[0] for line in readme.splitlines() if line.startswith("| `akoshad ")
        ]
        cell = next((c for c in cells if f"`akoshad {name}" in c or f"/ `{name}`" in c), None)
        assert cell is not None, f"no row for akoshad {name}"
        missing += [
            f"{name} {opt}"
            for a in actions
            for opt in a.option_strings
            if opt.startswith("--") and opt not in cell
        ]
    assert missing == []


def test_a_session_buddy_store_elsewhere_than_data_dir_is_warned_of(tmp_path: Path) -> None:
    """session-buddy set to keep its store elsewhere (``paths.data_dir`` of its file,
    ``SESSION_BUDDY_PATHS__DATA_DIR``): akoshad does not take that setting, and backed up
    ~/.claude/data (an old store, or nothing: 'waiting for it to appear') without a word
    of the store session-buddy writes. config check (and the daemon's start) now say so."""
    sb = sb_config(tmp_path, f"paths:\n  data_dir: {tmp_path}/sb-store\n")
    loaded = load_config(None, environ=env(tmp_path))
    assert loaded.settings.data_dir == tmp_path / ".claude" / "data"  # not taken
    want = (
        f"warning: session-buddy keeps its store in {tmp_path}/sb-store (paths.data_dir in "
        f"{sb}), but data_dir is {tmp_path}/.claude/data"
    )
    assert any(line.startswith(want) for line in check_lines(loaded)), check_lines(loaded)
    assert any("session-buddy keeps its store" in n for n in loaded.settings.notes)  # logged
    e = env(tmp_path, SESSION_BUDDY_PATHS__DATA_DIR="/srv/sb")
    lines = check_lines(load_config(None, environ=e))
    assert any("in /srv/sb (env SESSION_BUDDY_PATHS__DATA_DIR)" in line for line in lines)

    def warned(text: str, sb_text: str) -> bool:
        sb_config(tmp_path, sb_text)
        cfg = tmp_path / "c.yaml"
        cfg.write_text(text)
        lines = check_lines(load_config(cfg, environ=env(tmp_path)))
        return any("session-buddy keeps" in line for line in lines)

    # the same store, spelled otherwise: nothing to say; a relative one cannot be told
    assert not warned(
        f"data_dir: {tmp_path}/sb-store/\n", f"paths: {{data_dir: {tmp_path}/sb-store}}\n"
    )
    assert not warned("data_dir: ~/sb-store\n", "paths:\n  data_dir: ~/sb-store\n")
    assert not warned("{}\n", "paths:\n  data_dir: relative/store\n")
    assert warned("data_dir: ~/other\n", "paths:\n  data_dir: ~/sb-store\n")
