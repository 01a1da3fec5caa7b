"""How the last upload was sealed, read from a state that did not record it: every cell."""

from __future__ import annotations

import pytest

from akoshad.fileio import LiveStat
from akoshad.pipeline.sealed_as import UNKNOWN, sealed_label
from akoshad.store.records import LedgerEntry, encode_chunk_ids


def _entry(path: str, chunks: list[str] | None) -> LedgerEntry:
    return LedgerEntry(
        target="local",
        path=path,
        group_path=path,
        size=1,
        live=LiveStat(1, 1, 1, 1),
        sha256="a" * 64,
        key="k",
        name=path,
        stored_size=1,
        compression="none",
        kind="file",
        upload_id="u",
        chunks=None if chunks is None else encode_chunk_ids((c, 1) for c in chunks),
    )


TABLE = {"p1": "none", "p2": "none", "s1": "age", "s2": "age"}


@pytest.mark.parametrize(
    ("entries", "fingerprints", "label"),
    [
        ([], {"f"}, "none"),  # nothing known of: nothing sealed
        ([_entry("a", None)], set(), "none"),  # format 1: whole objects, never sealed
        ([_entry("a", ["p1", "p2"]), _entry("b", None)], {"f"}, "none"),
        ([_entry("a", ["s1"]), _entry("b", ["s2"])], {"f"}, "age:f"),
        ([_entry("a", ["s1"])], set(), UNKNOWN),  # sealed, no name key kept: which list?
        ([_entry("a", ["s1"])], {"f", "g"}, UNKNOWN),  # several lists: which one?
        ([_entry("a", ["s1"]), _entry("b", ["p1"])], {"f"}, UNKNOWN),  # mixed
        ([_entry("a", ["s1"]), _entry("b", None)], {"f"}, UNKNOWN),  # mixed with format 1
        ([_entry("a", ["p1", "gone"])], {"f"}, UNKNOWN),  # a chunk the table lacks
    ],
)
def test_the_label_of_what_the_ledger_names(
    entries: list[LedgerEntry], fingerprints: set[str], label: str
) -> None:
    assert sealed_label(entries, TABLE, fingerprints) == label
