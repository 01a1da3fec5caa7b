"""Odd entries that appear in the store while the daemon watches it: the daemon goes on,
what can be backed up lands, and what cannot is named (never an OK status over a gap)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import akoshad, daemon_config, manifests, start_daemon, stop_daemon, wait_for

SYSTEM = "oddstore"


class Watched:
    """A running daemon over a generated store, with its outbox and CLI."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = tmp / "store"
        self.outbox = tmp / "outbox"
        self.log = tmp / "daemon.log"
        self.config, self.env = daemon_config(tmp, SYSTEM, socket_path=tmp / "odd.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(self.config), env=self.env)

    def start(self) -> None:
        assert self.cli("run", "--once").returncode == 0
        self.proc = start_daemon(self.config, self.env, self.log)
        wait_for(lambda: self.cli("status").returncode == 0, 40)

    def status(self) -> dict[str, Any]:
        res = self.cli("status", "--json")
        assert res.returncode == 0, (res.stderr, self.log.read_text())
        return dict(json.loads(res.stdout))

    def paths(self) -> set[str]:
        return {f["path"] for f in manifests(self.outbox, SYSTEM)[-1]["metadata"]["files"]}

    def landed(self, rel: str, text: str) -> bool:
        """The newest upload holds ``rel`` with content ``text`` (restored to see it)."""
        dest = self.tmp / f"r{len(list(self.tmp.glob('r*')))}"
        res = self.cli("restore", "--latest", "--dest", str(dest), "--path", rel)
        return res.returncode == 0 and (dest / rel).read_text() == text


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    w = Watched(tmp_path)
    w.start()
    try:
        yield w
    finally:
        if w.proc is not None:
            stop_daemon(w.proc)


def test_a_name_that_is_not_utf8_made_while_watched_is_named_and_the_daemon_goes_on(
    watched: Watched,
) -> None:
    with open(os.fsencode(str(watched.store)) + b"/bad-\xfe.json", "wb") as fh:
        fh.write(b"{}")
    wait_for(lambda: watched.status()["skipped"], 20)
    (watched.store / "later.json").write_text("after the odd name")
    wait_for(lambda: "later.json" in watched.paths(), 20)
    assert watched.proc is not None and watched.proc.poll() is None
    assert any("UTF-8" in why for why in watched.status()["skipped"].values())
    assert watched.cli("status", "--check").returncode == 1


def test_a_file_and_a_directory_swapped_under_one_name_are_backed_up_as_they_are(
    watched: Watched,
) -> None:
    swap = watched.store / "swap.json"
    swap.write_text("a file")
    wait_for(lambda: "swap.json" in watched.paths(), 20)

    swap.unlink()
    swap.mkdir()
    (swap / "inner.txt").write_text("in a directory")
    wait_for(lambda: "swap.json/inner.txt" in watched.paths(), 20)
    assert "swap.json" not in watched.paths()
    assert watched.landed("swap.json/inner.txt", "in a directory")

    (swap / "inner.txt").unlink()
    swap.rmdir()
    swap.write_text("a file again")
    wait_for(lambda: "swap.json" in watched.paths(), 20)
    assert "swap.json/inner.txt" not in watched.paths()
    assert watched.landed("swap.json", "a file again")
    assert wait_for(lambda: watched.cli("status", "--check").returncode == 0, 20)
    assert watched.status()["skipped"] == {}


def _deep_file(top: Path) -> None:
    """A file whose path is longer than PATH_MAX (made by walking down: no call is given
    the whole path)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(24):
            os.mkdir("d" * 200, dir_fd=fd)
            down = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = down
        out = os.open("deep.json", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.write(out, b"{}")
        os.close(out)
    finally:
        os.close(fd)


def test_a_path_too_long_to_open_is_named_and_holds_back_no_change(watched: Watched) -> None:
    top = watched.store / "deep"
    top.mkdir()
    _deep_file(top)
    skipped = wait_for(lambda: watched.status()["skipped"], 20)
    assert all(p.startswith("deep/") and "too long" in why for p, why in skipped.items())
    (watched.store / "later.json").write_text("after the deep file")
    wait_for(lambda: "later.json" in watched.paths(), 20)
    st = watched.status()
    assert st["unrecorded"] is None and st["pending"] == 0
    assert watched.cli("status", "--check").returncode == 1

    subprocess.run(["rm", "-rf", str(top)], check=True)
    assert wait_for(lambda: watched.cli("status", "--check").returncode == 0, 20)
    assert watched.status()["skipped"] == {}


def test_links_to_a_store_file_are_backed_up_with_its_new_content(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    (w.store / "notes").mkdir()
    (w.store / "notes" / "target.json").write_text("v1")
    os.symlink("notes/target.json", w.store / "before.json")  # found by the start's walk
    w.start()
    assert w.proc is not None
    try:
        os.symlink("target.json", w.store / "notes" / "while.json")  # seen by the watch
        wait_for(lambda: "notes/while.json" in w.paths(), 20)
        (w.store / "notes" / "target.json").write_text("v2")
        wait_for(lambda: w.landed("notes/target.json", "v2"), 20)
        assert w.landed("before.json", "v2") and w.landed("notes/while.json", "v2")
    finally:
        stop_daemon(w.proc)


def test_every_name_of_a_hard_linked_file_is_backed_up_with_its_new_content(
    watched: Watched,
) -> None:
    (watched.store / "one.json").write_text("v1")
    os.link(watched.store / "one.json", watched.store / "two.json")
    wait_for(lambda: watched.landed("two.json", "v1"), 20)
    with open(watched.store / "one.json", "r+") as fh:  # written in place, through one name
        fh.write("v2")
    wait_for(lambda: watched.landed("one.json", "v2"), 20)
    assert watched.landed("two.json", "v2")


def test_a_link_to_a_directory_out_of_data_dir_is_refused_never_entered(
    watched: Watched,
) -> None:
    elsewhere = watched.tmp / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    for i in range(30):
        (elsewhere / "sub" / f"f{i}.json").write_text("outside")
    os.symlink(elsewhere, watched.store / "linked")
    skipped = wait_for(lambda: watched.status()["skipped"], 20)
    (watched.store / "later.json").write_text("after the link")
    wait_for(lambda: "later.json" in watched.paths(), 20)
    st = watched.status()
    assert skipped == st["skipped"] == {"linked": "symlink points outside data_dir"}
    assert st["pending"] == 0


def test_a_directory_whose_name_is_not_utf8_is_named_and_changes_still_land(
    tmp_path: Path,
) -> None:
    """watchfiles cannot watch a tree holding such a directory: the daemon compares the
    store instead (at growing pauses, never spinning), names the directory, and goes on
    backing up the rest."""
    w = Watched(tmp_path)
    w.start()
    assert w.proc is not None
    try:
        odd = os.fsencode(str(w.store)) + b"/dir-\xff"
        os.mkdir(odd)
        with open(odd + b"/in.json", "wb") as fh:
            fh.write(b"{}")
        skipped = wait_for(lambda: w.status()["skipped"], 20)
        assert any("UTF-8" in why for why in skipped.values())
        (w.store / "later.json").write_text("while the watch is down")
        wait_for(lambda: "later.json" in w.paths(), 40)
        retries = w.log.read_text().count("name is not valid UTF-8")
        assert retries < 10, retries  # compared at pauses, not in a loop
    finally:
        stop_daemon(w.proc)
