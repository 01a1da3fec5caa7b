"""``akoshad pause`` stops uploading: a ``sync`` request while paused (``sync``,
``sync --wait``, the MCP tool) uploads nothing and says so, instead of draining anyway
(``--wait``) or answering "sync started" and doing nothing (without ``--wait``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from akoshad.pipeline.drain import Drain
from akoshad.pipeline.report import PassReport
from akoshad.runtime.control_client import ControlRequestError
from akoshad.runtime.requests import handle_request


class FakeDaemon:
    """What ``handle_request`` touches for pause, resume and sync."""

    def __init__(self, data_dir: Path) -> None:
        self.settings = SimpleNamespace(data_dir=data_dir)  # the store: there and readable
        self.view = SimpleNamespace(
            paused=False, nothing_to_back_up=self._nothing, restart_pending=[]
        )
        self.nothing: str | None = None  # the view's "nothing to back up" line
        self.wake = asyncio.Event()
        self.parts = SimpleNamespace(stats=SimpleNamespace(syncing=False))  # a pass running
        self.stop_event = asyncio.Event()  # set: a stop signal was received
        self.passes = SimpleNamespace(due_now=self._due_now)
        self.made_due = 0  # the queue's backoffs ended (a sync asked for)
        self.depth = 0  # the queue's depth after a drain
        self.stop_during_drain = False  # a stop signal arrives while a drain runs
        self.pause_during_drain = False  # `akoshad pause` while a drain runs
        self.drained = 0
        self.flushed = 0
        self.feed = SimpleNamespace(flush=self._flush, debouncer=[], unrecorded=None)
        self.drain = SimpleNamespace(pacer=SimpleNamespace(waive=lambda: None), akosha=None)
        self.state = SimpleNamespace(queue_depth=self._depth, skipped=self._skipped)
        self.skipped: dict[str, str] = {}  # files left out of every upload

    async def _flush(self) -> None:
        self.flushed += 1

    async def _due_now(self) -> None:
        self.made_due += 1

    async def _depth(self) -> int:
        return self.depth

    async def _skipped(self) -> dict[str, str]:
        return self.skipped

    async def _nothing(self) -> str | None:
        return self.nothing

    async def drain_until_empty(self, **_: Any) -> tuple[bool, list[Any]]:
        self.drained += 1
        if self.stop_during_drain:
            self.stop_event.set()
        if self.pause_during_drain:
            self.view.paused = True
        return True, []


@pytest.mark.parametrize("wait", [True, False])
async def test_sync_while_paused_uploads_nothing_and_says_so(wait: bool, tmp_path: Path) -> None:
    daemon = FakeDaemon(tmp_path)
    await handle_request(daemon, {"cmd": "pause"})  # type: ignore[arg-type]
    with pytest.raises(ControlRequestError, match=r"paused.*akoshad resume"):
        await handle_request(daemon, {"cmd": "sync", "wait": wait})  # type: ignore[arg-type]
    assert daemon.drained == 0 and not daemon.wake.is_set()
    await handle_request(daemon, {"cmd": "resume"})  # type: ignore[arg-type]
    result = await handle_request(daemon, {"cmd": "sync", "wait": wait})  # type: ignore[arg-type]
    assert result["ok_drain"] is True
    assert daemon.drained == (1 if wait else 0) and daemon.wake.is_set()


async def test_sync_wait_with_nothing_to_back_up_is_not_done(tmp_path: Path) -> None:
    """A store that selects no file and was never uploaded: the drain had nothing to do,
    and that is no backup (``sync --wait`` exits 1 with the reason)."""
    daemon = FakeDaemon(tmp_path)
    daemon.nothing = "nothing to back up in data_dir (check include/exclude): no file"
    result = await handle_request(daemon, {"cmd": "sync", "wait": True})  # type: ignore[arg-type]
    assert result["ok_drain"] is False and result["error"] == daemon.nothing
    daemon.nothing = None
    result = await handle_request(daemon, {"cmd": "sync", "wait": True})  # type: ignore[arg-type]
    assert result["ok_drain"] is True and "error" not in result


async def test_sync_wait_with_a_file_skipped_is_not_done(tmp_path: Path) -> None:
    """A file left out of the uploads (skipped at an earlier pass, still skipped): the
    store is not all backed up, whatever this drain did (``run --once`` exits 1 too)."""
    daemon = FakeDaemon(tmp_path)
    daemon.skipped = {"a.json": "symlink points outside data_dir"}
    result = await handle_request(daemon, {"cmd": "sync", "wait": True})  # type: ignore[arg-type]
    assert result["ok_drain"] is False
    assert result["error"] == (
        "1 file(s) skipped, not backed up (a.json: symlink points outside data_dir)"
    )
    daemon.skipped = {}
    result = await handle_request(daemon, {"cmd": "sync", "wait": True})  # type: ignore[arg-type]
    assert result["ok_drain"] is True and "error" not in result


@pytest.mark.parametrize("wait", [True, False])
async def test_sync_over_http_without_akosha_is_refused(wait: bool, tmp_path: Path) -> None:
    """``sync --method http`` delivers memories to Akosha: with no akosha_url it could do
    nothing (the files stay for the bucket), so it says so instead of draining."""
    daemon = FakeDaemon(tmp_path)
    request = {"cmd": "sync", "wait": wait, "method": "http"}
    with pytest.raises(ControlRequestError, match="no akosha_url is configured"):
        await handle_request(daemon, request)  # type: ignore[arg-type]
    assert daemon.drained == 0 and not daemon.wake.is_set()
    daemon.drain.akosha = object()
    result = await handle_request(daemon, request)  # type: ignore[arg-type]
    assert result["ok_drain"] is True


@pytest.mark.parametrize("gone", ["missing", "nothing selected"])
async def test_sync_without_wait_of_a_store_that_is_not_backed_up_says_so(
    tmp_path: Path, gone: str
) -> None:
    """``akoshad sync`` (no ``--wait``) with data_dir missing, or selecting no file, said
    'sync started', exit 0, for a sync that could back up nothing."""
    daemon = FakeDaemon(tmp_path / "store" if gone == "missing" else tmp_path)
    daemon.nothing = None if gone == "missing" else "nothing to back up in data_dir: no file"
    result = await handle_request(daemon, {"cmd": "sync", "wait": False})  # type: ignore[arg-type]
    assert result["ok_drain"] is False and daemon.wake.is_set()
    want = "does not exist" if gone == "missing" else daemon.nothing
    assert want and want in result["error"]


@pytest.mark.parametrize("wait", [True, False])
async def test_sync_method_cloud_without_a_bucket_is_refused(wait: bool, tmp_path: Path) -> None:
    """``sync --method cloud`` (the bucket only) with no bucket configured (a typo in the
    bucket's variable) uploaded to the local outbox and said 'sync done: 1 upload(s)'."""
    daemon = FakeDaemon(tmp_path)
    daemon.settings = SimpleNamespace(
        data_dir=tmp_path, bucket_configured=False, local_target_dir=tmp_path / "outbox"
    )
    request = {"cmd": "sync", "wait": wait, "method": "cloud"}
    with pytest.raises(ControlRequestError, match=r"--method cloud .* no cloud_sync.cloud_bucket"):
        await handle_request(daemon, request)  # type: ignore[arg-type]
    assert daemon.drained == 0 and not daemon.wake.is_set()
    daemon.settings.bucket_configured = True
    result = await handle_request(daemon, request)  # type: ignore[arg-type]
    assert result["ok_drain"] is True


@pytest.mark.parametrize("cmd", ["sync", "pause", "resume", "prune", "drill", "takeover"])
async def test_commands_while_stopping_are_refused(cmd: str, tmp_path: Path) -> None:
    """A request while the daemon stops (SIGTERM, the pass in hand finishing): ``akoshad
    sync`` said 'sync started' (exit 0) and ``pause`` 'uploads paused', for a daemon about
    to exit; each is refused with one line now. ``status`` is still answered."""
    daemon = FakeDaemon(tmp_path)
    daemon.view.status = lambda: asyncio.sleep(0, {"state": "syncing"})
    daemon.stop_event.set()
    with pytest.raises(ControlRequestError, match=r"akoshad is stopping .* next start"):
        await handle_request(daemon, {"cmd": cmd, "wait": False})  # type: ignore[arg-type]
    assert daemon.drained == 0 and not daemon.wake.is_set() and daemon.view.paused is False
    assert await handle_request(daemon, {"cmd": "status"}) == {"state": "syncing"}  # type: ignore[arg-type]


async def test_sync_wait_stopped_between_passes_is_not_done(tmp_path: Path) -> None:
    """A ``sync --wait`` drain that a stop signal ended between passes (no new pass
    begins), changes still queued: it said 'sync done ... 3 pending', exit 0."""
    daemon = FakeDaemon(tmp_path)
    daemon.depth, daemon.stop_during_drain = 3, True
    result = await handle_request(daemon, {"cmd": "sync", "wait": True})  # type: ignore[arg-type]
    assert result["ok_drain"] is False and daemon.drained == 1
    assert result["error"] == (
        "akoshad is stopping (a stop signal was received): 3 change(s) stay queued for its "
        "next start"
    )
    daemon.depth = 0  # all went up before the stop: done
    daemon.stop_event.clear()
    result = await handle_request(daemon, {"cmd": "sync", "wait": True})  # type: ignore[arg-type]
    assert result["ok_drain"] is True and "error" not in result


async def test_pause_during_a_pass_says_the_pass_finishes(tmp_path: Path) -> None:
    """A pause starts no new pass and stops none: a 1.5 GB upload in hand went on for
    12 s after 'uploads paused' with nothing said; the reply says so now (``finishing``),
    and ``akoshad pause`` prints it."""
    daemon = FakeDaemon(tmp_path)
    assert await handle_request(daemon, {"cmd": "pause"}) == {  # type: ignore[arg-type]
        "paused": True,
        "finishing": False,
    }
    daemon.parts.stats.syncing = True
    assert await handle_request(daemon, {"cmd": "pause"}) == {  # type: ignore[arg-type]
        "paused": True,
        "finishing": True,
    }
    assert await handle_request(daemon, {"cmd": "resume"}) == {  # type: ignore[arg-type]
        "paused": False,
        "finishing": False,
    }


async def test_sync_without_wait_ends_the_backoff_of_failed_changes(tmp_path: Path) -> None:
    """``akoshad sync`` after the cause of a failure was fixed (the outbox's disk full, then
    grown): 'sync started', and the change waited out its backoff (51 s more) before it
    was tried; ``sync --wait`` tried it at once. Both make every pending change due now."""
    daemon = FakeDaemon(tmp_path)
    result = await handle_request(daemon, {"cmd": "sync", "wait": False})  # type: ignore[arg-type]
    assert result == {"ok_drain": True, "started": True}
    assert daemon.made_due == 1 and daemon.wake.is_set()


@pytest.mark.parametrize("wait", [True, False])
@pytest.mark.parametrize("key", ["data_dir", "encryption"])
async def test_sync_after_a_reload_that_waits_for_a_restart_is_not_done(
    wait: bool, key: str, tmp_path: Path
) -> None:
    """data_dir moved to a new store in the file, SIGHUP (warned: after a restart), then
    ``sync --wait``: 'sync done: nothing to upload', exit 0, while the new store was never
    backed up (the daemon synced the old one). Alike for encryption turned on."""
    daemon = FakeDaemon(tmp_path)
    daemon.view.restart_pending = [key, "log_level"]
    result = await handle_request(daemon, {"cmd": "sync", "wait": wait})  # type: ignore[arg-type]
    assert result["ok_drain"] is False
    assert result["error"] == (
        f"{key} changed in the configuration, which takes effect after a restart: this "
        f"daemon syncs {tmp_path} with the previous {key} until then; restart akoshad"
    )
    daemon.view.restart_pending = ["log_level"]  # nothing the sync is made of
    result = await handle_request(daemon, {"cmd": "sync", "wait": wait})  # type: ignore[arg-type]
    assert result["ok_drain"] is True


async def test_a_pause_during_sync_wait_ends_its_drain_and_says_so(tmp_path: Path) -> None:
    """``akoshad pause`` while a ``sync --wait`` drained (changes falling due pass after
    pass): the sync's drain began new passes (uploads) regardless, and said 'sync done'. No
    new pass begins once paused (``Drain.until_empty``), and the sync says what waits."""
    daemon = FakeDaemon(tmp_path)
    daemon.depth, daemon.pause_during_drain = 2, True
    result = await handle_request(daemon, {"cmd": "sync", "wait": True})  # type: ignore[arg-type]
    assert result["ok_drain"] is False
    assert result["error"] == (
        "uploads were paused during the sync: 2 change(s) wait for `akoshad resume`"
    )


async def test_drain_until_empty_begins_no_pass_once_paused() -> None:
    passes: list[int] = []
    paused = [False]

    async def run_pass(*_: Any) -> PassReport:
        passes.append(1)
        paused[0] = len(passes) >= 2  # paused during the second pass
        return PassReport(target="local", upload_id=f"u{len(passes)}")

    drain = SimpleNamespace(run_pass=run_pass)
    ok, reports = await Drain.until_empty(drain, paused=lambda: paused[0])  # type: ignore[arg-type]
    assert ok is True and [r.upload_id for r in reports] == ["u1", "u2"]


@pytest.mark.parametrize("wait", ["no", "false", 0, None])
async def test_sync_wait_must_be_a_bool(wait: object, tmp_path: Path) -> None:
    """A hand-written request ``{"cmd": "sync", "wait": "no"}`` ran a waiting drain (any
    truthy value); enable_fallback and dry_run were checked, wait was not."""
    daemon = FakeDaemon(tmp_path)
    with pytest.raises(ControlRequestError, match="wait must be true or false"):
        await handle_request(daemon, {"cmd": "sync", "wait": wait})  # type: ignore[arg-type]
    assert daemon.drained == 0 and not daemon.wake.is_set()
    result = await handle_request(daemon, {"cmd": "sync"})  # type: ignore[arg-type]
    assert result == {"ok_drain": True, "started": True}  # no wait given: not waiting
