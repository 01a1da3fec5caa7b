"""Typed errors: what the caller should do with a failure is decided by its type."""

from __future__ import annotations

import re

from akoshad.names import EXIT_CONFIG, EXIT_FAIL, EXIT_NO_DAEMON
from akoshad.redaction import redact


class AkoshadError(Exception):
    """Base of every error akoshad raises on purpose. Its text is redacted: a registered
    secret or a URL credential in the message never reaches a screen, a log or a state."""

    exit_code = EXIT_FAIL

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(AkoshadError):
    """The configuration is invalid; the message is one line naming the field."""

    exit_code = EXIT_CONFIG


class RestoreError(AkoshadError):
    """A restore or verify cannot proceed (no upload, bad destination, ...)."""


class DaemonNotRunning(AkoshadError):
    """No daemon answers on the control socket."""

    exit_code = EXIT_NO_DAEMON


class DaemonWentAway(DaemonNotRunning):
    """A daemon took the request, then closed the connection without a reply (it stopped,
    was killed, or refused the connection): what it did of the request is unknown, so a
    caller must not redo the work itself as if no daemon had been there."""


class AlreadyRunning(AkoshadError):
    """Another akoshad holds this state directory or answers on this socket."""


class TransientError(AkoshadError):
    """Worth retrying later: 5xx, throttling, timeouts, resets, a server that is down.

    ``retry_after`` is a server's hint in seconds (Retry-After / SlowDown), if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceChanged(TransientError):
    """A store file changed while it was being uploaded: the upload is tried again later.
    The store's doing, not the target's: the target is not marked failed for it.
    ``in_place``: the store path of a large file read where it lies that moved."""

    def __init__(self, message: str, *, in_place: str | None = None) -> None:
        super().__init__(message)
        self.in_place = in_place


class PermanentError(AkoshadError):
    """Retrying will not help until a human fixes something (credentials, bucket, ...).

    ``fix`` says what to do about it.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.fix})" if self.fix else base


class UnknownTool(PermanentError):
    """The MCP server serves no tool of the name called (another version or profile)."""


class SnapshotError(AkoshadError):
    """A file could not be captured consistently (kept moving, corrupt, ...).

    ``retry`` is true when trying again later may succeed (the file kept changing).
    """

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class IntegrityError(AkoshadError):
    """Stored bytes do not match the recorded size or SHA-256. ``object_key``: the stored
    object found missing or damaged, when one is to blame."""

    def __init__(self, message: str, *, object_key: str | None = None) -> None:
        super().__init__(message)
        self.object_key = object_key


NEWER_DUCKDB_STORAGE = re.compile(
    r"version number|newer version|storage version|not supported by this version", re.I
)


def classify_open_error(exc: BaseException) -> str:
    """A duckdb open failure: newer storage -> a "cannot validate" note; else corruption."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if NEWER_DUCKDB_STORAGE.search(message):
        return f"cannot validate: {message}"
    raise SnapshotError(f"DuckDB copy does not open: {message}") from None
