"""What status says and what makes it unhealthy: the pure parts of ``status`` /
``status --check``, the oldest pending change, the counters' meaning, one warning per
outage for the cleanup of failed uploads, and the MCP sync's bounded wait."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from akoshad.cli.client import check_line, render_status
from akoshad.cli.mcp import SYNC_TIMEOUT_DEFAULT, SYNC_TIMEOUT_MAX, sync_timeout
from akoshad.config import load_settings
from akoshad.errors import TransientError
from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.pipeline.debounce import Debouncer
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.upload import Uploader
from akoshad.runtime.health import (
    STATUS_EPILOG,
    behind_after_seconds,
    check_problems,
    data_dir_problem,
    warn_data_dir,
)
from akoshad.store.db import StateDB
from akoshad.targets.base import Compression, StoredObject
from akoshad.targets.local import LocalTarget

HEALTHY: dict[str, Any] = {
    "state": "idle",
    "paused": False,
    "degraded_reason": None,
    "pending": 0,
    "data_dir": "/d",
    "warnings": [],
    "waiting_for_data_dir": False,
    "oldest_pending_age_seconds": None,
    "behind_after_seconds": 120.0,
}


# ---- data_dir ----------------------------------------------------------------------------
def test_data_dir_problem_names_the_directory(tmp_path: Path) -> None:
    assert data_dir_problem(tmp_path) is None
    missing = tmp_path / "typo" / "data"
    problem = data_dir_problem(missing)
    assert problem is not None and str(missing) in problem and "does not exist" in problem
    (tmp_path / "file").write_text("x")
    problem = data_dir_problem(tmp_path / "file")
    assert problem is not None and "not a directory" in problem


def test_config_check_warning_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warn_data_dir(tmp_path)
    assert capsys.readouterr().err == ""
    warn_data_dir(tmp_path / "nope")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("akoshad: warning: data_dir ")
    assert str(tmp_path / "nope") in err


# ---- status --check ----------------------------------------------------------------------
def test_behind_threshold_adds_the_upload_interval() -> None:
    assert behind_after_seconds(60) == 120.0
    assert behind_after_seconds(60, 30) == 150.0  # min_upload_interval_seconds


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"state": "paused", "paused": True}, "paused"),
        ({"state": "degraded", "degraded_reason": "cloud: bucket 'x' does not exist"}, "x"),
        (
            {"waiting_for_data_dir": True, "warnings": ["data_dir /d does not exist"]},
            "waiting for data_dir /d",
        ),
        (  # data_dir a file: said as it is, not "to appear"
            {
                "waiting_for_data_dir": True,
                "data_dir_problem": "data_dir /f is not a directory: nothing is backed up",
            },
            "waiting for data_dir: data_dir /f is not a directory: nothing is backed up",
        ),
        ({"oldest_pending_age_seconds": 121.0, "pending": 1}, "behind"),
        (
            {"nothing_selected": "nothing to back up in data_dir (check include/exclude): x"},
            "nothing to back up in data_dir",
        ),
        (
            {"last_drill": {"ok": False, "upload_id": "u1", "problems": ["a.db: x", "b: y"]}},
            "the last restore drill of upload u1 failed: a.db: x (and 1 more)",
        ),
        (
            {"skipped": {"b.json": "symlink out of data_dir", "a.json": "name is not UTF-8"}},
            "2 file(s) skipped, not backed up (a.json: name is not UTF-8 and 1 more)",
        ),
        (
            {"last_prune": {"ok": False, "problems": ["read owner.json: no answer"]}},
            "the last prune failed: read owner.json: no answer (the daemon tries again)",
        ),
        (
            {
                "reload_refused": "reload refused, keeping the running configuration: "
                "invalid configuration: debounce_secnds: unknown key (refused at 10:00:00)",
                "warnings": ["reload refused, ..."],
            },
            "debounce_secnds: unknown key (refused at 10:00:00); the next start would "
            "refuse that file too (exit 78)",
        ),
        (
            {"memories": {"delivered": 3, "held": 2, "held_first": "box:a: database is locked"}},
            "2 memories not stored by Akosha yet (box:a: database is locked); sent again later",
        ),
        (
            {"restart_pending": ["log_level", "encryption", "local_target_dir"]},
            "encryption, local_target_dir changed in the configuration: the previous values "
            "are used until akoshad is restarted",
        ),
    ],
)
def test_check_fails_for_each_problem(change: dict[str, Any], needle: str) -> None:
    settings = load_settings(environ={"HOME": "/nonexistent"})
    assert check_problems(HEALTHY) == []
    assert check_line(HEALTHY, settings) == (0, "akoshad OK: idle, 0 pending")
    status = {**HEALTHY, **change}
    problems = check_problems(status)
    assert len(problems) == 1 and needle in problems[0]
    code, line = check_line(status, settings)
    assert code == 1 and line.startswith("akoshad UNHEALTHY: ") and needle in line


def test_check_passes_with_a_good_drill_or_one_that_only_lacked_the_identity() -> None:
    good = {"ok": True, "upload_id": "u1", "problems": []}
    locked = {"ok": False, "needs_identity": True, "upload_id": "u1", "problems": ["sealed"]}
    assert check_problems({**HEALTHY, "last_drill": good}) == []
    assert check_problems({**HEALTHY, "last_drill": locked}) == []


def test_check_passes_while_only_log_settings_wait_for_a_restart() -> None:
    pending = {"restart_pending": ["log_level", "log_format", "webhooks", "metrics_listen"]}
    assert check_problems({**HEALTHY, **pending}) == []


def test_memories_skipped_or_none_held_pass_the_check_and_show_in_status() -> None:
    memories = {
        "delivered": 3,
        "skipped": 1,
        "held": 0,
        "held_first": None,
        "last_skipped": {"box:v": "rejected by Akosha: Embedding dim mismatch"},
    }
    assert check_problems({**HEALTHY, "memories": memories}) == []
    text = render_status({**HEALTHY, "memories": memories}, now=time.time())
    assert "memories   3 delivered to Akosha, 1 skipped" in text
    assert "  skipped box:v: rejected by Akosha: Embedding dim mismatch" in text
    held = render_status({**HEALTHY, "memories": {**memories, "held": 2}}, now=time.time())
    assert "1 skipped, 2 held back (sent again later)" in held


def test_check_not_behind_within_the_limit() -> None:
    assert check_problems({**HEALTHY, "oldest_pending_age_seconds": 119.0, "pending": 3}) == []


def test_check_of_an_older_daemon_uses_the_configured_limit() -> None:
    old = {k: v for k, v in HEALTHY.items() if k != "behind_after_seconds"}
    for interval, limit in ((0, 70.0), (None, 100.0), (45, 115.0)):  # None: the default 30
        paced = {} if interval is None else {"min_upload_interval_seconds": interval}
        settings = load_settings(
            environ={"HOME": "/nonexistent"}, overrides={"max_delay_seconds": 10, **paced}
        )
        assert check_line({**old, "oldest_pending_age_seconds": limit - 1}, settings)[0] == 0
        assert check_line({**old, "oldest_pending_age_seconds": limit + 1}, settings)[0] == 1


def test_render_status_says_the_wait_and_names_the_counters() -> None:
    st = {
        **HEALTHY,
        "warnings": ["data_dir /x/typo does not exist: waiting for it to appear"],
        "counters": {"files_uploaded": 3, "bytes_uploaded": 30 * 2**20, "bytes_sent": 40 * 2**20},
    }
    text = render_status(st, now=time.time())
    assert "WARNING    data_dir /x/typo does not exist: waiting for it to appear" in text
    assert "30.0 MiB file bytes captured, 40.0 MiB bytes sent" in text
    assert " uploaded, " not in text.replace("files uploaded, ", "")
    for words in ("file bytes captured", "bytes sent", "deduplicated", "--check"):
        assert words in STATUS_EPILOG


def test_render_status_says_when_uploads_are_held_back() -> None:
    now = 1_800_000_000.0
    held = render_status({**HEALTHY, "pending": 2, "next_upload_not_before": now + 75}, now=now)
    assert "next upload in 1m15s (min_upload_interval_seconds)" in held
    for value in (None, now - 1, True, "soon"):  # not held back, or not a time
        text = render_status({**HEALTHY, "next_upload_not_before": value}, now=now)
        assert "next upload in" not in text
    assert "min_upload_interval_seconds" in STATUS_EPILOG


# ---- the oldest pending change ------------------------------------------------------------
def test_debouncer_oldest_is_the_first_event_of_the_longest_waiting_path() -> None:
    d = Debouncer(2, 60)
    assert d.oldest() is None
    d.touch("a", "modified", 10.0)
    d.touch("b", "modified", 5.0)
    d.touch("b", "modified", 11.0)
    assert d.oldest() == 5.0
    d.due(20.0)
    assert d.oldest() is None


async def test_a_row_changed_during_its_upload_is_as_old_as_that_upload(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    await db.open()
    try:
        await db.enqueue([("wal", "modified")], now=100.0)
        assert await db.oldest_queued() == 100.0
        (first,) = await db.claim(now=101.0)
        await db.enqueue([("wal", "modified")], now=150.0)  # written while it was sent
        await db.release([first], retry_at=None)
        (second,) = await db.claim(now=151.0)
        await db.enqueue([("wal", "modified")], now=200.0)  # and again
        await db.release([second], retry_at=None)
        # what waits now was written after the second claim, not at 100 s
        assert await db.oldest_queued() == 150.0
        (third,) = await db.claim(now=201.0)
        await db.release([third], retry_at=None)
        assert await db.oldest_queued() is None
    finally:
        await db.close()


# ---- the cleanup of failed uploads: one warning per outage ---------------------------------
class FlakyTarget(LocalTarget):
    """A local target that can be taken down: every request then fails as a dead server's."""

    down = False

    def _fail(self) -> None:
        if self.down:
            raise TransientError("cannot reach the target")

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        self._fail()
        return await super().put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        self._fail()
        return await super().put_object_file(key, source, size, crc32)

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        self._fail()
        async for key in super().list_keys(prefix):
            yield key


