"""Errors that say what happened: ``--debug`` / ``AKOSHAD_DEBUG=1`` show the traceback a
normal run hides; ``restore --dest`` expands ``~`` and ``~user`` as a shell does."""

from __future__ import annotations

import argparse
import os
import pwd
from pathlib import Path

import pytest

from akoshad.cli import main as cli
from akoshad.restore.readback import dest_path


def _boom(*_args: object) -> int:
    raise RuntimeError("the unexpected")


def _dispatch_to(monkeypatch: pytest.MonkeyPatch, home: Path, dispatch: object) -> None:
    """``main`` dispatches to ``dispatch``, in an environment of ``home`` alone."""
    monkeypatch.setattr(cli, "_dispatch", dispatch)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("AKOSHAD_DEBUG", raising=False)
    for key in list(os.environ):
        if key.startswith("XDG_"):
            monkeypatch.delenv(key)


@pytest.fixture
def broken_dispatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _dispatch_to(monkeypatch, tmp_path, _boom)


@pytest.mark.usefixtures("broken_dispatch")
def test_an_unexpected_error_is_one_line_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--once"]) == 1
    err = capsys.readouterr().err
    assert err == "akoshad: run failed: RuntimeError: the unexpected\n"


@pytest.mark.usefixtures("broken_dispatch")
def test_debug_flag_prints_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--debug", "run", "--once"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "_boom" in err and 'raise RuntimeError("the unexpected")' in err
    assert err.endswith("akoshad: run failed: RuntimeError: the unexpected\n")


@pytest.mark.usefixtures("broken_dispatch")
def test_akoshad_debug_env_prints_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AKOSHAD_DEBUG", "1")
    assert cli.main(["run", "--once"]) == 1
    assert "Traceback (most recent call last):" in capsys.readouterr().err


def test_debug_is_a_top_level_flag() -> None:
    args = cli.parse_args(["--debug", "status"])
    assert isinstance(args, argparse.Namespace) and args.debug is True
    assert cli.parse_args(["status"]).debug is False


