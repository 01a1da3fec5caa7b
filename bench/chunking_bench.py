#!/usr/bin/env python3
"""Figures behind format 2's chunking choices: FastCDC library, chunk size, chunk codec.

python bench/chunking_bench.py [--conversations N] [--make-store PATH] [--store DIR]
                               [--cdc-mib 200]

1. FastCDC libraries (pyfastcdc, fastcdc) on a --cdc-mib file of random bytes: MB/s, peak
   RSS above the baseline (each run in a fresh process), chunk size distribution.
2. Average chunk size 256 KiB vs 1 MiB on a real DuckDB checkpoint: a store from
   make_store.py, reflection.duckdb copied, 80 rows inserted through a long-lived
   connection, CHECKPOINT; bytes of new chunks (sha256 not among the old file's chunks)
   beside the changed-256-KiB-block floor.
3. Per-chunk compression of the DuckDB file's chunks: zstd (backports.zstd, zstandard)
   vs ISA-L gzip: ratio, compress and decompress MB/s (of plaintext).
The machine is shared: speeds are indicative, ratios and byte counts are exact.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KiB, MiB = 1024, 1024 * 1024
BLOCK = 256 * KiB
SIZES = {
    "128 KiB": (128 * KiB, 64 * KiB, 1 * MiB),
    "256 KiB": (256 * KiB, 64 * KiB, 1 * MiB),
    "1 MiB": (1 * MiB, 256 * KiB, 4 * MiB),
}


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def lib_chunks(variant: str, path: Path, avg: int, lo: int, hi: int) -> Iterator[int]:
    """Chunk lengths of ``path`` by one library/API."""
    if variant.startswith("pyfastcdc"):
        from pyfastcdc import FastCDC

        cdc = FastCDC(avg, min_size=lo, max_size=hi)
        if variant == "pyfastcdc.cut_file":
            yield from (c.length for c in cdc.cut_file(path))
        else:
            with path.open("rb", buffering=0) as fh:
                yield from (c.length for c in cdc.cut_stream(fh))
    elif variant == "fastcdc":
        from fastcdc import fastcdc

        yield from (c.length for c in fastcdc(str(path), lo, avg, hi))
    elif variant == "akoshad chunker":
        from akoshad.storage.chunker import ChunkParams, iter_file_chunks

        params = ChunkParams(avg, lo, hi)
        yield from (c.length for c in iter_file_chunks(path, params))
    else:
        raise SystemExit(f"unknown variant {variant}")


def cdc_child(variant: str, path: Path) -> None:
    """Run in a fresh process: time one library and print JSON."""
    import pyfastcdc  # noqa: F401  (imports before the baseline)

    import akoshad.storage.chunker  # noqa: F401

    if variant == "fastcdc":
        import fastcdc  # noqa: F401

    avg, lo, hi = SIZES["256 KiB"]
    base = rss_kib("VmRSS")
    t0 = time.perf_counter()
    lengths = list(lib_chunks(variant, path, avg, lo, hi))
    secs = time.perf_counter() - t0
    print(json.dumps({"secs": secs, "lengths": lengths, "base": base, "peak": rss_kib("VmHWM")}))


def dist(lengths: list[int]) -> str:
    q = statistics.quantiles(lengths, n=10)
    return (
        f"{len(lengths)} | {statistics.mean(lengths) / KiB:.0f} | {min(lengths) / KiB:.0f} / "
        f"{q[0] / KiB:.0f} / {statistics.median(lengths) / KiB:.0f} / {q[-1] / KiB:.0f} / "
        f"{max(lengths) / KiB:.0f}"
    )


def bench_libraries(tmp: Path, mib: int) -> None:
    path = tmp / "random.bin"
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MiB))
    sha_t0 = time.perf_counter()
    with path.open("rb") as fh:
        h = hashlib.sha256()
        while block := fh.read(MiB):
            h.update(block)
    sha_rate = mib * MiB / (time.perf_counter() - sha_t0) / 1e6
    print(f"\n## 1. FastCDC libraries: {mib} MiB random file, avg 256 KiB (min 64 KiB, max 1 MiB)")
    print(f"(sha256 alone: {sha_rate:.0f} MB/s; peak RSS = VmHWM above the baseline)\n")
    print("| library / API | MB/s | peak RSS MiB | chunks | mean KiB | min/p10/p50/p90/max KiB |")
    print("|---|---:|---:|---:|---:|---|")
    variants = ["pyfastcdc.cut_stream", "pyfastcdc.cut_file", "fastcdc", "akoshad chunker"]
    for variant in variants:
        module = variant.split(".")[0] if "akoshad" not in variant else "pyfastcdc"
        if importlib.util.find_spec(module) is None:
            print(f"| {variant} | not installed (pip install {module}) | | | | |")
            continue
        out = subprocess.run(
            [sys.executable, __file__, "--cdc-child", variant, str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out)
        rate = mib * MiB / r["secs"] / 1e6
        peak = (r["peak"] - r["base"]) / 1024
        print(f"| {variant} | {rate:.0f} | {peak:.1f} | {dist(r['lengths'])} |")
    print("\n(akoshad chunker = pyfastcdc.cut_stream + a copy and sha256 of every chunk)")
    path.unlink()
    small_files(tmp)


def small_files(tmp: Path, count: int = 2000) -> None:
    """Cost of a small file (one chunk): what a 10,000-file store pays per file."""
    from akoshad.storage.chunker import iter_file_chunks
    from akoshad.storage.codec import compress

    folder = tmp / "small"
    folder.mkdir()
    paths = []
    for i in range(count):
        paths.append(folder / f"f{i}.json")
        paths[-1].write_bytes(json.dumps({"i": i, "pad": "x" * (i % 4000)}).encode())
    t0 = time.perf_counter()
    for p in paths:
        for c in iter_file_chunks(p):
            compress(c.data)
    per = (time.perf_counter() - t0) / count * 1e6
    print(f"small files: {per:.0f} us per file (open, read, sha256, zstd-3), {count} files")
    shutil.rmtree(folder)


def changed_blocks(old: Path, new: Path) -> Iterator[bytes]:
    """The 256 KiB aligned blocks of ``new`` that differ from ``old``."""
    with old.open("rb") as a, new.open("rb") as b:
        while y := b.read(BLOCK):
            if a.read(BLOCK) != y:
                yield y


def checkpoints(store: Path, tmp: Path, rows: int, rounds: int) -> list[Path]:
    """Copies of reflection.duckdb: as built, then after each round of ``rows`` inserts +
    CHECKPOINT through one long-lived connection (as session-buddy's)."""
    import duckdb

    work = tmp / "live.duckdb"
    shutil.copyfile(store / "reflection.duckdb", work)
    snaps = [tmp / "snap0.duckdb"]
    shutil.copyfile(work, snaps[0])
    con = duckdb.connect(str(work))
    for r in range(1, rounds + 1):
        con.execute(
            f"INSERT INTO conversations_v2 SELECT * REPLACE (id || 'x{r}' AS id) "
            f"FROM conversations_v2 LIMIT {rows}"
        )
        con.execute("CHECKPOINT")
        snaps.append(tmp / f"snap{r}.duckdb")
        shutil.copyfile(work, snaps[-1])  # captured while the connection stays open
    con.close()
    return snaps


def new_chunk_bytes(old: Path, new: Path, params: Any) -> tuple[int, int, list[int]]:
    """(plain, zstd-3) bytes of ``new``'s chunks absent from ``old``, and all chunk lengths."""
    from akoshad.storage.chunker import iter_file_chunks
    from akoshad.storage.codec import compress

    before = {c.sha256 for c in iter_file_chunks(old, params)}
    plain = packed = 0
    lengths: list[int] = []
    for c in iter_file_chunks(new, params):
        lengths.append(c.length)
        if c.sha256 not in before:
            before.add(c.sha256)
            plain += c.length
            packed += len(compress(c.data, "zstd")[1])
    return plain, packed, lengths


def bench_sizes(snaps: list[Path], rows: int) -> None:
    from akoshad.storage.chunker import ChunkParams
    from akoshad.storage.codec import compress

    pairs = list(itertools.pairwise(snaps))
    size = snaps[-1].stat().st_size / MiB
    print(
        f"\n## 2. Bytes of new chunks after a checkpoint of {rows} rows, {len(pairs)} rounds "
        f"(reflection.duckdb {size:.1f} MiB)\n"
    )
    print(
        "| pyfastcdc avg (min, max) | mean KiB | new MiB per round | sum MiB | zstd-3 | x floor |"
    )
    print("|---|---:|---|---:|---:|---:|")
    floors = [list(changed_blocks(a, b)) for a, b in pairs]
    floor = sum(len(b) for f in floors for b in f)
    floor_z = sum(len(compress(b, "zstd")[1]) for f in floors for b in f)
    for label, (avg, lo, hi) in SIZES.items():
        params = ChunkParams(avg, lo, hi)
        res = [new_chunk_bytes(a, b, params) for a, b in pairs]
        per = " / ".join(f"{p / MiB:.2f}" for p, _, _ in res)
        plain, packed = sum(r[0] for r in res), sum(r[1] for r in res)
        mean = statistics.mean(res[-1][2]) / KiB
        print(
            f"| {label} ({lo // KiB} KiB, {hi // KiB} KiB) | {mean:.0f} | {per} "
            f"| {plain / MiB:.2f} | {packed / MiB:.2f} | {plain / max(floor, 1):.2f} |"
        )
    per = " / ".join(f"{sum(map(len, f)) / MiB:.2f}" for f in floors)
    print(
        f"| changed 256 KiB blocks (floor) | 256 | {per} | {floor / MiB:.2f} "
        f"| {floor_z / MiB:.2f} | 1.00 |"
    )


def codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    import zlib

    from backports import zstd

    zstandard: Any
    try:
        import zstandard
    except ImportError:  # only measured when installed (pip install zstandard)
        zstandard = None
    from isal import isal_zlib

    def gz(level: int) -> Callable[[bytes], bytes]:
        def enc(data: bytes) -> bytes:
            c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
            return bytes(c.compress(data) + c.flush())

        return enc

    def gunzip(data: bytes) -> bytes:
        return bytes(isal_zlib.decompress(data, 31))

    out: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {}

    def zst(level: int) -> Callable[[bytes], bytes]:
        return lambda data: zstd.compress(data, level=level)

    for level in (1, 3):
        out[f"zstd {level} (backports.zstd)"] = (zst(level), zstd.decompress)
    if zstandard is not None:
        zc, zd = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
        out["zstd 3 (zstandard)"] = (zc.compress, zd.decompress)
    for level in (0, 1, 2, 3):
        out[f"gzip isal {level}"] = (gz(level), gunzip)

    def zlib6(data: bytes) -> bytes:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()

    out["gzip zlib 6 (reference)"] = (zlib6, lambda d: zlib.decompress(d, 31))
    return out


def codec_table(title: str, chunks: list[bytes]) -> None:
    from akoshad.storage.codec import MIN_SAVING

    total = sum(map(len, chunks))
    print(f"\n{title}: {len(chunks)} chunks, {total / MiB:.1f} MiB; MB/s of plaintext\n")
    print("| codec | stored/plain | with 'none' rule | chunks 'none' | compress | decompress |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (enc, dec) in codecs().items():
        t0 = time.perf_counter()
        packed = [enc(c) for c in chunks]
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in packed:
            dec(p)
        t_dec = time.perf_counter() - t0
        pays = [len(p) <= len(c) * (1 - MIN_SAVING) for p, c in zip(packed, chunks, strict=True)]
        kept = sum(len(p) if ok else len(c) for p, c, ok in zip(packed, chunks, pays, strict=True))
        print(
            f"| {name} | {sum(map(len, packed)) / total:.3f} | {kept / total:.3f} "
            f"| {pays.count(False)} | {total / t_enc / 1e6:.0f} | {total / t_dec / 1e6:.0f} |"
        )


def bench_codecs(path: Path) -> None:
    from akoshad.storage.chunker import iter_file_chunks

    print("\n## 3. Per-chunk compression (256 KiB average chunks)")
    codec_table("reflection.duckdb", [c.data for c in iter_file_chunks(path)])
    random_chunks = [os.urandom(256 * KiB) for _ in range(128)]
    codec_table("random bytes (incompressible: a first upload's worst case)", random_chunks)


def print_choice() -> None:
    from akoshad.storage import chunker, codec, packs

    print(
        f"\nchosen: pyfastcdc cut_stream, avg {chunker.CHUNK_AVG // KiB} KiB "
        f"(min {chunker.CHUNK_MIN // KiB} KiB, max {chunker.CHUNK_MAX // KiB} KiB), files below "
        f"{chunker.CHUNK_MIN_FILE // KiB} KiB one chunk; {codec.DEFAULT_COMPRESSION} level "
        f"{codec.ZSTD_LEVEL} per chunk ('none' when it saves < {codec.MIN_SAVING:.0%}); packs of "
        f"{packs.PACK_TARGET // MiB} MiB (max {packs.PACK_MAX // MiB} MiB)"
    )


def build_store(args: argparse.Namespace, tmp: Path) -> Path:
    if args.store:
        return Path(args.store)
    beside = [p / "shared/tools/make_store.py" for p in (ROOT.parent, ROOT.parent.parent)]
    found = [p for p in beside if p.is_file()]
    make_store = Path(args.make_store) if args.make_store else (found or beside)[0]
    if not make_store.is_file():
        raise SystemExit(f"make_store.py not found at {make_store}: pass --make-store PATH")
    root = tmp / "store"
    cmd = [sys.executable, str(make_store), "--root", str(root), "--no-aux"]
    t0 = time.perf_counter()
    subprocess.run(
        [*cmd, "--conversations", str(args.conversations)], check=True, capture_output=True
    )
    print(
        f"(store with {args.conversations} conversations built in {time.perf_counter() - t0:.0f} s)"
    )
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=6000)
    ap.add_argument("--make-store", help="path of make_store.py (default ../shared/tools/)")
    ap.add_argument("--store", help="use this existing store directory instead of building one")
    ap.add_argument("--cdc-mib", type=int, default=200)
    ap.add_argument("--rows", type=int, default=80, help="rows per checkpoint round")
    ap.add_argument("--rounds", type=int, default=3, help="checkpoint rounds")
    ap.add_argument("--cdc-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cdc_child:
        cdc_child(args.cdc_child[0], Path(args.cdc_child[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="chunking-bench-") as td:
        tmp = Path(td)
        bench_libraries(tmp, args.cdc_mib)
        store = build_store(args, tmp)
        snaps = checkpoints(store, tmp, args.rows, args.rounds)
        bench_sizes(snaps, args.rows)
        bench_codecs(snaps[-1])
    print_choice()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