@pytest.fixture
def records() -> Iterator[list[tuple[str, str]]]:
    out: list[tuple[str, str]] = []
    sink = logger.add(
        lambda m: out.append((m.record["level"].name, m.record["message"])), level="DEBUG"
    )
    yield out
    logger.remove(sink)


async def test_cleanup_failure_warns_once_per_outage(
    tmp_path: Path, records: list[tuple[str, str]]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    target = FlakyTarget(tmp_path / "outbox")
    await target.start()
    snapshotter = Snapshotter(store, tmp_path / "state" / "staging")
    stats = Stats()
    uploader = Uploader(
        state=state,
        snapshotter=snapshotter,
        system_id="s",
        stats=stats,
        staging_dir=tmp_path / "state" / "packs",
    )
    drain = Drain(
        state=state, snapshotter=snapshotter, uploader=uploader, stats=stats, local=target
    )

    async def attempt(content: str) -> str | None:
        (store / "a.json").write_text(content)
        await state.enqueue([("a.json", "modified")])
        report = await drain.drain_once(target, now=time.time() + 3600)
        assert report is not None
        return report.error

    def cleanup_lines() -> list[str]:
        return [lvl for lvl, msg in records if msg.startswith("could not remove objects")]

    try:
        target.down = True
        for i in range(3):
            assert await attempt(f"{i}") == "cannot reach the target"
        assert cleanup_lines() == ["WARNING", "DEBUG", "DEBUG"]
        target.down = False
        assert await attempt("up") is None  # a success ends the outage
        target.down = True
        assert await attempt("down again") is not None
        assert cleanup_lines() == ["WARNING", "DEBUG", "DEBUG", "WARNING"]
    finally:
        await target.close()
        await state.close()


# ---- sync_to_akosha's wait -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("asked", "waits"),
    [(None, SYNC_TIMEOUT_DEFAULT), (5, 5.0), (0, 1.0), (-3, 1.0), (10**6, SYNC_TIMEOUT_MAX)],
)
def test_sync_timeout_is_bounded(asked: float | None, waits: float) -> None:
    assert sync_timeout(asked) == waits
    assert SYNC_TIMEOUT_DEFAULT == 60.0 and SYNC_TIMEOUT_MAX <= 600.0


