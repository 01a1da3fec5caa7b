"""status (and /metrics) list the targets in use: with a bucket the local outbox receives
nothing, and a `local ok` beside a bucket that is down read as a backup there."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from akoshad.config import load_settings
from akoshad.runtime.status import StatusView
from akoshad.runtime.wiring import wire


def settings_for(tmp_path: Path, **extra: Any) -> Any:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    overrides = {
        "data_dir": str(tmp_path / "data"),
        "state_dir": str(tmp_path / "state"),
        "local_target_dir": str(tmp_path / "outbox"),
        **extra,
    }
    return load_settings(environ={"HOME": str(tmp_path)}, overrides=overrides)


BUCKET = {
    "cloud_bucket": "bucket",
    "cloud_endpoint": "http://127.0.0.1:9",
    "cloud_region": "us-east-1",
    "access_key_id": "AKIDEXAMPLE",
    "secret_access_key": "not-a-secret-0123456789",
}


async def targets_and_series(settings: Any, down: str | None = None) -> tuple[set[str], str]:
    async with AsyncExitStack() as stack:
        parts = await wire(settings, stack, stop_event=asyncio.Event(), wake=asyncio.Event())
        if down is not None:
            parts.stats.target(down).failed(f"{down} broke")
        view = StatusView(settings, parts, time.time())
        targets = view.targets()
        render = getattr(parts.metrics, "render", None)  # with metrics_listen only
        scrape = "" if render is None else render({"targets": targets}).decode()
        return set(targets), scrape


async def test_with_a_bucket_the_unused_outbox_is_not_listed(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        cloud_sync=BUCKET,
        akosha_url="http://127.0.0.1:9/mcp",
        metrics_listen="127.0.0.1:9464",
    )
    names, scrape = await targets_and_series(settings)
    assert names == {"cloud", "http"}
    assert 'target="local"' not in scrape, scrape
    assert 'akoshad_uploads_total{outcome="ok",target="cloud"} 0.0' in scrape


async def test_the_outbox_is_listed_when_it_is_the_primary_or_down(tmp_path: Path) -> None:
    plain = settings_for(tmp_path / "a", metrics_listen="127.0.0.1:9464")
    names, scrape = await targets_and_series(plain)
    assert names == {"local"} and 'akoshad_target_up{target="local"} 1.0' in scrape
    # whatever marked it down is shown, never hidden
    names, _ = await targets_and_series(settings_for(tmp_path / "b", cloud_sync=BUCKET), "local")
    assert names == {"cloud", "local"}
