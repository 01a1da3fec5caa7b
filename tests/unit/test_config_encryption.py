"""The ``encryption:`` group: age recipients checked when the configuration is loaded (exit
78 naming the entry, never echoing a secret), the identity file read only on demand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyrage import x25519

from akoshad.config import Encryption, load_config, load_settings
from akoshad.config.encryption import MAX_RECIPIENTS
from akoshad.errors import ConfigError
from akoshad.storage import crypto
from akoshad.storage.crypto import IdentityFileError, IdentityNeeded
from tests.helpers import akoshad, base_env, write_config


def _pair() -> tuple[str, str]:
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), **extra}


def test_off_by_default_and_readable_from_file_and_env(tmp_path: Path) -> None:
    s = load_settings(environ=_env(tmp_path))
    assert s.encryption == Encryption() and not s.encryption.enabled
    assert s.encryption.encrypt_memories is False and s.encryption.identity_file is None
    _, a = _pair()
    _, b = _pair()
    cfg = write_config(
        tmp_path / "c.yaml",
        encryption={"recipients": [f"  {a} ", b, a], "identity_file": "~/keys/id.txt"},
    )
    loaded = load_config(cfg, environ=_env(tmp_path))
    enc = loaded.settings.encryption
    assert enc.enabled and enc.recipients == [a, b]  # stripped, duplicates dropped
    assert enc.identity_file == Path(os.path.expanduser("~/keys/id.txt"))
    assert loaded.effective_sources()["encryption.recipients"] == f"file {cfg}"
    env = _env(
        tmp_path,
        AKOSHAD_ENCRYPTION__RECIPIENTS=f'["{b}"]',
        AKOSHAD_ENCRYPTION__ENCRYPT_MEMORIES="true",
    )
    loaded = load_config(cfg, environ=env)
    assert loaded.settings.encryption.recipients == [b]
    assert loaded.settings.encryption.encrypt_memories is True
    sources = loaded.effective_sources()
    assert sources["encryption.recipients"] == "env AKOSHAD_ENCRYPTION__RECIPIENTS"
    assert sources["encryption.identity_file"] == f"file {cfg}"
    assert loaded.settings.encryption.parsed_recipients().keys == (b,)
    env = _env(tmp_path, AKOSHAD_ENCRYPTION__IDENTITY_FILE="/keys/offline.txt")
    loaded = load_config(cfg, environ=env)
    assert loaded.settings.encryption.identity_file == Path("/keys/offline.txt")
    assert loaded.effective_sources()["encryption.identity_file"] == (
        "env AKOSHAD_ENCRYPTION__IDENTITY_FILE"
    )


@pytest.mark.parametrize(
    ("settings", "environ", "expected"),
    [
        ({"encryption": {"recipient": []}}, {}, "encryption.recipient: unknown key"),
        ({}, {"AKOSHAD_ENCRYPTION__RECIPIENT": "[]"}, "AKOSHAD_ENCRYPTION__RECIPIENTS"),
        ({}, {"AKOSHAD_ENCRYPTION__RECIPIENTS": "age1x"}, "encryption.recipients: not valid"),
        ({"encryption": {"recipients": "age1x"}}, {}, "encryption.recipients: give a list"),
    ],
)
def test_unknown_keys_and_shapes_are_one_line_errors(
    tmp_path: Path, settings: dict[str, object], environ: dict[str, str], expected: str
) -> None:
    cfg = write_config(tmp_path / "c.yaml", **settings)
    with pytest.raises(ConfigError) as err:
        load_config(cfg, environ=_env(tmp_path, **environ))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_bad_recipients_name_their_entry_and_never_show_a_secret(tmp_path: Path) -> None:
    secret, public = _pair()
    cases = {
        "age1notakey": "encryption.recipients.1: not an age public key (age1notakey...)",
        secret: "encryption.recipients.1: is an age identity (a secret key), not a recipient",
        "ssh-ed25519 AAAAC3Nz": "encryption.recipients.1: not an age public key:",
        public[:-1] + ("q" if public[-1] != "q" else "p"): "not an age public key",
    }
    for bad, expected in cases.items():
        cfg = write_config(tmp_path / "c.yaml", encryption={"recipients": [public, bad]})
        with pytest.raises(ConfigError) as err:
            load_settings(cfg, environ=_env(tmp_path))
        text = str(err.value)
        assert expected in text and f"(from file {cfg})" in text, text
        assert secret not in text and secret[15:40] not in text
    too_many = [_pair()[1] for _ in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(ConfigError, match=r"encryption\.recipients: List should have at most"):
        load_settings(write_config(tmp_path / "c.yaml", encryption={"recipients": too_many}))
    assert MAX_RECIPIENTS == crypto.MAX_RECIPIENTS


def test_an_identity_pasted_as_identity_file_is_refused_unshown(tmp_path: Path) -> None:
    """The secret key itself given where its file's path goes (file, environment,
    ``--identity``) is refused (exit 78) without echoing it: before, the relative-path
    error printed it, and ``--identity KEY`` printed it as a file that does not exist."""
    secret, _ = _pair()
    cfg = write_config(tmp_path / "c.yaml", encryption={"identity_file": secret})
    env_var = {"AKOSHAD_ENCRYPTION__IDENTITY_FILE": f"~/{secret.lower()}"}
    for path, environ in ((cfg, {}), (None, env_var)):
        with pytest.raises(ConfigError) as err:
            load_settings(path, environ=_env(tmp_path, **environ))
        assert "holds an age identity (the secret key itself)" in str(err.value)
        assert secret[15:40] not in str(err.value).upper()
    res = akoshad("verify", "--identity", secret, env=base_env(tmp_path), timeout=60)
    assert res.returncode == 78 and "encryption.identity_file: holds an age" in res.stderr
    assert secret[15:40] not in res.stderr + res.stdout and "Traceback" not in res.stderr


# an age1 key of 32 zero bytes (checksum right): a low-order point, which pyrage parses
# but nothing can be sealed to (before, `run` failed with "ValueError: Error computing
# shared key." although `config check` said ok)
LOW_ORDER = "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5cu47z"


def test_a_low_order_recipient_is_a_config_error(tmp_path: Path) -> None:
    _, public = _pair()
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        encryption={"recipients": [public, LOW_ORDER]},
    )
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ=_env(tmp_path))
    expected = "encryption.recipients.1: not a usable age public key (age1qqqqqqqqqqqq...)"
    assert expected in str(err.value)
    res = akoshad("config", "check", "--config", str(cfg), env=base_env(tmp_path), timeout=60)
    assert res.returncode == 78, res.stderr
    assert "low-order point" in res.stderr and "Traceback" not in res.stderr


def test_config_check_and_daemon_start_exit_78_on_a_bad_recipient(tmp_path: Path) -> None:
    secret, public = _pair()
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        encryption={"recipients": [public, secret]},
    )
    env = base_env(tmp_path)
    for args in (("config", "check"), ("run",), ("run", "--once")):
        res = akoshad(*args, "--config", str(cfg), env=env, timeout=60)
        assert res.returncode == 78, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "encryption.recipients.1" in lines[0], res.stderr
        assert secret not in res.stderr + res.stdout and "Traceback" not in res.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was made


def test_config_check_does_not_read_the_identity_and_show_lists_the_group(
    tmp_path: Path,
) -> None:
    _, public = _pair()
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),  # not the home: state_dir is under it
        encryption={"recipients": [public], "identity_file": str(tmp_path / "offline.txt")},
    )
    env = base_env(tmp_path)
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "encryption to 1 recipient(s); memories.json readable by Akosha" in res.stdout
    assert f"identity_file {tmp_path / 'offline.txt'}" in res.stdout
    # a path that is not there yet is a warning, not an error: the daemon does not need it
    assert f"warning: encryption.identity_file {tmp_path / 'offline.txt'} does not exist" in (
        res.stdout
    )
    (tmp_path / "offline.txt").mkdir()
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert res.returncode == 0 and "offline.txt is not a file: verify, restore" in res.stdout
    (tmp_path / "offline.txt").rmdir()
    (tmp_path / "offline.txt").write_text("not even an identity: never read here\n")
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert res.returncode == 0 and "warning" not in res.stdout, res.stdout
    show = akoshad("config", "show", "--config", str(cfg), env=env, timeout=60)
    assert show.returncode == 0, show.stderr
    assert f"- {public}" in show.stdout and "encrypt_memories: false" in show.stdout
    assert "encryption.recipients" in show.stdout and f"file {cfg}" in show.stdout
    off = akoshad("config", "check", env=env, timeout=60)
    assert off.returncode == 0 and "encryption off" in off.stdout, off.stderr


def test_encrypt_memories_without_recipients_is_a_warning(tmp_path: Path) -> None:
    """encrypt_memories asks for what nothing does when no recipient is listed: uploads,
    memories.json included, stay readable. config check and the start say so."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.json").write_text("{}")
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        encryption={"recipients": [], "encrypt_memories": True},
    )
    env = base_env(tmp_path)
    warning = "encryption.encrypt_memories is true but encryption.recipients is empty"
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert res.returncode == 0 and f"warning: {warning}" in res.stdout, res.stdout
    once = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=60)
    assert once.returncode == 0 and warning in once.stderr, once.stderr
    _, public = _pair()
    write_config(cfg, data_dir=str(tmp_path / "store"), encryption={"recipients": [public]})
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert res.returncode == 0 and "warning" not in res.stdout, res.stdout


