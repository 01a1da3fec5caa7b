"""The metrics module: the status collector, the pipeline's counters, request counting
and the /metrics server (real aiohttp on a free port, a real local target)."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from akoshad.akosha.client import AkoshaClient
from akoshad.config import load_settings
from akoshad.errors import TransientError
from akoshad.pipeline.report import PassReport
from akoshad.runtime.metrics import CountedTarget, Metrics
from akoshad.runtime.metrics_server import MetricsServer, parse_listen
from akoshad.targets import make_target
from akoshad.targets.base import ExclusiveCreate
from akoshad.targets.growing import GrowingTarget
from akoshad.targets.local import LocalTarget
from akoshad.targets.s3.target import S3Target

T0 = 1_700_000_000.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def status(**fields: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "state": "degraded",
        "version": "9.9",
        "system_id": "box-1",
        "uptime_seconds": 12.0,
        "pending": 3,
        "in_flight": 1,
        "paused": False,
        "oldest_pending_age_seconds": 42.5,
        "last_upload": {"upload_id": "u", "finished_at": T0, "files": 1, "bytes_sent": 10},
        "counters": {
            "files_uploaded": 7,
            "deduplicated": 2,
            "failures": 1,
            "retries": 4,
            "redactions": 5,
        },
        "targets": {
            "local": {"available": True, "last_error": None, "last_success_at": T0},
            "cloud": {
                "available": False,
                "last_error": "down",
                "last_success_at": None,
                "circuit": "open",
            },
            "http": {
                "available": True,
                "last_error": None,
                "last_success_at": None,
                "circuit": "half_open",
            },
        },
        "last_drill": None,
        "safety": {"safe": False, "since": T0, "reasons": ["degraded: cloud: down"], "notes": []},
    }
    st.update(fields)
    return st


def scrape(metrics: Metrics, st: dict[str, Any]) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(metrics.render(st).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_collector_reads_status() -> None:
    m = scrape(Metrics(), status())
    assert value(m, "akoshad_info", version="9.9", system_id="box-1") == 1
    assert value(m, "akoshad_pending_files") == 3
    assert value(m, "akoshad_in_flight_files") == 1
    assert value(m, "akoshad_oldest_pending_seconds") == 42.5
    assert value(m, "akoshad_degraded") == 1
    assert value(m, "akoshad_paused") == 0
    assert value(m, "akoshad_safe") == 0
    assert value(m, "akoshad_last_upload_timestamp_seconds") == T0
    assert value(m, "akoshad_target_up", target="local") == 1
    assert value(m, "akoshad_target_up", target="cloud") == 0
    assert value(m, "akoshad_breaker_state", target="cloud") == 2
    assert value(m, "akoshad_breaker_state", target="http") == 1
    assert value(m, "akoshad_breaker_state", target="local") is None  # no breaker there
    assert value(m, "akoshad_target_last_success_timestamp_seconds", target="local") == T0
    assert value(m, "akoshad_redactions_total") == 5
    assert value(m, "akoshad_files_uploaded_total") == 7
    assert value(m, "akoshad_retries_total") == 4


NAME = "akoshad_drill_interval_seconds"


def test_the_drill_interval_is_exported_for_the_alert_rules() -> None:
    """AkoshadNoGoodDrill waits two drill intervals (weekly drills are no alert at 48 h)."""
    assert value(scrape(Metrics(), status(drill_interval_hours=168)), NAME) == 604800
    assert value(scrape(Metrics(), status(drill_interval_hours=0)), NAME) == 0
    assert value(scrape(Metrics(), status()), NAME) is None  # a status without it


# the contract's metrics (CONTRACT.md "Metrics"): name (as the text format's ``# TYPE``
# line names it), type and labels; a dashboard's ``rate()`` needs the counters as counters
CONTRACT_METRICS = {
    "akoshad_pending_files": ("gauge", set()),
    "akoshad_uploads_total": ("counter", {"target", "outcome"}),
    "akoshad_bytes_sent_total": ("counter", {"target"}),
    "akoshad_last_upload_timestamp_seconds": ("gauge", set()),
    "akoshad_last_good_drill_timestamp_seconds": ("gauge", set()),
    "akoshad_target_up": ("gauge", {"target"}),
}


def test_the_contract_metrics_have_their_types_and_labels() -> None:
    metrics = Metrics()
    metrics.targets_known(["local"])
    metrics.pass_done(PassReport(target="local", upload_id="u1", bytes_sent=100), 0.5)
    good = {"at": T0, "ok": True, "upload_id": "u1", "problems": []}
    text = metrics.render(status(last_drill=good, last_good_drill_at=T0)).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    samples = {
        s.name: set(s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for name, (kind, labels) in CONTRACT_METRICS.items():
        assert types.get(name) == kind, (name, types.get(name))
        assert samples.get(name) == labels, (name, samples.get(name))


def test_collector_without_upload_or_queue() -> None:
    st = status(last_upload=None, oldest_pending_age_seconds=None, state="idle", pending=0)
    m = scrape(Metrics(), st)
    assert value(m, "akoshad_oldest_pending_seconds") == 0
    assert value(m, "akoshad_degraded") == 0
    assert not [k for k in m if k[0] == "akoshad_last_upload_timestamp_seconds"]


def test_good_drill_timestamp_only_after_a_good_drill_and_kept_after_a_bad_one() -> None:
    metrics = Metrics()
    m = scrape(metrics, status())
    assert not [k for k in m if "drill" in k[0]]
    bad = {"at": T0, "ok": False, "upload_id": "u", "problems": ["x"]}
    m = scrape(metrics, status(last_drill=bad))
    assert value(m, "akoshad_last_drill_ok") == 0
    assert not [k for k in m if k[0] == "akoshad_last_good_drill_timestamp_seconds"]
    m = scrape(metrics, status(last_drill={**bad, "ok": True, "at": T0 + 10, "problems": []}))
    assert value(m, "akoshad_last_good_drill_timestamp_seconds") == T0 + 10
    assert value(m, "akoshad_last_drill_ok") == 1
    # a failed drill since: the state still holds the good one (as a real status says)
    m = scrape(metrics, status(last_drill={**bad, "at": T0 + 20}, last_good_drill_at=T0 + 10))
    assert value(m, "akoshad_last_good_drill_timestamp_seconds") == T0 + 10
    assert value(m, "akoshad_last_drill_timestamp_seconds") == T0 + 20
    assert value(m, "akoshad_last_drill_ok") == 0


def test_good_drill_timestamp_from_the_state_after_a_restart() -> None:
    """A new daemon whose last drill failed still shows the last good one (kept in its
    state), and a later good drill moves it on."""
    metrics = Metrics()
    bad = {"at": T0 + 20, "ok": False, "upload_id": "u", "problems": ["x"]}
    m = scrape(metrics, status(last_drill=bad, last_good_drill_at=T0 + 10))
    assert value(m, "akoshad_last_good_drill_timestamp_seconds") == T0 + 10
    good = {**bad, "ok": True, "at": T0 + 30, "problems": []}
    m = scrape(metrics, status(last_drill=good, last_good_drill_at=T0 + 30))
    assert value(m, "akoshad_last_good_drill_timestamp_seconds") == T0 + 30


def test_good_drill_timestamp_is_the_newest_recorded_not_the_greatest() -> None:
    """A good drill dated by a clock that ran ahead (a day), then, the clock set right, a
    good drill recorded later with an earlier time: the gauge (and the 48 h alert on it)
    shows the one recorded last, as ``status`` does, not the greatest time ever seen."""
    metrics = Metrics()
    ahead = {"at": T0 + 86_400, "ok": True, "upload_id": "u", "problems": []}
    m = scrape(metrics, status(last_drill=ahead, last_good_drill_at=T0 + 86_400))
    assert value(m, "akoshad_last_good_drill_timestamp_seconds") == T0 + 86_400
    later = {**ahead, "at": T0 + 60}
    m = scrape(metrics, status(last_drill=later, last_good_drill_at=T0 + 60))
    assert value(m, "akoshad_last_good_drill_timestamp_seconds") == T0 + 60
    # a failed drill after it: the good one recorded last stays
    bad = {**later, "at": T0 + 120, "ok": False, "problems": ["x"]}
    m = scrape(metrics, status(last_drill=bad, last_good_drill_at=T0 + 60))
    assert value(m, "akoshad_last_good_drill_timestamp_seconds") == T0 + 60
    # the state forgot the target (moved): no good drill of the new place yet
    m = scrape(metrics, status(last_drill=None, last_good_drill_at=None))
    assert not [k for k in m if k[0] == "akoshad_last_good_drill_timestamp_seconds"]


def test_pass_done_counts_uploads_bytes_and_durations() -> None:
    metrics = Metrics()
    metrics.targets_known(["local", "cloud"])
    metrics.pass_done(PassReport(target="cloud", upload_id="u1", bytes_sent=100), 0.4)
    metrics.pass_done(PassReport(target="cloud", error="boom", bytes_sent=5), 2.0)
    metrics.pass_done(PassReport(target="wait", error="waiting", waiting=True), 0.01)
    metrics.pass_done(PassReport(target="local", memories={"delivered": 3}), 0.2)
    metrics.pass_done(PassReport(target="local", memory_error="Akosha: 503"), 0.2)
    metrics.pass_done(
        PassReport(target="local", memory_error="waiting for Akosha (circuit open)"), 0.2
    )
    m = scrape(metrics, status())
    assert value(m, "akoshad_uploads_total", target="cloud", outcome="ok") == 1
    assert value(m, "akoshad_uploads_total", target="cloud", outcome="failed") == 1
    assert value(m, "akoshad_uploads_total", target="local", outcome="ok") == 0
    assert value(m, "akoshad_uploads_total", target="http", outcome="ok") == 1
    assert value(m, "akoshad_uploads_total", target="http", outcome="failed") == 1
    assert value(m, "akoshad_bytes_sent_total", target="cloud") == 105
    assert value(m, "akoshad_bytes_sent_total", target="local") == 0
    assert value(m, "akoshad_pass_duration_seconds_count", target="cloud") == 2
    assert value(m, "akoshad_pass_duration_seconds_bucket", target="cloud", le="0.5") == 1
    assert value(m, "akoshad_pass_duration_seconds_count", target="wait") == 1
    assert metrics.last_pass_seconds == 0.2


def test_bytes_sent_to_akosha_count_for_the_http_target() -> None:
    """The request bodies posted to Akosha, by a delivery that failed too."""
    metrics = Metrics()
    metrics.targets_known(["local"])
    metrics.pass_done(PassReport(target="local", memories={"delivered": 3, "bytes_sent": 700}), 1)
    held = {"delivered": 1, "held": 2, "bytes_sent": 50}
    metrics.pass_done(PassReport(target="local", memories=held, memory_error="2 not stored"), 1)
    m = scrape(metrics, status())
    assert value(m, "akoshad_bytes_sent_total", target="http") == 750
    assert value(m, "akoshad_bytes_sent_total", target="local") == 0
    assert value(m, "akoshad_uploads_total", target="http", outcome="ok") == 1
    assert value(m, "akoshad_uploads_total", target="http", outcome="failed") == 1


def test_own_registry_not_the_global_one() -> None:
    from prometheus_client import REGISTRY

    a, b = Metrics(), Metrics()  # two in one process: no duplicate-name clash
    a.pass_done(PassReport(target="local", upload_id="u"), 1.0)
    assert value(scrape(b, status()), "akoshad_uploads_total", target="local", outcome="ok") is None
    assert (
        REGISTRY.get_sample_value("akoshad_uploads_total", {"target": "local", "outcome": "ok"})
        is None
    )


async def test_local_target_operations_are_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    target = metrics.counted(LocalTarget(tmp_path / "outbox"))
    assert isinstance(target, CountedTarget) and target.name == "local"
    await target.start()
    src = tmp_path / "f"
    src.write_bytes(b"x" * 1000)
    receipt = await target.put_file("systems/a/f", src, "gzip")
    assert await target.put_bytes("systems/a/m.json", b"{}", "application/json") == 2
    assert await target.head("systems/a/f") == receipt.stored_size
    assert [k async for k in target.list_keys("systems/")] == ["systems/a/f", "systems/a/m.json"]
    assert b"".join([c async for c in target.read("systems/a/m.json")]) == b"{}"
    await target.delete_keys(["systems/a/f"])
    assert await target.head("systems/a/f") is None
    # optional operations the local target has are counted too, and none it lacks appears
    assert isinstance(target, ExclusiveCreate) and not isinstance(target, GrowingTarget)
    assert await target.create_exclusive("systems/a/o.json", b"{}", "application/json") == (
        "created"
    )
    assert await target.read_range("systems/a/m.json", 1, 1) == b"}"
    await target.close()
    assert repr(target) == repr(target.inner)
    m = scrape(metrics, status())
    for method, n in {
        "start": 1,
        "put_file": 1,
        "put_bytes": 1,
        "head": 2,
        "list_keys": 1,
        "read": 1,
        "delete_keys": 1,
        "create_exclusive": 1,
        "read_range": 1,
    }.items():
        assert value(m, "akoshad_requests_total", target="local", method=method) == n, method


async def test_s3_requests_are_counted_by_operation_name() -> None:
    metrics = Metrics()
    port = _free_port()  # nothing listens: every request fails, but each one is counted
    s3 = S3Target(
        bucket="b", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
        access_key_id="k", secret_access_key="s", max_retries=1, retry_backoff=0.01, timeout=30,
        counter=metrics,
    )  # fmt: skip
    assert metrics.counted(s3) is s3  # it counts itself, by operation
    try:
        with pytest.raises(TransientError):
            await s3.start()
        with pytest.raises(TransientError):
            await s3.head("systems/x")
    finally:
        await s3.close()
    m = scrape(metrics, status())
    assert value(m, "akoshad_requests_total", target="cloud", method="ListObjectsV2") == 2
    assert value(m, "akoshad_requests_total", target="cloud", method="HeadObject") == 2


async def test_make_target_gives_the_counter_to_the_s3_target(tmp_path: Path) -> None:
    metrics = Metrics()
    settings = load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "state_dir": str(tmp_path / "state"),
            "cloud_sync": {"cloud_bucket": "b", "cloud_endpoint": "http://127.0.0.1:9"},
        },
    )
    s3 = make_target("cloud", settings, metrics)
    assert isinstance(s3, S3Target) and s3.counter is metrics
    assert metrics.counted(s3) is s3  # counted by operation name, not wrapped
    local = make_target("local", settings, metrics)
    assert isinstance(metrics.counted(local), CountedTarget)


async def test_an_s3_target_built_without_a_counter_is_counted_from_outside() -> None:
    metrics = Metrics()
    s3 = S3Target(
        bucket="b", endpoint=f"http://127.0.0.1:{_free_port()}", region="us-east-1",
        access_key_id="k", secret_access_key="s", max_retries=1, retry_backoff=0.01, timeout=30,
    )  # fmt: skip
    counted = metrics.counted(s3)
    assert isinstance(counted, CountedTarget) and counted.inner is s3
    try:
        with pytest.raises(TransientError):
            await counted.head("systems/x")
    finally:
        await counted.close()
    m = scrape(metrics, status())
    assert value(m, "akoshad_requests_total", target="cloud", method="head") == 1
    assert value(m, "akoshad_requests_total", target="cloud", method="HeadObject") is None


async def test_akosha_requests_are_counted_by_json_rpc_method() -> None:
    metrics = Metrics()
    client = AkoshaClient(f"http://127.0.0.1:{_free_port()}/mcp", timeout=5, counter=metrics)
    with pytest.raises(TransientError):
        await client.initialize()
    await client.close()
    assert (
        value(
            scrape(metrics, status()), "akoshad_requests_total", target="http", method="initialize"
        )
        == 1
    )


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9") == ("::1", 9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_server_serves_refuses_and_stops() -> None:
    metrics = Metrics()
    answers: list[dict[str, Any] | Exception] = [
        status(),
        RuntimeError("state database is not open"),
    ]

    async def source() -> dict[str, Any]:
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    port = _free_port()
    server = MetricsServer(metrics, source, f"127.0.0.1:{port}")
    await server.start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        other = MetricsServer(metrics, source, f"127.0.0.1:{port}")
        with pytest.raises(OSError):
            await other.start()  # the address is taken: a clear OSError, nothing left open
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=")
                assert "akoshad_pending_files 3.0" in await resp.text()
            async with http.get(url) as resp:
                assert resp.status == 503
                assert (
                    await resp.text()
                ) == "akoshad status unavailable: state database is not open\n"
            async with http.get(f"http://127.0.0.1:{port}/other") as resp:
                assert resp.status == 404
    finally:
        await server.close()
        await server.close()  # idempotent
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_an_address_taken_at_start_is_reported_and_bound_once_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port another process still holds at start (a previous daemon letting go): the
    problem is reported (status shows it), the daemon binds again every RETRY_SECONDS, and
    once the port is free it serves and the problem is cleared."""
    from akoshad.runtime import metrics_server

    monkeypatch.setattr(metrics_server, "RETRY_SECONDS", 0.05)

    async def source() -> dict[str, Any]:
        return status()

    reports: list[str | None] = []
    port = _free_port()
    listen = f"127.0.0.1:{port}"
    server = MetricsServer(Metrics(), source, listen)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    stop = asyncio.Event()
    try:
        assert await metrics_server.serve_metrics(server, listen, reports.append) is False
        (problem,) = reports
        assert problem is not None and f"metrics_listen {listen} cannot be served" in problem
        retry = asyncio.create_task(
            metrics_server.keep_trying(server, listen, reports.append, stop)
        )
        await asyncio.sleep(0.3)
        assert not retry.done() and None not in reports  # still taken: still reported
        squatter.close()
        await asyncio.wait_for(retry, 10)
        assert reports[-1] is None
        async with aiohttp.ClientSession() as http, http.get(f"http://{listen}/metrics") as resp:
            assert resp.status == 200
    finally:
        squatter.close()
        await server.close()