def test_restore_dest_expands_home_and_other_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert dest_path("~/restored") == Path("/home/someone/restored")
    me = pwd.getpwuid(os.getuid())
    assert dest_path(f"~{me.pw_name}/x") == Path(me.pw_dir) / "x"
    assert dest_path("relative/dir") == Path("relative/dir")
    assert dest_path("/abs/~not") == Path("/abs/~not")


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["restore", "--upload-id", "../x", "--dest", "d"], "'../x' is not an upload id"),
        (["verify", "--upload-id", "a/b"], "'a/b' is not an upload id"),
        (["restore", "--latest", "--system-id", "../x", "--dest", "d"], "is not a system id"),
        (["verify", "--system-id", "a b"], "'a b' is not a system id"),
        (["uploads", "--system-id", ""], "'' is not a system id"),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None,
)
def test_an_invalid_id_on_the_command_line_is_a_usage_error(
    argv: list[str], bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with argparse's one line, as for ``--at garbage``; not 'failed: ValueError'."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"akoshad {argv[0]}: error: argument --") and bad in last, last


def test_a_reader_that_goes_away_gets_no_error_line(tmp_path: Path) -> None:
    """``akoshad config show | head -1``: the pipe closes before everything is written;
    the command ends without a 'failed: BrokenPipeError' line (exit 1, as the output was
    not all delivered)."""
    import subprocess
    import sys

    from tests.helpers import base_env

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "akoshad", "config", "show"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=base_env(tmp_path),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr == b"", proc.stderr


def test_a_command_logs_as_its_other_messages(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A command other than ``run`` writes its log lines as ``akoshad: warning: ...``,
    not in the log format of a library (time, module, line); a traceback only with
    ``--debug``."""
    from loguru import logger

    def logs(*_args: object) -> int:
        logger.info("did a thing")
        logger.warning("a planted link: not {}", "followed")
        try:
            raise ValueError("inside")
        except ValueError:
            logger.exception("it broke")
        return 0

    _dispatch_to(monkeypatch, tmp_path, logs)
    try:
        assert cli.main(["uploads"]) == 0
        assert capsys.readouterr().err == (
            "akoshad: did a thing\n"
            "akoshad: warning: a planted link: not followed\n"
            "akoshad: error: it broke\n"
        )
        assert cli.main(["--debug", "uploads"]) == 0
        err = capsys.readouterr().err
        assert err.startswith("akoshad: did a thing\n") and "ValueError: inside" in err
    finally:
        logger.remove()


@pytest.mark.parametrize("dest", ["", "  "])
def test_an_empty_dest_is_a_usage_error_not_the_current_directory(
    dest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--dest "$DIR"`` with DIR unset named the current directory: with --force the
    restore went over it. Now exit 2, nothing read or written."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["restore", "--latest", "--force", "--dest", dest])
    assert info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("akoshad restore: error: argument --dest: is empty"), last


@pytest.mark.parametrize(
    ("option", "argv"),
    [
        ("--data-dir", ["run", "--once", "--data-dir", ""]),
        ("--data-dir", ["run", "--once", "--data-dir="]),
        ("--config", ["--config", "", "run", "--once"]),
        ("--config", ["config", "check", "--config", " "]),
        ("--config", ["status", "--config="]),
        ("--identity", ["verify", "--identity", ""]),
        ("--identity", ["restore", "--latest", "--dest", "r", "--identity", ""]),
        ("--identity", ["drill", "--identity", ""]),
        ("--identity", ["uploads", "--identity", ""]),
        ("--prefix", ["service", "install", "--prefix", ""]),
    ],
)
def test_an_empty_path_option_is_a_usage_error_not_the_default(
    option: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--data-dir "$DIR"`` (or ``--config``, ``--identity``, ``--prefix``) with the
    variable unset was taken for no option: ``run --once`` backed up the default data_dir,
    exit 0. Now exit 2, naming the option."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert f"error: argument {option}: is empty (an unset variable?)" in last, last


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e20", "x"])
def test_a_watch_interval_out_of_range_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status --watch --interval inf`` ended with 'status failed: OverflowError:
    timestamp out of range for platform time_t', exit 1; -1 and 0 were taken as 0.2."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["status", "--watch", "--interval", value])
    assert info.value.code == 2
    assert "argument --interval: " in capsys.readouterr().err
    assert cli.parse_args(["status", "--watch", "--interval", "0.1"]).interval == 0.1  # as 0.2


def test_status_check_and_watch_together_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``akoshad status --check --watch`` (meant: keep checking) checked once and exited,
    the --watch ignored without a word. The two are one or the other."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["status", "--check", "--watch"])
    assert info.value.code == 2
    assert "argument --watch: not allowed with argument --check" in capsys.readouterr().err
    assert cli.parse_args(["status", "--check", "--json"]).check


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "--identity", "{key}"],  # prune takes no --identity
        ["--bogus={key}", "status"],
        ["uploads", "{key}"],
        ["status", "--interval", "{key}"],  # a command's own parser
        ["restore", "--latest", "--dest", "/tmp/x", "--identity", "/k", "{key}"],
    ],
)
def test_a_usage_error_never_echoes_an_age_identity(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pyrage import x25519

    from akoshad.cli.parser import build_parser

    key = str(x25519.Identity.generate())
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([a.format(key=key) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert key not in err and key[16:40] not in err
    assert "AGE-SECRET-KEY-1... (an age identity: not shown)" in err


@pytest.mark.parametrize(
    ("argv", "needed"),
    [(["sync", "--timeout", "60"], "--wait"), (["status", "--interval", "5"], "--watch")],
)
def test_an_option_without_the_one_it_goes_with_is_a_usage_error(
    argv: list[str], needed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``akoshad sync --timeout 60`` (meant: wait at most a minute) printed 'sync started'
    and exited 0 at once, the timeout ignored, so a script went on as if the store were
    synced; ``status --interval 5`` printed once. Each is a usage error naming the option
    it goes with; given together they parse as before."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    assert f"goes with {needed}: add {needed}" in capsys.readouterr().err
    args = cli.parse_args([*argv, needed])
    assert float(args.timeout if argv[0] == "sync" else args.interval) == float(argv[2])
    assert cli.parse_args(["status", "--watch"]).interval is None  # the default, 1 s


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--onc"],
        ["prune", "--dry"],
        ["service", "uninstall", "--dry"],
        ["status", "--js"],
        ["restore", "--lat", "--dest", "/tmp/x"],
        ["--conf", "c.yaml", "config", "check"],
        ["config", "check", "--conf", "c.yaml"],
    ],
)
def test_an_abbreviated_option_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse took ``--dry`` for ``--dry-run`` (a script's typo then meant an option, and
    a later option sharing the prefix would change what it meant)."""
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
