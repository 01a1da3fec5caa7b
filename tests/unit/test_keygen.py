"""``akoshad keygen``: a new age identity, mode 0600, never overwriting; its public key alone
on stdout, ready for ``encryption.recipients``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from akoshad.storage.crypto import Recipients as CryptoRecipients
from akoshad.storage.crypto import load_identity, open_sealed, seal
from tests.helpers import akoshad, base_env, write_config


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_keygen_writes_a_private_identity_and_prints_its_recipient(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "nested" / "id.txt"
    env = base_env(tmp_path)
    res = akoshad("keygen", "--output", str(out), env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    recipient = res.stdout.strip()
    assert res.stdout == recipient + "\n" and recipient.startswith("age1")
    assert _mode(out) == 0o600
    assert _mode(out.parent) == 0o700 and _mode(out.parent.parent) == 0o700
    ids = load_identity(out)
    assert ids.recipients == (recipient,) and ids.warnings == ()
    # the pair works: sealed to the printed key, opened with the written identity
    body = open_sealed(seal(b"marker", CryptoRecipients.parse([recipient])), ids, 6)
    assert body == b"marker"
    secret = next(line for line in out.read_text().splitlines() if line.startswith("AGE-"))
    assert secret not in res.stdout + res.stderr
    assert str(out) in res.stderr and f"recipients: [{recipient}]" in res.stderr
    assert "lost" in res.stderr and "off this machine" in res.stderr
    # what it prints is accepted as configured
    cfg = write_config(tmp_path / "c.yaml", encryption={"recipients": [recipient]})
    check = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert check.returncode == 0 and "encryption to 1 recipient(s)" in check.stdout


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "id.txt"
    env = base_env(tmp_path)
    first = akoshad("keygen", "-o", str(out), env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    again = akoshad("keygen", "-o", str(out), env=env, timeout=60)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip().splitlines() == [
        f"akoshad: {out} already exists: keygen never overwrites an identity "
        "(pick another --output)"
    ]
    assert out.read_bytes() == before
    # nor writes through a link (dangling or not)
    victim = tmp_path / "victim.txt"
    link = tmp_path / "link.txt"
    link.symlink_to(victim)
    res = akoshad("keygen", "-o", str(link), env=env, timeout=60)
    assert res.returncode == 1 and "already exists" in res.stderr
    assert not victim.exists() and link.is_symlink()
    # a directory is named as one, not as an identity that exists
    res = akoshad("keygen", "-o", str(tmp_path), env=env, timeout=60)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"akoshad: {tmp_path} is a directory: --output names the file to write "
        "(pick another --output)"
    ]
    # a place that cannot hold it (its parent is a file): one line, exit 1
    res = akoshad("keygen", "-o", str(out / "id.txt"), env=env, timeout=60)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"akoshad: cannot write the identity {out / 'id.txt'}: Not a directory"
    ]


def test_keygen_default_path_and_a_broken_config_does_not_stop_it(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    env["AKOSHAD_NOT_A_SETTING"] = "1"  # an invalid configuration: keygen needs none
    res = akoshad("keygen", env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    first = res.stdout.strip()
    path = tmp_path / "cfg" / "akoshad" / "identity.txt"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert load_identity(path).recipients == (res.stdout.strip(),)
    del env["XDG_CONFIG_HOME"]
    res = akoshad("keygen", env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert load_identity(tmp_path / ".config" / "akoshad" / "identity.txt").recipients == (
        res.stdout.strip(),
    )
    assert res.stdout.strip() != first  # a new key each time


def test_keygen_names_a_relative_output_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hint's ``identity_file`` is pasted into a configuration that the daemon or
    ``restore`` read from another working directory: it is the absolute path."""
    import argparse

    from akoshad.cli.keygen import cmd_keygen

    monkeypatch.chdir(tmp_path)
    assert cmd_keygen(argparse.Namespace(output="keys/id.txt"), {"HOME": str(tmp_path)}) == 0
    err = capsys.readouterr().err
    assert f"encryption.identity_file: {tmp_path / 'keys' / 'id.txt'}," in err
    assert _mode(tmp_path / "keys" / "id.txt") == 0o600


def test_keygen_refuses_an_empty_output(tmp_path: Path) -> None:
    """``--output ''`` (an unset variable in a script) is a usage error, not the default."""
    env = base_env(tmp_path)
    res = akoshad("keygen", "--output", "", env=env, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "akoshad: --output is empty: name the file to write the identity to\n"
    assert not any(tmp_path.rglob("identity.txt"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_keygen_says_where_the_recipient_is_when_stdout_fails(tmp_path: Path) -> None:
    """A stdout that cannot take the recipient (a full disk, a closed stdout) is one line
    on stderr, exit 1: before, a traceback (ENOSPC) or exit 0 with nothing printed."""
    import subprocess
    import sys

    env = base_env(tmp_path)
    for n, stdout in enumerate(("/dev/full", None)):
        out = tmp_path / f"id{n}.txt"
        argv = [sys.executable, "-m", "akoshad", "keygen", "--output", str(out)]
        with open(stdout or os.devnull, "w") as sink:
            res = subprocess.run(
                argv,
                stdout=sink if stdout else None,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                timeout=60,
                # a closed fd 1 in the child, as `akoshad keygen >&-` gives
                preexec_fn=None if stdout else (lambda: os.close(1)),
            )
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith(f"akoshad: the identity is written to {out}, but its public key")
        assert "'# public key:' line" in last
        assert load_identity(out).recipients[0] in out.read_text()


def test_keygen_refuses_an_output_of_dash_or_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--output -` (stdout to rage-keygen and its kin) made a file named '-' in the
    working directory, and `--output DIR/` a file named DIR, exit 0; each is a usage error
    now, and nothing is written."""
    import argparse

    from akoshad.cli.keygen import cmd_keygen

    monkeypatch.chdir(tmp_path)
    assert cmd_keygen(argparse.Namespace(output="-"), {"HOME": str(tmp_path)}) == 2
    out, err = capsys.readouterr()
    assert err.startswith("akoshad: --output - would be stdout: keygen never prints")
    assert out == "" and list(tmp_path.iterdir()) == []
    # a trailing slash means a directory: no file named after it
    assert cmd_keygen(argparse.Namespace(output="keys/"), {"HOME": str(tmp_path)}) == 2
    out, err = capsys.readouterr()
    assert err.startswith("akoshad: --output keys/ ends with '/', a directory: name the file")
    assert "(keys/identity.txt, say)" in err
    assert out == "" and list(tmp_path.iterdir()) == []
