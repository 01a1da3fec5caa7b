"""``run --once`` walks the store once, while its targets start: that walk serves the
reconcile and reads the stats its quick check records, and a change made after it (while
the run captures and uploads) is still seen by the next run's quick check."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from akoshad import fastpath
from akoshad.config import Settings, load_settings
from akoshad.names import EXIT_OK
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.upload import Uploader
from akoshad.runtime import run, walk_child
from akoshad.targets.local import LocalTarget


def _setup(tmp_path: Path) -> tuple[Settings, dict[str, str], list[str]]:
    data = tmp_path / "data"
    for i in range(20):
        (data / "sessions" / f"s{i}").mkdir(parents=True)
        (data / "sessions" / f"s{i}" / "state.json").write_text(f'{{"n": {i}}}')
    (data / "x.duckdb.tmp").mkdir()
    (data / "x.duckdb.tmp" / "spill").write_bytes(b"x")
    env = {"HOME": str(tmp_path / "home")}
    config = tmp_path / "config.yaml"
    config.write_text("log_level: WARNING\n")
    settings = load_settings(
        str(config),
        environ=env,
        overrides={
            "data_dir": str(data),
            "state_dir": str(tmp_path / "state"),
            "local_target_dir": str(tmp_path / "outbox"),
            "socket_path": str(tmp_path / "akoshad.sock"),
            "cloud_sync": {"system_id": "once-walk"},
        },
    )
    return settings, env, ["run", "--once", "--config", str(config)]


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``run_daemon`` in this process: the test's log sinks, heap and GIL switch interval
    stay as they are."""
    monkeypatch.setattr(run, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(run, "bounded_heap", lambda: None)
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("in_process")
def test_run_once_walks_the_store_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, env, argv = _setup(tmp_path)
    real = os.scandir
    log = tmp_path / "scandir.log"  # appended to by this process and by a forked walk

    def counting(path: Any = ".") -> Any:
        with open(log, "a") as fh:
            fh.write(f"{path}\n")
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    assert run.run_daemon(settings, once=True, environ=env, argv=argv) == EXIT_OK
    monkeypatch.setattr(os, "scandir", real)
    walked = Counter(log.read_text().splitlines())
    assert walked[str(settings.data_dir)] == 1
    assert walked[str(settings.data_dir / "sessions" / "s3")] == 1
    assert walked[str(settings.data_dir / "x.duckdb.tmp")] == 1
    assert fastpath.try_unchanged(argv, env)  # recorded: the next run is answered at once


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("change", [False, True])
def test_a_change_during_the_run_is_seen_by_the_next_quick_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: bool
) -> None:
    settings, env, argv = _setup(tmp_path)
    live = settings.data_dir / "sessions" / "s7" / "state.json"
    real = Uploader.upload

    async def upload(self: Uploader, *args: Any, **kwargs: Any) -> None:
        if change:  # after the walk and the capture: same size, mtime put back
            st = live.stat()
            live.write_text('{"n": 8}')
            os.utime(live, ns=(st.st_atime_ns, st.st_mtime_ns))
        await real(self, *args, **kwargs)

    monkeypatch.setattr(Uploader, "upload", upload)
    assert run.run_daemon(settings, once=True, environ=env, argv=argv) == EXIT_OK
    assert fastpath.try_unchanged(argv, env) is not change


@pytest.mark.usefixtures("in_process")
def test_run_once_walks_the_store_while_its_targets_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, env, argv = _setup(tmp_path)
    events: list[str] = []
    real_walk, real_start = walk_store, LocalTarget.start
    monkeypatch.setattr(walk_child, "may_fork", lambda: False)  # the events of this process

    def walk(*args: Any, **kwargs: Any) -> Any:
        events.append("walk")
        return real_walk(*args, **kwargs)

    async def start(target: LocalTarget, *, clean_up: bool = True) -> None:
        await asyncio.sleep(0.2)  # a slow endpoint: the walk goes on meanwhile
        events.append("target started")
        await real_start(target, clean_up=clean_up)

    monkeypatch.setattr(walk_child, "walk_store", walk)
    monkeypatch.setattr(LocalTarget, "start", start)
    assert run.run_daemon(settings, once=True, environ=env, argv=argv) == EXIT_OK
    assert events[:2] == ["walk", "target started"]
    assert events.count("walk") == 1


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("forked", [False, True], ids=["thread", "forked"])
def test_run_once_begins_its_walk_before_the_daemon_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forked: bool
) -> None:
    """The walk (a forked child on Linux, else a thread) runs from the start of ``run
    --once``: the daemon's modules are imported and the daemon made while it goes on. The
    two sides meet through files, which a forked walk sees as well."""
    if forked and not walk_child.may_fork():
        pytest.skip("forks only on Linux, single-threaded")
    if not forked:
        monkeypatch.setattr(walk_child, "may_fork", lambda: False)
    settings, env, argv = _setup(tmp_path)
    made, seen = tmp_path / "made", tmp_path / "seen"
    real_walk, real_make = walk_store, run.make_daemon
    parent = os.getpid()

    def walk(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 10
        while not made.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the daemon is made meanwhile (not after the walk)
        seen.write_text(f"{made.exists()} {os.getpid() != parent}")
        return real_walk(*args, **kwargs)

    def make_daemon(*args: Any) -> Any:
        daemon = real_make(*args)
        made.touch()
        return daemon

    monkeypatch.setattr(walk_child, "walk_store", walk)
    monkeypatch.setattr(run, "make_daemon", make_daemon)
    assert run.run_daemon(settings, once=True, environ=env, argv=argv) == EXIT_OK
    assert seen.read_text() == f"True {forked}"  # waited for the daemon, where it should
    assert fastpath.try_unchanged(argv, env)


@pytest.mark.usefixtures("in_process")
def test_the_event_loop_waits_at_most_a_millisecond_for_the_gil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While worker threads compute, the loop's thread gets the GIL within
    ``GIL_SWITCH_SECONDS`` (Python's default is 5 ms): measured inside the run."""
    settings, env, argv = _setup(tmp_path)
    seen: list[float] = []
    real = Uploader.upload

    async def upload(self: Uploader, *args: Any, **kwargs: Any) -> None:
        seen.append(sys.getswitchinterval())
        await real(self, *args, **kwargs)

    monkeypatch.setattr(Uploader, "upload", upload)
    sys.setswitchinterval(0.005)  # Python's default (the fixture puts back the test's)
    assert run.run_daemon(settings, once=True, environ=env, argv=argv) == EXIT_OK
    assert seen == [run.GIL_SWITCH_SECONDS] and run.GIL_SWITCH_SECONDS <= 0.001
