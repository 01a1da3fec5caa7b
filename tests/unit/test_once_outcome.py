"""What tells a user nothing is backed up: ``run --once``'s last lines say why it exits 1
(memories Akosha did not get, files skipped...), and the daemon's status finds a store that
selects no file and was never uploaded (``StatusView.nothing_to_back_up``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from loguru import logger

from akoshad.config import load_settings
from akoshad.pipeline.report import PassReport
from akoshad.runtime.once import once_outcome
from akoshad.runtime.status import StatusView
from akoshad.runtime.wiring import Parts
from akoshad.store.db import StateDB


class FakeState:
    """The state ``once_outcome`` and ``nothing_to_back_up`` read."""

    def __init__(
        self,
        depth: int = 0,
        uploaded: bool = False,
        skipped: dict[str, str] | None = None,
        queued: dict[str, str | None] | None = None,
        unreadable: str | None = None,
    ) -> None:
        self.unreadable = unreadable
        self.depth = depth
        self.uploaded = uploaded
        self.skips = skipped or {}
        self.queued = queued or {}

    async def queue_depth(self) -> int:
        return self.depth

    async def queue_items(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(path=p, last_error=e) for p, e in self.queued.items()]

    async def last_upload(self) -> object | None:
        return object() if self.uploaded else None

    async def skipped(self) -> dict[str, str]:
        return dict(self.skips)

    async def get_kv(self, key: str) -> str | None:
        # the record of memories that could not be read, if any
        return self.unreadable if key == "memories_unreadable" else None


@pytest.fixture
def lines() -> Iterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(f"{m.record['level'].name} {m.record['message']}"))
    yield seen
    logger.remove(sink)


async def _outcome(state: FakeState, ok: bool, reports: list[PassReport]) -> int:
    return await once_outcome(cast(StateDB, state), ok, reports, [])


async def test_undelivered_memories_are_the_last_line(lines: list[str]) -> None:
    report = PassReport("local", upload_id="u1", memory_error="Akosha is down: connection refused")
    assert await _outcome(FakeState(uploaded=True), False, [report]) == 1
    assert lines[-2] == "INFO run --once: uploaded u1"
    assert lines[-1] == (
        "ERROR run --once: memories were not delivered to Akosha: "
        "Akosha is down: connection refused"
    )


async def test_every_exit_1_says_why(lines: list[str]) -> None:
    skipped = FakeState(uploaded=True, skipped={"b.json": "unreadable", "a.json": "vanished"})
    assert await _outcome(skipped, True, [PassReport("local", upload_id="u1")]) == 1
    assert lines[-1] == "ERROR run --once: 2 file(s) skipped (a.json: vanished; and 1 more)"
    retrying = PassReport("local", upload_id="u2", retrying={"x.db": "changed while read"})
    assert await _outcome(FakeState(depth=1), False, [retrying]) == 1
    assert lines[-1] == "ERROR run --once: 1 file(s) to be sent again (x.db: changed while read)"
    assert await _outcome(FakeState(depth=3), False, []) == 1  # a drain cut short
    assert lines[-1] == "ERROR run --once: not every change landed: 3 change(s) stay queued"
    # a change that stays queued with no upload and no failure (a database that kept
    # changing while copied) is named with its reason, never "nothing changed"
    busy = FakeState(depth=1, queued={"reflection.duckdb": "DuckDB pair kept changing"})
    assert await _outcome(busy, False, []) == 1
    assert lines[-1] == (
        "ERROR run --once: not every change landed: 1 change(s) stay queued "
        "(reflection.duckdb: DuckDB pair kept changing)"
    )
    assert not any("nothing changed" in line for line in lines)
    failed = PassReport("local", error="disk full")
    assert await _outcome(FakeState(depth=2), False, [failed]) == 1
    assert lines[-1] == "ERROR run --once: 2 change(s) stay queued (disk full)"


async def test_memories_not_read_fail_the_run_only_where_memories_are_read(
    lines: list[str],
) -> None:
    """A record that the last copy's memories could not be read fails the run while the
    configuration reads memories (akosha_url or a bucket); once it reads none (both
    removed), a record left from then no longer fails every run."""
    state = FakeState(uploaded=True, unreadable="cannot read memories from reflection.duckdb")
    clean = [PassReport("local", upload_id="u1")]
    assert await once_outcome(cast(StateDB, state), True, clean, []) == 1
    assert lines[-1].startswith(
        "ERROR run --once: memories not read from reflection.duckdb: cannot read memories"
    )
    assert await once_outcome(cast(StateDB, state), True, clean, [], reads_memories=False) == 0


async def test_a_clean_run_has_no_error(lines: list[str]) -> None:
    clean = [PassReport("local", upload_id="u1")]
    assert await _outcome(FakeState(uploaded=True), True, clean) == 0
    assert await _outcome(FakeState(uploaded=True), True, []) == 0
    assert not [line for line in lines if line.startswith("ERROR")]
    assert lines[-1] == "INFO run --once: nothing changed, no upload"


def _view(
    tmp_path: Path, state: FakeState, files_on_disk: int | None, excluded: int = 0, **parts: Any
) -> StatusView:
    settings = load_settings(
        environ={"HOME": str(tmp_path / "home")},
        overrides={"data_dir": str(tmp_path / "store"), "include": ["*.duckb"]},
    )
    fake = SimpleNamespace(
        state=state,
        feed=SimpleNamespace(
            files_on_disk=files_on_disk,
            files_excluded=excluded,
            debouncer=parts.get("debouncer", []),
        ),
        stats=SimpleNamespace(in_flight=parts.get("in_flight", 0)),
    )
    return StatusView(settings, cast(Parts, fake), started=0.0)


async def test_status_says_nothing_to_back_up_until_a_file_is_selected(tmp_path: Path) -> None:
    line = await _view(tmp_path, FakeState(), 0).nothing_to_back_up()
    assert line is not None
    assert line.startswith("nothing to back up in data_dir (check include/exclude): ")
    assert f"no file in {tmp_path / 'store'} is selected (include: *.duckb;" in line
    # a file selected, or on its way: not "nothing to back up"
    assert await _view(tmp_path, FakeState(), 3).nothing_to_back_up() is None
    assert await _view(tmp_path, FakeState(), None).nothing_to_back_up() is None  # no walk
    assert await _view(tmp_path, FakeState(depth=1), 0).nothing_to_back_up() is None
    assert await _view(tmp_path, FakeState(), 0, debouncer=["a"]).nothing_to_back_up() is None
    assert await _view(tmp_path, FakeState(), 0, in_flight=1).nothing_to_back_up() is None
    # an upload made before, and a store that selects nothing now (emptied, unmounted):
    # said, the upload kept
    line = await _view(tmp_path, FakeState(uploaded=True), 0).nothing_to_back_up()
    assert line is not None and line.endswith("; the last upload is kept as it is")


async def test_status_says_nothing_to_back_up_when_the_filter_leaves_every_file_out(
    tmp_path: Path,
) -> None:
    """include/exclude that leave out every file of a store backed up before: said, with
    the last upload kept, whatever the queue holds; not once a selected file is seen."""
    for state in (FakeState(uploaded=True), FakeState(uploaded=True, depth=2)):
        line = await _view(tmp_path, state, 0, excluded=2).nothing_to_back_up()
        assert line is not None and line.startswith("nothing to back up in data_dir")
        assert "(include: *.duckb; exclude: []; 2 file(s) left out)" in line
        assert line.endswith("; the last upload is kept as it is")
    line = await _view(tmp_path, FakeState(), 0, excluded=2).nothing_to_back_up()
    assert line is not None and line.endswith("; nothing was ever uploaded")
    selected = _view(tmp_path, FakeState(uploaded=True), 1, excluded=2)
    assert await selected.nothing_to_back_up() is None
    assert await _view(tmp_path, FakeState(uploaded=True), None).nothing_to_back_up() is None
