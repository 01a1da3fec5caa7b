"""A manifest's ``metadata.files`` is validated once, whole, with one clear error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from akoshad.manifest.layout import (
    FileEntry,
    ManifestError,
    build_manifest,
    entries_of,
    in_future,
    upload_time,
)

SHA = "ab" * 32
UPLOAD = "20261124T085033123456Z-1a2b3c"


def _raw(path: str, **change: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "path": path,
        "name": "x.json.gz",
        "key": f"systems/box/uploads/{UPLOAD}/x.json.gz",
        "size": 10,
        "sha256": SHA,
        "stored_size": 30,
        "compression": "gzip",
        "kind": "file",
    }
    raw.update(change)
    return raw


def _manifest(*files: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"files": list(files)}}


def test_valid_entries_with_and_without_mode() -> None:
    entries = entries_of(_manifest(_raw("a/b.json", mode=0o640), _raw("c.json")))
    assert [(e.path, e.mode) for e in entries] == [("a/b.json", 0o640), ("c.json", None)]


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ([_raw("bad\0name")], "unsafe path"),
        ([_raw("../up.json")], "unsafe path"),
        ([_raw("/etc/passwd")], "unsafe path"),
        ([_raw("a/./b")], "unsafe path"),
        ([_raw("a//b")], "unsafe path"),
        ([_raw("")], "unsafe path"),
        ([_raw("a"), _raw("a/b")], "'a' is listed as a file and as a directory"),
        ([_raw("a/b/c"), _raw("a/b")], "'a/b' is listed as a file and as a directory"),
        ([_raw("a"), _raw("a")], "'a' is listed twice"),
        ([{k: v for k, v in _raw("a").items() if k != "name"}], "name is missing"),
        ([_raw("a", size="10")], "size is missing or not a int"),
        ([_raw("a", size=True)], "size is missing or not a int"),
        ([_raw("a", size=-1)], "negative size"),
        ([_raw("a", sha256="XYZ")], "sha256"),
        ([_raw("a", compression="zstd")], "unknown compression"),
        ([_raw("a", kind="socket")], "unknown kind"),
        ([_raw("a", key="../../etc/passwd")], "bad object key"),
        ([_raw("a", key="systems/box/uploads/../x/y")], "bad object key"),
        ([_raw("a", name="../x")], "bad object name"),
        ([_raw("a", mode=0o4755)], "not permission bits"),
        (["just a string"], "is not an object"),
    ],
)
def test_malformed_entries_are_one_clear_error(files: list[Any], reason: str) -> None:
    with pytest.raises(ManifestError, match=reason.replace("(", r"\(")):
        entries_of(_manifest(*files))


def test_files_not_a_list() -> None:
    with pytest.raises(ManifestError, match="not a list"):
        entries_of({"metadata": {"files": {"a": 1}}})


def test_mode_recorded_only_when_known_and_stale_skips_dropped() -> None:
    key = f"systems/box/uploads/{UPLOAD}/"
    with_mode = FileEntry("a.json", "a.json", key + "a.json", 1, SHA, 1, "none", "file", mode=0o600)
    without = FileEntry("b.json", "b.json", key + "b.json", 1, SHA, 1, "none", "file")
    manifest = build_manifest(
        system_id="box",
        upload_id=UPLOAD,
        entries=[with_mode, without],
        skipped={"a.json": "stale reason", "c.json": "symlink points outside data_dir"},
    )
    files = manifest["metadata"]["files"]
    assert files[0]["mode"] == 0o600 and "mode" not in files[1]
    assert manifest["metadata"]["skipped"] == [
        {"path": "c.json", "reason": "symlink points outside data_dir"}
    ]
    assert entries_of(manifest) == [with_mode, without]


def test_upload_ids_dated_in_the_future() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    assert upload_time(UPLOAD) == datetime(2026, 11, 24, 8, 50, 33, 123456, tzinfo=UTC)
    assert not in_future(UPLOAD, now)
    assert in_future("29991231T000000000000Z-abcdef", now)
    assert not in_future("20261130T000100000000Z-abcdef", now)  # within clock skew
    assert not in_future("manual-upload", now)  # not dated: never "future"
    assert upload_time("manual-upload") is None
