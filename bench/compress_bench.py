#!/usr/bin/env python3
"""Throughput and ratio of gzip implementations and levels on text, DuckDB and random data.

python bench/compress_bench.py [--duckdb path/to/reflection.duckdb]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

from isal import isal_zlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sample_duckdb() -> bytes:
    from tests.storegen import make_reflection

    path = Path(tempfile.mkdtemp()) / "r.duckdb"
    make_reflection(path, conversations=3000, reflections=300)
    return path.read_bytes()


def measure(name: str, compressobj, data: bytes) -> tuple[str, float, float]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    c = compressobj()
    out = 0
    view = memoryview(data)
    for i in range(0, len(data), 1 << 20):
        out += len(c.compress(view[i : i + (1 << 20)]))
    out += len(c.flush())
    secs = time.perf_counter() - t0
    return name, len(data) / secs / 1e6, out / len(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duckdb", type=Path)
    args = ap.parse_args()
    text = b"".join(
        f"{i} the quick brown fox jumps over the lazy dog\n".encode() for i in range(1_500_000)
    )[: 64 << 20]
    duck = args.duckdb.read_bytes() if args.duckdb else sample_duckdb()
    data = {"text": text, "duckdb": duck, "random": os.urandom(32 << 20)}
    impls = [
        (f"zlib {lvl}", lambda lvl=lvl: zlib.compressobj(lvl, zlib.DEFLATED, 31)) for lvl in (1, 6)
    ]
    impls += [
        (f"isal {lvl}", lambda lvl=lvl: isal_zlib.compressobj(lvl, isal_zlib.DEFLATED, 31))
        for lvl in (0, 1, 2, 3)
    ]
    print("| data | implementation | MB/s | output/input |")
    print("|---|---|---:|---:|")
    for dname, payload in data.items():
        for iname, factory in impls:
            _, rate, ratio = measure(iname, factory, payload)
            print(f"| {dname} ({len(payload) >> 20} MiB) | {iname} | {rate:.0f} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