def test_an_identity_file_inside_data_dir_is_a_warning(tmp_path: Path) -> None:
    """The secret key kept in the store (keygen -o into data_dir) went up with every
    upload, encrypted to itself, and nothing said so; config check and the start warn,
    unless exclude leaves it out."""
    store = tmp_path / "store"
    store.mkdir()
    secret, public = _pair()
    (store / "keys").mkdir()
    (store / "keys" / "identity.txt").write_text(secret + "\n")
    identity = str(store / "keys" / "identity.txt")
    settings = {
        "data_dir": str(store),
        "state_dir": str(tmp_path / "state"),
        "local_target_dir": str(tmp_path / "outbox"),
        "encryption": {"recipients": [public], "identity_file": identity},
    }
    cfg = write_config(tmp_path / "c.yaml", **settings)
    env = base_env(tmp_path)
    warning = f"encryption.identity_file {identity} is inside data_dir {store}: the secret key"
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert res.returncode == 0 and f"warning: {warning}" in res.stdout, res.stdout
    once = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=60)
    assert once.returncode == 0 and warning in once.stderr, once.stderr
    assert secret not in res.stdout + once.stderr
    write_config(cfg, **settings, exclude=["keys/*"])
    res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert res.returncode == 0 and "warning" not in res.stdout, res.stdout


