#!/usr/bin/env python3
"""memories.json of a store: how fast it is encoded, and the peak RSS of building it.

Loads the memories of ``reflection.duckdb`` in chunks (as the cloud upload does), encodes
them with :func:`akoshad.akosha.encoding.memories_json`, and prints the encoding rate (MB of JSON
per second of encoding, loading excluded), the whole build's time, the peak RSS of this
process, and the SHA-256 of the bytes (to compare two implementations)::

    python /work/shared/tools/make_store.py --root /tmp/s --conversations 6000 --no-aux
    python bench/memories_json_bench.py /tmp/s
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from akoshad.akosha.encoding import memories_json
from akoshad.akosha.rows import chunks, list_rows, load_memories

CHUNK = 1000  # akoshad.pipeline.cloud_memories.LOAD_CHUNK


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path, help="a data_dir holding reflection.duckdb")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    db = args.store / "reflection.duckdb"
    refs = [r for r in list_rows(db, "bench") if r.problem is None]
    best_encode = best_total = float("inf")
    digest, size, count = "", 0, 0
    for _ in range(args.rounds):
        encode = 0.0
        started = time.perf_counter()
        out = hashlib.sha256()
        size = count = 0
        for part in chunks(refs, CHUNK):
            memories = load_memories(db, "bench", part).memories
            t0 = time.perf_counter()
            body = memories_json(memories)
            encode += time.perf_counter() - t0
            out.update(body)
            size += len(body)
            count += len(memories)
            del memories, body
        best_total = min(best_total, time.perf_counter() - started)
        best_encode = min(best_encode, encode)
        digest = out.hexdigest()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memories: {count}; JSON: {size / 1e6:.1f} MB")
    print(f"encoding: {best_encode:.3f} s = {size / 1e6 / best_encode:.0f} MB/s")
    print(f"load + encode: {best_total:.2f} s; peak RSS: {peak:.0f} MiB")
    print(f"sha256 of the chunks' bytes: {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
