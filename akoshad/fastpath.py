"""The quick check behind ``akoshad run --once`` when nothing changed.

Standard library only, imported before anything heavy: a run that finds the store, the
configuration and the state exactly as a previous fully successful run left them has
nothing to upload, so it answers at once and sends no request at all.

The check is deliberately conservative: the ``lstat`` of every entry under ``data_dir``
(files, directories, links: size, mtime_ns, ctime_ns, inode), the state database's files,
the configuration sources (akoshad's file, session-buddy's file, the ``AKOSHAD_*``,
``SESSION_BUDDY_*`` and ``XDG_*`` variables, the command line) and akoshad's code (a digest
of its package's files, ``codeid.code_digest``: the version string is the same for every
build from git, so an upgrade that changed what a run does is not taken for the one that
made the record) must all be identical to what was recorded. A run records them only when
it ended with every change uploaded; the store's stats it records are those its reconcile
walk saw, before anything was captured, so a change made while it ran (which moves a size,
an mtime, a ctime or an inode, or the entries of a directory) differs from the record and
the next run is a full one. The record keeps a digest of the stats (:func:`store_digest`),
not the stats themselves. Anything else, and the full run happens as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from akoshad import __version__
from akoshad.codeid import code_digest
from akoshad.private import shared_dir_problem

CACHE_VERSION = 2  # 2: the store is recorded as a digest
StatMap = dict[str, list[int]]
# A file system whose timestamps are coarse (FAT: 2 s; ext2/3 with small inodes, HFS+,
# many NFS servers: 1 s; exFAT: 10 ms) dates them in whole multiples of ``COARSE_TICK_NS``:
# a file changed there less than ``RACY_NS`` before it was read may be written again in
# the same tick, its stat unmoved. Such a stat is never taken as proof that nothing
# changed since (``racy_stat``). Finer timestamps (ext4, xfs, btrfs, APFS) are trusted.
COARSE_TICK_NS = 10_000_000
RACY_NS = 3_000_000_000
# How the configuration logs, as a record keeps it: the answer's one line is written as the
# full run's log would write it (runtime.logs: its level, text or JSON, journald lines)
DEFAULT_LOG: Mapping[str, object] = {"level": "INFO", "format": "text", "file": False}
_ABOVE_INFO = ("SUCCESS", "WARNING", "ERROR", "CRITICAL")  # an INFO line is not written
UNCHANGED = "run --once: nothing changed, no upload"
CONFIG_MAX_BYTES = 1 << 20  # a configuration is a few KB: a larger file is none


def config_home(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME`` when absolute (the XDG spec says to ignore a relative one, as
    for the state and data homes: the file read would follow the working directory), else
    ``~/.config``."""
    value = environ.get("XDG_CONFIG_HOME") or ""
    if os.path.isabs(value):
        return Path(value)
    return Path(environ.get("HOME") or os.path.expanduser("~")) / ".config"


def resolve_config_path(
    cli_path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> tuple[Path, bool]:
    """Return (path, explicitly_named). A named file must exist; the default may not."""
    if cli_path:
        return Path(cli_path).expanduser(), True
    env_path = environ.get("AKOSHAD_CONFIG")
    if env_path:
        return Path(env_path).expanduser(), True
    return config_home(environ) / "akoshad" / "config.yaml", False


def read_head(path: Path, limit: int = CONFIG_MAX_BYTES) -> bytes:
    """At most ``limit + 1`` bytes of ``path``: a configuration file's, whose length tells
    one too large from one that fits, and a file that never ends (``/dev/zero``) is not read
    on until memory runs out."""
    with open(path, "rb") as file:
        return file.read(limit + 1)


def inputs_key(argv: Sequence[str], environ: Mapping[str, str], config: Path) -> str | None:
    """A digest of everything the configuration is made of, and of akoshad's code (None
    when that cannot be read: no record is kept or read)."""
    code = code_digest()
    if code is None:
        return None
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}\0{__version__}\0{code}\0".encode())
    h.update("\0".join(_absolute_values(argv)).encode("utf-8", "surrogateescape"))
    for key in sorted(environ):
        if key.upper().startswith(("AKOSHAD_", "XDG_", "SESSION_BUDDY_")) or key == "HOME":
            h.update(f"\0{key}={environ[key]}".encode("utf-8", "surrogateescape"))
    for path in (config, config_home(environ) / "session-buddy" / "config.yaml"):
        try:
            h.update(b"\0" + read_head(path))
            st = os.stat(path)  # who may change it: a file others may write is refused
            h.update(f"\0{st.st_mode}:{st.st_uid}:{st.st_gid}".encode())
        except OSError:
            h.update(b"\0<none>")
    return h.hexdigest()[:32]