def test_a_missing_identity_file_is_said_to_stop_restores_of_clear_uploads_too(
    tmp_path: Path,
) -> None:
    """A set identity_file that is not there stops verify and restore of an unencrypted
    upload too (one line, exit 1): config check says so, not only of encrypted ones."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.json").write_text("{}")
    settings: dict[str, object] = {
        "data_dir": str(tmp_path / "store"),
        "state_dir": str(tmp_path / "state"),
        "local_target_dir": str(tmp_path / "outbox"),
    }
    cfg = write_config(tmp_path / "c.yaml", **settings)
    env = base_env(tmp_path)
    assert akoshad("run", "--once", "--config", str(cfg), env=env, timeout=60).returncode == 0
    missing = tmp_path / "identity.txt"
    write_config(cfg, **settings, encryption={"identity_file": str(missing)})
    check = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
    assert check.returncode == 0
    assert f"identity_file {missing} does not exist: verify, restore, drill and uploads" in (
        check.stdout
    )
    assert "of unencrypted uploads too" in check.stdout, check.stdout
    dest = tmp_path / "restored"
    res = akoshad("restore", "--latest", "--dest", str(dest), "--config", str(cfg), env=env)
    assert res.returncode == 1 and f"{missing} does not exist" in res.stderr, res.stderr
    assert not dest.exists()


def test_load_identities_one_line_errors_and_permission_warning(tmp_path: Path) -> None:
    secret, public = _pair()
    with pytest.raises(IdentityNeeded, match=r"set encryption\.identity_file"):
        Encryption(recipients=[public]).load_identities()
    missing = Encryption(identity_file=tmp_path / "nope.txt")
    with pytest.raises(IdentityFileError, match=r"nope\.txt does not exist"):
        missing.load_identities()
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(f"# a comment\n{public}\n")
    wrong.chmod(0o600)
    with pytest.raises(IdentityFileError) as err:
        Encryption(identity_file=wrong).load_identities()
    assert "line 2 of" in str(err.value) and "is not an age identity" in str(err.value)
    good = tmp_path / "id.txt"
    good.write_text(f"# created by a test\n{secret}\n")
    good.chmod(0o644)
    warnings: list[str] = []
    ids = Encryption(identity_file=good).load_identities(warn=warnings.append)
    assert ids.recipients == (public,)
    assert len(warnings) == 1 and "readable by others (mode 0644)" in warnings[0]
    assert secret not in warnings[0]
    good.chmod(0o600)
    warnings.clear()
    # an override (--identity) wins over identity_file
    ids = missing.load_identities(override=good, warn=warnings.append)
    assert ids.recipients == (public,) and warnings == []


def test_identity_on_the_command_line_overrides_the_file(tmp_path: Path) -> None:
    from akoshad.cli.main import _overrides, parse_args

    args = parse_args(["restore", "--latest", "--dest", "d", "--identity", "~/id.txt"])
    loaded = load_config(None, overrides=_overrides(args), environ=_env(tmp_path))
    assert loaded.settings.encryption.identity_file == Path(os.path.expanduser("~/id.txt"))
    assert loaded.effective_sources()["encryption.identity_file"] == "command line"
    for cmd in (["verify"], ["drill"]):
        assert parse_args([*cmd, "--identity", "x"]).identity == "x"


def test_an_identity_given_as_option_is_named_so_in_its_error(tmp_path: Path) -> None:
    """``--identity DIR`` says ``--identity``, not the configuration key the user never
    set; the configured file keeps its key's name."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.json").write_text("{}")
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        local_target_dir=str(tmp_path / "outbox"),
    )
    env = base_env(tmp_path)
    assert akoshad("run", "--once", "--config", str(cfg), env=env, timeout=120).returncode == 0
    res = akoshad("verify", "--identity", str(tmp_path), "--config", str(cfg), env=env)
    assert res.returncode == 1
    assert res.stderr == f"akoshad: --identity {tmp_path} is not a regular file\n"
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        local_target_dir=str(tmp_path / "outbox"),
        encryption={"identity_file": str(tmp_path)},
    )
    res = akoshad("verify", "--config", str(cfg), env=env)
    assert res.returncode == 1
    assert res.stderr == f"akoshad: encryption.identity_file {tmp_path} is not a regular file\n"


