"""Links inside the store to its own files, and a file's other names, change with it."""

from __future__ import annotations

import os
from pathlib import Path

from akoshad.pipeline.store_links import StoreLinks, look
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.storefiles import PathFilter


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
    assert look(store, rels) == ({"in.json": "d/f.json"}, {})


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


def test_the_other_names_of_a_file_change_with_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "d").mkdir(parents=True)
    (store / "a.json").write_text("{}")
    os.link(store / "a.json", store / "d" / "b.json")
    (store / "alone.json").write_text("{}")
    walk = walk_store(store, PathFilter())
    st = os.stat(store / "a.json")
    assert walk.inodes == {"a.json": (st.st_dev, st.st_ino), "d/b.json": (st.st_dev, st.st_ino)}
    links = StoreLinks(store)
    links.found(walk.links, walk.inodes, whole=True)
    changed = {"a.json": "modified", "alone.json": "modified"}
    links.add_links(changed)
    assert changed == {"a.json": "modified", "alone.json": "modified", "d/b.json": "modified"}

    os.link(store / "alone.json", store / "c.json")  # a name made while watched
    links.add_links({"c.json": "added"})
    changed = {"alone.json": "modified"}
    links.add_links(changed)
    assert changed == {"alone.json": "modified", "c.json": "modified"}


def test_a_file_with_a_name_outside_the_store_is_found(tmp_path: Path) -> None:
    """A hard link from outside data_dir to a store file (its writes through that name
    reach no watch) is found by the walk, with how many such names; names inside the
    store are no such name."""
    store = tmp_path / "store"
    (store / "d").mkdir(parents=True)
    (store / "a.json").write_text("{}")
    os.link(store / "a.json", store / "d" / "b.json")
    (store / "c.json").write_text("{}")
    os.link(store / "c.json", tmp_path / "outside.json")
    os.link(store / "c.json", tmp_path / "outside2.json")
    (store / "one.json").write_text("{}")
    walked = walk_store(store, PathFilter.of([], []))
    assert walked.outside_names == {"c.json": 2}
