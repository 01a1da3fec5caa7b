"""The identity of a target's place, as the state records it (``runtime.target_identity``
acts on a change; ``verify`` reads it before it checks the ledger against the target, and a
drill by hand before it records its result); and whether the last upload this machine made
in a target is still there (a start, a prune or takeover by hand, and every drill ask)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from urllib.parse import urlsplit

from akoshad.config import Settings
from akoshad.errors import PermanentError, TransientError
from akoshad.manifest.layout import manifest_key
from akoshad.targets.base import ReadCheck, Target

KV_IDENTITY = "target_identity:{target}"
KV_AKOSHA = "akosha_identity"  # the Akosha the delivered memories went to


def _endpoint(url: str | None) -> str:
    """An endpoint URL as compared: scheme, host and port in lower case, path without a
    trailing slash, any credentials left out."""
    if not url:
        return ""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


def target_identity(settings: Settings, name: str) -> str:
    """The identity of target ``name`` under ``settings``: a SHA-256 of where it puts
    objects and of the system id they go under."""
    cs = settings.cloud_sync
    if name == "cloud":
        where = ["s3", _endpoint(cs.cloud_endpoint), cs.cloud_bucket or ""]
    else:
        where = [name, str(settings.local_target_dir.expanduser().resolve())]
    return hashlib.sha256(json.dumps([*where, cs.system_id]).encode()).hexdigest()


def akosha_identity(url: str) -> str:
    """The identity of the Akosha at ``url``: a SHA-256 of its endpoint (credentials left
    out, so that changing a password sends nothing again)."""
    return hashlib.sha256(json.dumps(["http", _endpoint(url)]).encode()).hexdigest()


def place_fields(settings: Settings) -> dict[str, str]:
    """What a client request names as its place (its primary target's identity and its
    system id): a daemon answering on the socket for another configuration refuses to act
    for it (a second configuration without a ``socket_path`` of its own reaches the daemon
    at the default socket). Nothing when the configuration did not load (a client's
    stand-in of defaults): the daemon then acts as asked, the client having warned."""
    if not settings.place_known:
        return {}
    return {
        "place": target_identity(settings, settings.primary_target),
        "system_id": settings.cloud_sync.system_id,
    }


def recorded_place(c: sqlite3.Connection, target: str) -> str | None:
    """Inside a transaction: the identity the state recorded for ``target`` (None: none)."""
    row = c.execute(
        "SELECT value FROM kv WHERE key = ?", (KV_IDENTITY.format(target=target),)
    ).fetchone()
    return None if row is None else str(row[0])


def another_place(target: str) -> str:
    """What is said when the state knew ``target`` as another place than it is now."""
    return (
        f"this machine's state knew {target} as another place (bucket, directory or "
        "system_id changed since); the next run or daemon start forgets it"
    )


async def manifest_gone(target: Target, system_id: str, upload_id: str) -> bool:
    """True only when ``target`` answers that upload ``upload_id`` has no manifest there
    (a target that cannot say: False, what is known is kept). A missing manifest is asked
    again of the target as a whole (``ReadCheck``): an S3 HEAD answers 404 alike for a
    missing key and a missing bucket (its reply has no body to tell them apart), and a
    bucket that is gone, or cannot be read, is an outage, not a target emptied."""
    try:
        if await target.head(manifest_key(system_id, upload_id)) is not None:
            return False
        if isinstance(target, ReadCheck):
            await target.check()
    except (TransientError, PermanentError, OSError):
        return False
    return True


def upload_gone(target: str, upload_id: str) -> str:
    """What is said when the last upload this machine made in ``target`` is not there."""
    return (
        f"upload {upload_id}, the last one this machine made in {target}, is not there any "
        "more: the store as of that upload cannot be restored from it; the next upload "
        "sends again what the newest upload there lacks"
    )