async def test_the_metrics_retry_ends_with_the_daemon() -> None:
    from akoshad.runtime import metrics_server

    async def source() -> dict[str, Any]:
        return status()

    server = MetricsServer(Metrics(), source, "127.0.0.1:1")
    stop = asyncio.Event()
    retry = asyncio.create_task(metrics_server.keep_trying(server, "127.0.0.1:1", print, stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(retry, 5)
    await server.close()


def test_a_failed_prune_shows_beside_its_time() -> None:
    """A prune that fails every 10 minutes moved ``akoshad_last_prune_timestamp_seconds``
    on each time, so an alert on an old prune never fired and nothing else but
    ``akoshad_healthy`` told: ``akoshad_last_prune_ok`` says how the last one went."""
    metrics = Metrics()
    assert not [k for k in scrape(metrics, status()) if "prune" in k[0]]
    bad = {"at": T0, "ok": False, "uploads_kept": None, "problems": ["bucket gone"]}
    m = scrape(metrics, status(last_prune=bad))
    assert value(m, "akoshad_last_prune_timestamp_seconds") == T0
    assert value(m, "akoshad_last_prune_ok") == 0
    m = scrape(metrics, status(last_prune={**bad, "ok": True, "at": T0 + 5, "problems": []}))
    assert value(m, "akoshad_last_prune_ok") == 1
