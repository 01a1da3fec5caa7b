"""How the files of the last upload were sealed, for a state kept by an akoshad that did not
record it (``KV_SEALED_AS`` came later): read from the state itself.

The ledger's files of a format-2 upload name their chunks, and the chunk table says whether
each is age-encrypted; a format-1 file (a whole object) never is. A sealed store names its
recipient list by the name keys this machine keeps (``state_dir/name_keys.json``, one per
system id and list): exactly one list for this system id is taken as the one used. Anything
less certain (chunks missing from the table, sealed and plain ones mixed, no or several
name keys) is :data:`UNKNOWN`, which matches no configuration: the store is sent again,
once, under the configured settings, rather than an upload that points at files sealed
otherwise.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from akoshad.storage.name_key import NameKeyCache, NameKeyError
from akoshad.store.records import LedgerEntry

UNKNOWN = "unknown"  # a label no configuration has


def sealed_label(
    entries: Iterable[LedgerEntry], encryption_of: Mapping[str, str], fingerprints: set[str]
) -> str:
    """The sealing label (``sealing.sealing_label``) of the ledger's ``entries``;
    ``encryption_of``: the chunk table's encryption by chunk identity; ``fingerprints``:
    the recipient lists this machine keeps a name key of for the system id."""
    kinds: set[str] = set()
    for entry in entries:
        ids = entry.chunk_ids
        if ids is None:  # a whole object (format 1), never sealed
            kinds.add("none")
            continue
        for chunk_id, _size in ids:
            kinds.add(encryption_of.get(chunk_id, UNKNOWN))
    if kinds <= {"none"}:
        return "none"
    if kinds == {"age"} and len(fingerprints) == 1:
        return f"age:{next(iter(fingerprints))}"
    return UNKNOWN


def read_sealed_label(
    c: sqlite3.Connection,
    target: str,
    entries: Iterable[LedgerEntry],
    state_dir: Path,
    system_id: str,
) -> str:
    """:func:`sealed_label` from the state (inside a transaction) and the name-key cache."""
    encryption_of = {
        str(chunk_id): str(enc)
        for chunk_id, enc in c.execute(
            "SELECT sha256, encryption FROM chunks WHERE target = ?", (target,)
        )
    }
    try:
        keys = NameKeyCache(state_dir).load()
    except NameKeyError:
        keys = []
    fingerprints = {k.fingerprint for k in keys if k.system_id == system_id}
    return sealed_label(entries, encryption_of, fingerprints)