def test_uptime_does_not_go_back_with_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon whose wall clock was set back a day (faketime on a real daemon) reported
    ``uptime_seconds: -86335.9`` (``status``: "up 0s"): it is counted on the monotonic clock."""
    from typing import cast

    from akoshad.runtime.status import StatusView
    from akoshad.runtime.wiring import Parts

    settings = load_settings(environ={"HOME": "/nonexistent"})
    status = StatusView(settings, cast(Parts, None), time.time() - 100)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 86400)
    assert 100 <= status.uptime() < 160


@pytest.mark.parametrize(
    ("paused", "degraded", "syncing", "in_flight", "word"),
    [
        (True, "cloud: down", True, 3, "paused"),
        (False, "cloud: down", True, 3, "degraded"),
        (False, None, True, 0, "syncing"),
        (False, None, False, 2, "syncing"),
        (False, None, False, 0, "idle"),
    ],
)
def test_the_state_word_follows_the_contract_precedence(
    paused: bool, degraded: str | None, syncing: bool, in_flight: int, word: str
) -> None:
    """``state``: paused > degraded > syncing > idle (CONTRACT.md "Status socket")."""
    from types import SimpleNamespace
    from typing import cast

    from akoshad.runtime.status import StatusView
    from akoshad.runtime.wiring import Parts

    settings = load_settings(environ={"HOME": "/nonexistent"})
    parts = SimpleNamespace(stats=SimpleNamespace(syncing=syncing, in_flight=in_flight))
    status = StatusView(settings, cast(Parts, parts), time.time())
    status.paused = paused
    assert status.state_word(degraded) == word


def test_render_status_lists_the_webhooks_and_the_events_they_lost() -> None:
    """Events a webhook gave up (undelivered for an hour) were only in ``status --json``:
    the human status, once the webhook answered again (its warning gone), showed no loss."""
    hooks = [
        {"url": "https://ntfy.sh/**********", "delivered": 4, "pending": 0, "dropped": 3},
        {"url": "http://127.0.0.1:9/hook", "delivered": 2, "pending": 1, "dropped": 0},
    ]
    text = render_status({**HEALTHY, "webhooks": hooks}, now=time.time())
    assert "webhooks\n" in text
    assert (
        "  https://ntfy.sh/**********: 4 delivered since the start, 0 waiting, "
        "3 dropped so far (each undelivered for an hour: lost)"
    ) in text
    assert "  http://127.0.0.1:9/hook: 2 delivered since the start, 1 waiting" in text.splitlines()
    assert "webhooks" not in render_status({**HEALTHY, "webhooks": []}, now=time.time())


def test_a_stopping_daemon_says_so_and_fails_the_check() -> None:
    """After SIGTERM, while the pass in hand finished, status said SYNCING and
    ``status --check`` 'akoshad OK: syncing'; now the state is ``paused`` (CONTRACT.md's
    nearest: no new pass begins) with ``stopping`` true, the human view says STOPPING, a
    warning says why, and the check fails naming the stop, not ``akoshad resume``."""
    from types import SimpleNamespace
    from typing import cast

    from akoshad.runtime.status import StatusView, stopping_line
    from akoshad.runtime.wiring import Parts

    settings = load_settings(environ={"HOME": "/nonexistent"})
    parts = SimpleNamespace(stats=SimpleNamespace(syncing=True, in_flight=1))
    stopping = [False]
    view = StatusView(settings, cast(Parts, parts), time.time(), stopping=lambda: stopping[0])
    assert view.state_word(None) == "syncing"
    stopping[0] = True
    assert view.state_word(None) == "paused"
    st = {"state": "paused", "paused": False, "stopping": True, "pending": 1}
    st["warnings"] = [stopping_line(settings.drain_deadline_seconds)]
    problems = check_problems(st)
    assert problems == ["stopping: a stop signal was received (akoshad exits soon)"]
    text = render_status(st)
    assert "state STOPPING" in text
    assert "WARNING    akoshad is stopping (a stop signal was received): no new pass" in text
    paused = check_problems({**st, "stopping": False, "paused": True})  # a pause as before
    assert paused == ["paused (akoshad resume restarts uploading)"]