def cache_file(environ: Mapping[str, str], key: str) -> Path:
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    cache_home = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
    return cache_home / "akoshad" / f"once-{key}.json"


def stat_map(root: Path) -> StatMap:
    """lstat of every entry under ``root`` (and of ``root`` itself)."""
    out: StatMap = {}
    try:
        st = os.lstat(root)
    except OSError:
        return out
    out["."] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    stat_tree(str(root), len(str(root)) + 1, out)
    return out


def stat_tree(top: str, base: int, out: StatMap) -> None:
    """Add the lstat of every entry below the directory ``top`` to ``out``, keyed by its
    path with the first ``base`` characters cut (its path relative to the root)."""
    stack = [top]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            if stat_entry(entry, base, out) and entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)


def stat_entry(entry: os.DirEntry[str], base: int, out: StatMap, rel: str = "") -> bool:
    """Record ``entry``'s lstat in ``out`` (key: its path without the first ``base``
    characters; ``rel``, the caller's string, when equal: one string, not two, for each
    of 100,000 files); False when it cannot be read (it is then left out)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    key = entry.path[base:]
    out[rel if key == rel else key] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return True


class MovedSince(dict[str, list[int]]):
    """A stat map that a walk fills (``stat_entry``) without keeping it: each entry is
    compared with ``before`` (taken from it as it goes), and ``moved`` lists those that
    differ or are new; what ``before`` still holds after the walk is gone. The daemon's
    catch-up held two maps of the whole store at once (100,000 files: 40 MB more)."""

    def __init__(self, before: StatMap) -> None:
        super().__init__()
        self.before = before
        self.moved: list[str] = []

    def __setitem__(self, key: str, st: list[int]) -> None:
        if self.before.pop(key, None) != st:
            self.moved.append(key)


def store_digest(stats: StatMap) -> str:
    """A digest of a store's stats (what a record keeps): equal digests, equal stats."""
    h = hashlib.sha256()
    for path in sorted(stats):
        h.update(path.encode("utf-8", "surrogateescape"))
        h.update(b"\0" + ",".join(map(str, stats[path])).encode() + b"\n")
    return h.hexdigest()


def state_stamp(state_dir: Path) -> StatMap:
    out: StatMap = {}
    for name in ("state.db", "state.db-wal"):
        try:
            st = os.lstat(state_dir / name)
        except OSError:
            continue
        out[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return out


def state_held(state_dir: Path) -> bool:
    """True when an akoshad holds this state's lock (a daemon, starting or running, or a
    ``run --once``, ``prune`` or ``takeover`` at work): the process whose id the lock file
    holds (written by the holder) is alive and, where ``/proc`` tells, an akoshad. The lock
    itself is not tried: a daemon starting that moment would find it taken and exit
    (its lock is not waited for), so ``run --once``'s check and the client commands
    probe it only so."""
    try:
        pid = int((state_dir / "akoshad.lock").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):  # no file, no pid, no such process, another user's
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): the live process that wrote it
    return b"akoshad" in cmdline


