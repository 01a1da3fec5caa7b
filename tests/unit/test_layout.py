"""Key naming, upload ids and manifests under Akosha's rules."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from akoshad.manifest.layout import (
    NAME_RE,
    FileEntry,
    build_manifest,
    manifest_key,
    new_upload_id,
    object_name,
    upload_ids_from_keys,
    upload_prefix,
    validate_manifest,
)
from akoshad.manifest.read import load_manifest
from akoshad.targets.local import LocalTarget


def test_plain_names_kept() -> None:
    assert object_name("reflection.duckdb", "gzip") == "reflection.duckdb.gz"
    assert object_name("activity.db", "none") == "activity.db"


def test_nested_and_odd_names_are_flat_and_safe() -> None:
    assert object_name("sessions/abc/state.json", "gzip") == "sessions__abc__state.json.gz"
    # a literal "__" would be ambiguous with a flattened "/": it gets a hash
    literal = object_name("sessions__abc__state.json", "gzip")
    assert literal != "sessions__abc__state.json.gz" and literal.endswith(".gz")
    assert NAME_RE.match(object_name("weird name (1).json", "none"))


def test_reserved_names_never_used() -> None:
    taken: set[str] = set()
    assert object_name("manifest.json", "none", taken) != "manifest.json"
    assert object_name("memories.json", "none", taken) != "memories.json"


def test_collisions_resolved() -> None:
    taken: set[str] = set()
    a = object_name("a b.json", "none", taken)
    b = object_name("a_b.json", "none", taken)
    c = object_name("a?b.json", "none", taken)
    assert len({a, b, c}) == 3


@given(
    st.lists(
        st.text(min_size=1, max_size=300).filter(lambda s: "\x00" not in s), min_size=1, max_size=20
    )
)
def test_names_always_valid_and_unique(paths: list[str]) -> None:
    taken: set[str] = set()
    names = [object_name(p, "gzip", taken) for p in dict.fromkeys(paths)]
    assert len(set(names)) == len(names)
    for n in names:
        assert NAME_RE.match(n) and ".." not in n
        assert "/" not in n and len(n) <= 255 and "~" not in n


@given(st.text(min_size=1, max_size=50))
def test_keys_cannot_escape_system_prefix(path: str) -> None:
    name = object_name(path, "none")
    key = upload_prefix("box", "20260101T000000000000Z-abc") + name
    assert key.startswith("systems/box/uploads/") and key.count("/") == 4


def test_upload_ids_sort_by_time_and_match_pattern() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    a = new_upload_id(t)
    b = new_upload_id(t + timedelta(seconds=1))
    assert a < b
    assert upload_prefix("s", a)


def test_upload_id_after_clock_went_back() -> None:
    later = new_upload_id(datetime(2030, 1, 1, tzinfo=UTC))
    nxt = new_upload_id(datetime(2026, 1, 1, tzinfo=UTC), after=later)
    assert nxt > later


def test_invalid_ids_refused() -> None:
    with pytest.raises(ValueError):
        upload_prefix("host.local", "x")
    with pytest.raises(ValueError):
        upload_prefix("h", "../x")


def _entries(uid: str) -> list[FileEntry]:
    return [
        FileEntry(
            "reflection.duckdb",
            "reflection.duckdb.gz",
            f"systems/h/uploads/{uid}/reflection.duckdb.gz",
            100,
            "a" * 64,
            50,
            "gzip",
            "duckdb",
        ),
        FileEntry(
            "old.json",
            "old.json",
            "systems/h/uploads/OLDER/old.json",
            7,
            "b" * 64,
            7,
            "none",
            "file",
        ),
    ]


def test_manifest_valid_and_lists_only_own_objects() -> None:
    uid = "20260101T000000000000Z-abc"
    m = build_manifest(system_id="h", upload_id=uid, entries=_entries(uid), skipped={"x": "y"})
    assert validate_manifest(m) == []
    assert m["files"] == ["reflection.duckdb.gz"]
    assert m["total_size_bytes"] == 107
    assert m["compressed"] is True and m["compression_format"] == "gzip"
    assert m["version"] == "1.0" and m["conversation_count"] == 0
    md = m["metadata"]
    assert md["uploader"] == "akoshad" and md["system_id"] == "h" and md["upload_id"] == uid
    assert {f["path"] for f in md["files"]} == {"reflection.duckdb", "old.json"}
    assert md["skipped"] == [{"path": "x", "reason": "y"}]
    assert datetime.fromisoformat(m["uploaded_at"]).tzinfo is not None


def test_manifest_uncompressed_has_no_format() -> None:
    uid = "u1"
    e = [FileEntry("a", "a", f"systems/h/uploads/{uid}/a", 1, "c" * 64, 1, "none", "file")]
    m = build_manifest(system_id="h", upload_id=uid, entries=e, skipped={})
    assert m["compressed"] is False and m["compression_format"] is None
    assert validate_manifest(m) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uploaded_at", "2026-01-01T00:00:00"),  # naive
        ("version", "1.0.0"),
        ("conversation_count", -1),
        ("checksum", "ABC"),
        ("files", ["a/b"]),
        ("files", ["..x"]),
        ("compression_format", "brotli"),
    ],
)
def test_validator_rejects_what_akosha_rejects(field: str, value: object) -> None:
    m = build_manifest(system_id="h", upload_id="u1", entries=[], skipped={})
    m[field] = value
    assert validate_manifest(m)


def test_upload_ids_from_keys() -> None:
    keys = [
        "systems/h/uploads/u2/manifest.json",
        "systems/h/uploads/u1/manifest.json",
        "systems/h/uploads/u3/a.gz",  # no manifest: incomplete
        "systems/other/uploads/u9/manifest.json",
        manifest_key("h", "u0"),
    ]
    assert upload_ids_from_keys(keys, "h") == ["u0", "u1", "u2"]


def test_counts_past_akoshas_bounds_stay_valid_and_exact_in_metadata(tmp_path: Path) -> None:
    """Over a million memories (or 100 GB of files) made a manifest Akosha's schema, and
    akoshad's own restore, refused; the top-level figure is now capped at the bound and
    the exact one kept in metadata, and a manifest an earlier akoshad wrote past a bound is
    still read."""
    uid = "20260101T000000000000Z-abc"
    big = FileEntry(
        "a", "a", f"systems/h/uploads/{uid}/a", 150_000_000_000, "c" * 64, 1, "none", "file"
    )
    m = build_manifest(
        system_id="h", upload_id=uid, entries=[big], skipped={}, conversation_count=1_200_000
    )
    assert validate_manifest(m) == []
    assert m["conversation_count"] == 1_000_000 and m["total_size_bytes"] == 100_000_000_000
    assert m["metadata"]["conversation_count"] == 1_200_000
    assert m["metadata"]["total_size_bytes"] == 150_000_000_000
    small = build_manifest(
        system_id="h", upload_id=uid, entries=[], skipped={}, conversation_count=5
    )
    assert "conversation_count" not in small["metadata"]
    older = {**small, "conversation_count": 1_200_000}  # as an earlier akoshad wrote it
    assert validate_manifest(older)  # Akosha would refuse it ...
    target = LocalTarget(tmp_path / "outbox")
    key = manifest_key("h", uid)
    (tmp_path / "outbox" / key).parent.mkdir(parents=True)
    (tmp_path / "outbox" / key).write_text(json.dumps(older))
    read = asyncio.run(load_manifest(target, "h", uid))  # ... akoshad reads it
    assert read["conversation_count"] == 1_200_000
