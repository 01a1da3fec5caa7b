"""Builds tests/data/format1: two format-1 uploads made by akoshad itself (``run --once``
to the local target), the test data that later manifest formats must keep reading.

    python tests/data/format1/make_fixture.py   (from the repository root)

1. A small store (``tests.storegen.make_store`` with 5 conversations: two DuckDB files,
   two SQLite files, four JSON files) is uploaded by ``akoshad run --once``.
2. Five rows are added to ``reflection.duckdb`` (the connection is closed again) and a
   second ``run --once`` uploads that one file; its manifest points at the first upload's
   objects for the seven unchanged files.

The outbox is copied to ``outbox/``; ``expected.json`` holds, per upload, the SHA-256 of
every store file as it was when that upload was made (each is also checked against the
manifest here). Regenerating it replaces the committed data: only do so on format-1 code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from tests.storegen import make_store  # noqa: E402

SYSTEM_ID = "format1fixture"


def _hashes(store: Path) -> dict[str, str]:
    return {
        p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def _once(config: Path, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "XDG_"))}
    env["HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise SystemExit(f"run --once failed ({proc.returncode}): {proc.stderr}")


def _check(upload_id: str, recorded: dict[str, str], store: dict[str, str]) -> None:
    """The manifest lists the store's files, with the store's bytes except for SQLite
    files (captured through the backup API: same rows, other header bytes)."""
    if set(recorded) != set(store):
        raise SystemExit(f"{upload_id}: manifest paths {sorted(recorded)} != {sorted(store)}")
    for path, sha in recorded.items():
        if not path.endswith(".db") and sha != store[path]:
            raise SystemExit(f"{upload_id}: {path} differs from the store")


def _manifests(outbox: Path) -> list[dict[str, Any]]:
    base = outbox / "systems" / SYSTEM_ID / "uploads"
    return [json.loads((d / "manifest.json").read_text()) for d in sorted(base.iterdir())]


def _add_rows(db: Path) -> None:
    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO conversations_v2 (id, content, category, project) "
        "SELECT 'conv-added-' || i, 'added after the first upload ' || i, 'context', 'demo' "
        "FROM range(5) r(i)"
    )
    con.close()


def main() -> None:
    uploads: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = make_store(work / "store", conversations=5)
        outbox = work / "outbox"
        config = work / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(store),
                    "state_dir": str(work / "state"),
                    "local_target_dir": str(outbox),
                    "socket_path": str(work / "akoshad.sock"),
                    "cloud_sync": {"system_id": SYSTEM_ID},
                }
            )
        )
        expected: list[dict[str, str]] = []
        _once(config, work / "home")
        expected.append(_hashes(store))
        _add_rows(store / "reflection.duckdb")
        _once(config, work / "home")
        expected.append(_hashes(store))
        found = _manifests(outbox)
        if len(found) != 2:
            raise SystemExit(f"expected 2 uploads, found {len(found)}")
        for manifest, hashes in zip(found, expected, strict=True):
            meta = manifest["metadata"]
            recorded = {f["path"]: f["sha256"] for f in meta["files"]}
            _check(meta["upload_id"], recorded, hashes)
            uploads[meta["upload_id"]] = recorded
        if found[1]["files"] != ["reflection.duckdb.gz"]:
            raise SystemExit(f"the second upload sent {found[1]['files']}")
        shutil.rmtree(HERE / "outbox", ignore_errors=True)
        shutil.copytree(outbox, HERE / "outbox")
    out = {
        "system_id": SYSTEM_ID,
        "format": 1,
        "akoshad_version": found[0]["metadata"]["akoshad_version"],
        "uploads": uploads,
        "latest": list(uploads)[-1],
    }
    (HERE / "expected.json").write_text(json.dumps(out, indent=2, sort_keys=False) + "\n")
    size = sum(p.stat().st_size for p in (HERE / "outbox").rglob("*") if p.is_file())
    print(json.dumps({"uploads": list(uploads), "outbox_bytes": size}))


if __name__ == "__main__":
    main()