def test_config_check_says_akosha_gets_no_memories_when_they_are_sealed_in_the_bucket_only(
    tmp_path: Path,
) -> None:
    """encrypt_memories with a bucket and no delivery over HTTP (no akosha_url, or
    force_method: cloud): the sealed memories.json.age is all Akosha could import, and it
    cannot read it. config check said only 'memories.json encrypted'; it now says so."""
    _, public = _pair()
    env = base_env(tmp_path)
    cloud = {"cloud_bucket": "b", "cloud_endpoint": "http://127.0.0.1:9", "system_id": "s"}
    said = "Akosha gets no memories from this machine"
    for extra, why in [
        ({}, "akosha_url is off"),
        ({"akosha_url": "http://127.0.0.1:8682/mcp", "force": "cloud"}, "force_method is cloud"),
        ({"akosha_url": "http://127.0.0.1:8682/mcp"}, None),
    ]:
        force = {"force_method": extra.pop("force")} if "force" in extra else {}
        cfg = write_config(
            tmp_path / "c.yaml",
            data_dir=str(tmp_path / "store"),
            cloud_sync={**cloud, **force},
            encryption={"recipients": [public], "encrypt_memories": True},
            **extra,
        )
        res = akoshad("config", "check", "--config", str(cfg), env=env, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        if why is None:
            assert said not in res.stdout, res.stdout
        else:
            assert f"note: memories.json is encrypted and {why}" in res.stdout, res.stdout
            assert said in res.stdout
