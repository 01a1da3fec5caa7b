"""The files an upload left out (``metadata.skipped``: unreadable, vanished mid-read, a name
that is not UTF-8), read back for ``restore``, which says so: such a file is in no backup.

An encrypted upload keeps the list in a sealed document (``metadata.index.skipped``),
opened with the identity that opened its index."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from akoshad.errors import AkoshadError
from akoshad.storage.crypto import Identities
from akoshad.storage.sealed_documents import read_document_sealed
from akoshad.targets import Target

SHOWN = 5  # skipped files named in the warning; the rest are counted
REASON_MAX = 200  # characters of a reason shown (it comes from the target)


async def skipped_files(
    target: Target, manifest: dict[str, Any], identities: Identities | None = None
) -> list[tuple[str, str]]:
    """(path, reason) of every file the upload left out; a sealed list that cannot be
    read is one item saying so (path ``?``)."""
    meta = manifest.get("metadata")
    if not isinstance(meta, dict):
        return []
    raw = meta.get("skipped")
    index = meta.get("index")
    ref = index.get("skipped") if isinstance(index, dict) else None
    if raw is None and isinstance(ref, dict) and isinstance(ref.get("key"), str):
        try:
            doc = await read_document_sealed(
                target,
                ref["key"],
                str(ref.get("compression", "none")),
                str(ref.get("encryption", "none")),
                identities,
                what="list of skipped files",
            )
        except AkoshadError as exc:
            return [("?", f"its list cannot be read: {exc}")]
        raw = doc.get("skipped") if isinstance(doc, dict) else None
    items = raw if isinstance(raw, list) else []
    return [
        (item["path"], str(item.get("reason", ""))[:REASON_MAX])
        for item in items
        if isinstance(item, dict) and isinstance(item.get("path"), str)
    ]


def skipped_warning(
    upload_id: str, skipped: Sequence[tuple[str, str]], globs: Sequence[str] = ()
) -> str | None:
    """One line for stderr naming the files ``upload_id`` left out (those the ``--path``
    globs match, when given), or None when there are none."""
    if globs:
        skipped = [(p, r) for p, r in skipped if p == "?" or any(fnmatchcase(p, g) for g in globs)]
    if not skipped:
        return None
    named = "; ".join(f"{p} ({r})" for p, r in skipped[:SHOWN])
    more = f"; and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
    return (
        f"warning: upload {upload_id} left out {len(skipped)} file(s) it could not capture, "
        f"so they are not restored: {named}{more}"
    )
