"""Links inside the store to its own files change with those files."""

from __future__ import annotations

import os
from pathlib import Path

from akoshad.pipeline.store_links import StoreLinks, links_among


def test_only_links_to_files_inside_the_store_are_found(tmp_path: Path) -> None:
    store, outside = tmp_path / "store", tmp_path / "outside.json"
    (store / "d").mkdir(parents=True)
    (store / "d" / "f.json").write_text("{}")
    outside.write_text("{}")
    os.symlink("d/f.json", store / "in.json")
    os.symlink(outside, store / "out.json")
    os.symlink("nothing", store / "dangling.json")
    os.symlink("d", store / "dirlink")
    os.symlink("loop", store / "loop")
    rels = ["in.json", "out.json", "dangling.json", "dirlink", "loop", "d/f.json", "gone"]
    assert links_among(store, rels) == {"in.json": "d/f.json"}


def test_a_changed_file_brings_its_links_known_or_just_seen(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "f.json").write_text("{}")
    os.symlink("f.json", store / "seen.json")
    links = StoreLinks(store)
    links.found({"walked.json": "f.json"}, whole=True)
    changed = {"seen.json": "added"}
    links.add_links(changed)  # a link among the changes is learnt
    assert changed == {"seen.json": "added"}
    changed = {"f.json": "modified"}
    links.add_links(changed)
    assert changed == {"f.json": "modified", "seen.json": "modified", "walked.json": "modified"}
    links.found({}, whole=True)  # a whole walk replaces what was known
    changed = {"f.json": "deleted"}
    links.add_links(changed)
    assert changed == {"f.json": "deleted"}
