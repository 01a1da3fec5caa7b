#!/usr/bin/env python3
"""memories.json of a store, built as the DuckDB worker builds it: CPU seconds and wall time.

Runs :func:`akoshad.duckdb_commands.write_memories_json` in this process (what the worker
child runs, with its settings: one thread, DuckDB's buffers capped) on a copy of the store's
``reflection.duckdb``, with secret redaction on and off, and prints for each the CPU seconds
(robust to the load of a shared machine), the wall time, the load average, the MB of JSON
and its SHA-256 (to compare two implementations: the bytes must not change); then the peak
RSS of this process::

    python /work/shared/tools/make_store.py --root /tmp/s --conversations 6000 --no-aux
    python bench/memories_json_bench.py /tmp/s
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from akoshad.akosha.duckdb_copy import opened
from akoshad.akosha.rows import iter_refs
from akoshad.duckdb_commands import bounded_settings, write_memories_json
from akoshad.duckdb_worker import MEMORY_LIMIT
from akoshad.pipeline.cloud_memories import LOAD_CHUNK


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("store", type=Path, help="a data_dir holding reflection.duckdb")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="akoshad-mj-bench-", dir=args.store.parent) as tmp:
        db = Path(tmp) / "reflection.duckdb"
        shutil.copyfile(args.store / "reflection.duckdb", db)
        settings = bounded_settings(
            {"duckdb": {"memory_limit": MEMORY_LIMIT, "temp_directory": tmp}}
        )
        with opened(db, settings) as con:
            refs = [r for r in iter_refs(con, "bench") if r.problem is None]
        out = Path(tmp) / "memories.json"
        for redact in (True, False):
            cpu, wall = [], []
            for _ in range(args.rounds):
                c0, t0 = time.process_time(), time.perf_counter()
                write_memories_json(db, "bench", refs, LOAD_CHUNK, redact, out, settings)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
            size = out.stat().st_size / 1e6
            print(
                f"redaction {'on ' if redact else 'off'}: {len(refs)} memories, {size:.1f} MB "
                f"of JSON: {statistics.median(cpu):.2f} CPU s ({size / statistics.median(cpu):.0f}"
                f" MB/CPU s), {statistics.median(wall):.2f} s wall, load {os.getloadavg()[0]:.1f}; "
                f"sha256 {sha256(out)[:16]}"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