def try_unchanged(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """True when ``run --once`` provably has nothing to do (and says so on stderr)."""
    parsed, config_arg = _config_arg(argv)
    if not parsed:
        return False
    config, _named = resolve_config_path(config_arg, environ)
    key = inputs_key(argv, environ, config)
    if key is None:
        return False
    if shared_dir_problem("cache", cache_file(environ, key).parent) is not None:
        return False  # a record others could have written
    try:
        recorded = json.loads(cache_file(environ, key).read_text())
        data_dir = Path(recorded["data_dir"])
        state_dir = Path(recorded["state_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if recorded.get("state") != state_stamp(state_dir) or state_held(state_dir):
        return False
    if shared_dir_problem("state_dir", state_dir) is not None:
        return False  # the full run refuses it (exit 78)
    if recorded.get("store") != store_digest(stat_map(data_dir)):
        return False
    witness = recorded.get("witness")
    if isinstance(witness, str) and not os.path.isfile(witness):
        return False  # the local target no longer holds its newest upload: the full run
    return _say_unchanged(recorded.get("log"), environ)


def _say_unchanged(log: object, environ: Mapping[str, str]) -> bool:
    """Write :data:`UNCHANGED` as the configuration's log would (``log``: what the record
    keeps of it); False when this cannot (a ``log_file``, whose format the full run's
    logger owns, or a record without it): the full run then answers and logs."""
    if not isinstance(log, Mapping) or log.get("file") is not False:
        return False
    if log.get("level") in _ABOVE_INFO:
        return True
    if environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"):
        line = f"<6>{UNCHANGED}"  # journald's priority of INFO
    elif log.get("format") == "json":
        now = datetime.now().astimezone().isoformat()
        line = json.dumps({"time": now, "level": "INFO", "message": UNCHANGED})
    else:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {'INFO':<7} {UNCHANGED}"
    print(line, file=sys.stderr)
    return True


def racy_stat(mtime_ns: int, ctime_ns: int, read_ns: int) -> bool:
    """A stat with coarse timestamps (both whole ``COARSE_TICK_NS``) less than ``RACY_NS``
    older than ``read_ns`` (wall clock), or dated ahead: a write after ``read_ns`` could
    keep it as it is."""
    coarse = mtime_ns % COARSE_TICK_NS == 0 and ctime_ns % COARSE_TICK_NS == 0
    return coarse and max(mtime_ns, ctime_ns) > read_ns - RACY_NS


def racy(stats: StatMap, walked_ns: int) -> bool:
    """Some entry's stat is ``racy_stat`` as of ``walked_ns`` (a time before the walk that
    read ``stats``): a write after the walk could leave every stat as it was."""
    return any(racy_stat(st[1], st[2], walked_ns) for st in stats.values() if len(st) >= 3)


def newest_manifest(uploads: Path) -> str | None:
    """The manifest of the newest upload in a local target's ``uploads`` folder (a file
    the next quick check expects to find there), or None."""
    try:
        names = sorted(os.listdir(uploads), reverse=True)
    except OSError:
        return None
    for name in names:
        manifest = uploads / name / "manifest.json"
        if manifest.is_file():
            return str(manifest)
    return None


def record_unchanged(
    argv: Sequence[str],
    environ: Mapping[str, str],
    data_dir: Path,
    state_dir: Path,
    before: StatMap,
    witness: str | None = None,
    *,
    walked_ns: int,
    log: Mapping[str, object] = DEFAULT_LOG,
) -> None:
    """After a fully successful run: remember the inputs, with ``before``, the store's stats
    as the run found them before it captured anything (its reconcile walk, see the module:
    a change made since then is caught by the next run's comparison), and ``witness``, a
    file the target must still hold (a local target's newest manifest: a directory swapped
    at the same path is not taken for the one uploaded to), and ``log``, how the
    configuration logs (level, format, whether to a file). Nothing is remembered when
    ``before`` is ``racy`` as of ``walked_ns`` (a time taken before the walk)."""
    parsed, config_arg = _config_arg(argv)
    if not parsed or not before or racy(before, walked_ns):
        return
    config, _named = resolve_config_path(config_arg, environ)
    key = inputs_key(argv, environ, config)
    if key is None:
        return
    path = cache_file(environ, key)
    record = {
        "data_dir": str(data_dir),
        "state_dir": str(state_dir),
        "state": state_stamp(state_dir),
        "store": store_digest(before),
        "witness": witness,
        "log": dict(log),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if shared_dir_problem("cache", path.parent) is not None:
            return  # others could plant a link as its name, or forge a record
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(tmp, flags, 0o600), "w") as fh:
            fh.write(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        pass  # only an optimisation


_VALUED = ("--config", "--data-dir")


def _absolute_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with the paths ``--config`` and ``--data-dir`` name made absolute, as the
    full run reads them: ``--data-dir store`` run in another directory is another store."""
    out: list[str] = []
    after = False  # the previous word was a valued option
    for arg in argv:
        name, eq, value = arg.partition("=")
        if after:
            arg = os.path.abspath(os.path.expanduser(arg)) if arg else arg
        elif name in _VALUED and eq and value:
            arg = f"{name}={os.path.abspath(os.path.expanduser(value))}"
        after = not after and arg in _VALUED
        out.append(arg)
    return out


def _config_arg(argv: Sequence[str]) -> tuple[bool, str | None]:
    """(understood, the ``--config`` named) for a plain ``run --once`` command line.

    Only the plain spellings are understood: ``--config FILE`` / ``--config=FILE`` before
    or after ``run``, and ``--once``, ``--data-dir DIR`` after it; the same file if given
    twice. Anything else (an abbreviated option, two different files, ``--``, a value
    that starts with ``-``) is not: the full command line parser then decides, so the
    quick check never reads another file than the full run would."""
    seen: list[str] = []
    command = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg == "run" and not command:
            command = True
        elif arg == "--once" and command:
            pass
        elif name in _VALUED and (command or name == "--config"):
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else "-"
            if not value or value.startswith("-"):
                return False, None
            if name == "--config":
                seen.append(value)
        else:
            return False, None
        i += 1
    norm = {os.path.abspath(os.path.expanduser(v)) for v in seen}
    if not command or len(norm) > 1:
        return False, None
    return True, (seen[-1] if seen else None)


def wants_once(argv: Sequence[str]) -> bool:
    return "run" in argv and "--once" in argv and "-h" not in argv and "--help" not in argv
