#!/usr/bin/env python3
"""What age encryption (pyrage) costs a first upload and a restore, per chunk and per pack.

python bench/crypto_bench.py [--gib 1] [--file PATH] [--threads 2]

Data: --gib GiB (default 1) of DuckDB-like bytes (a third random, the rest repetitive rows),
or the bytes of --file cycled to that size; generated once (64 MiB) and cycled, so memory
stays small. Each figure is MB/s of plaintext, best of 2 passes:

1. Chunks of 256 KiB (the CDC average): sha256 + zstd (the first-upload CPU work without
   encryption) vs sha256 + zstd + seal + keyed name (with it); then the reverse (restore:
   open + decompress + sha256 vs decompress + sha256).
2. Packs of 16 MiB: the same chunks compressed, sealed as one 16 MiB body (the alternative
   of sealing a whole pack) vs per chunk.
   And the same with packs written to a staging directory (PackWriter, as the writer does;
   each sealed pack deleted as if uploaded): closer to a real first upload.
3. Threads: seal per chunk in --threads threads (does pyrage release the GIL?).

time + % = extra time / time without encryption; throughput - % = the MB/s lost (the
goal: at most 15%). Requests: sealed bodies go into the
same packs and documents, so the count per upload is unchanged; the name key costs one PUT
when it is made and one HEAD per daemon start. The machine is shared: speeds are indicative.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyrage import x25519  # noqa: E402

from akoshad.storage.chunker import iter_stream_chunks  # noqa: E402
from akoshad.storage.codec import compress, decompress  # noqa: E402
from akoshad.storage.crypto import Identities, Recipients, open_sealed, seal  # noqa: E402
from akoshad.storage.name_key import NameKey, new_name_key  # noqa: E402
from akoshad.storage.packs import PackWriter  # noqa: E402
from akoshad.storage.refs import ChunkCompression  # noqa: E402

KiB, MiB, GiB = 1024, 1024 * 1024, 1024**3
CHUNK = 256 * KiB
PACK = 16 * MiB
SAMPLE = 64 * MiB


def sample(path: Path | None) -> bytes:
    """64 MiB of DuckDB-like data (or the file's bytes, cycled)."""
    if path is not None:
        data = path.read_bytes()[:SAMPLE]
        return (data * (SAMPLE // max(1, len(data)) + 1))[:SAMPLE]
    rng = random.Random(7)
    out = bytearray()
    n = 0
    while len(out) < SAMPLE:
        if n % 3 == 0:
            out += rng.randbytes(4096)
        else:
            rows = b"".join(
                b"%08d|conversation|%d|user|the quick brown fox %d\n" % (n, i, rng.randrange(99))
                for i in range(80)
            )
            out += rows[:4096].ljust(4096, b"\0")
        n += 1
    return bytes(out[:SAMPLE])


def chunks(data: bytes, total: int, size: int) -> Iterator[bytes]:
    done = 0
    while done < total:
        for off in range(0, len(data), size):
            if done >= total:
                return
            yield data[off : off + size]
            done += size


def timed(fn: Callable[[], int], passes: int = 2) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(passes):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def report(label: str, base: tuple[float, int], enc: tuple[float, int], total: int) -> None:
    (tb, sb), (te, se) = base, enc
    print(
        f"{label:<34} plain {mbps(total, tb):7.1f} MB/s   age {mbps(total, te):7.1f} MB/s   "
        f"time +{100 * (te - tb) / tb:5.1f}%  throughput -{100 * (1 - tb / te):4.1f}%   "
        f"stored +{se - sb:,} bytes "
        f"({100 * (se - sb) / max(1, sb):.2f}%)"
    )


@dataclass
class Bench:
    """The sample data and the keys every measurement uses."""

    data: bytes
    total: int
    rec: Recipients
    ids: Identities
    nk: NameKey
    threads: int

    @property
    def reps(self) -> int:
        return self.total // SAMPLE


def up_plain(b: Bench) -> int:
    n = 0
    for c in chunks(b.data, b.total, CHUNK):
        hashlib.sha256(c).hexdigest()
        n += len(compress(c)[1])
    return n


def up_age(b: Bench) -> int:
    n = 0
    for c in chunks(b.data, b.total, CHUNK):
        b.nk.name(hashlib.sha256(c).hexdigest())
        n += len(seal(compress(c)[1], b.rec))
    return n


def cdc_upload(b: Bench, sealed: bool) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for _ in range(b.reps):
            for c in iter_stream_chunks(io.BytesIO(b.data)):  # sha256 included
                body = compress(c.data)[1]
                if sealed:
                    b.nk.name(c.sha256)
                    body = seal(body, b.rec)
                n += len(body)
        return n

    return run


def _packed(b: Bench, w: PackWriter, sealed: bool) -> int:
    n = 0
    for _ in range(b.reps):
        for c in iter_stream_chunks(io.BytesIO(b.data)):
            body = compress(c.data)[1]
            name = c.sha256
            if sealed:
                name = b.nk.name(c.sha256)
                body = seal(body, b.rec)
            for pack in w.add(name, body):
                n += pack.size
                pack.path.unlink()  # uploaded
    return n


def staged_upload(b: Bench, sealed: bool) -> Callable[[], int]:
    def run() -> int:
        with tempfile.TemporaryDirectory() as tmp, PackWriter(Path(tmp), "bench") as w:
            n = _packed(b, w, sealed)
            last = w.flush()
            if last is not None:
                n += last.size
                last.path.unlink()
        return n

    return run


def bench_upload(b: Bench) -> None:
    """1. and 2.: first uploads, per chunk, with CDC, with packs on disk; fixed costs."""
    rec, total = b.rec, b.total
    report("upload, per 256 KiB chunk", timed(lambda: up_plain(b)), timed(lambda: up_age(b)), total)
    report(
        "upload, CDC+sha256+zstd [+age]",
        timed(cdc_upload(b, False)),
        timed(cdc_upload(b, True)),
        total,
    )
    report(
        "upload, ... + packs written to disk",
        timed(staged_upload(b, False), 1),
        timed(staged_upload(b, True), 1),
        total,
    )
    t1, _ = timed(lambda: sum(len(seal(b"x", rec)) for _ in range(2000)))
    t2, _ = timed(lambda: sum(len(open_sealed(seal(b"x", rec), b.ids, 1)) for _ in range(2000)))
    print(
        f"{'fixed cost per body':<34} seal {t1 / 2000 * 1e6:.0f} us, "
        f"open {(t2 - t1) / 2000 * 1e6:.0f} us"
    )


Stored = list[tuple[tuple[ChunkCompression, bytes], int]]


def bench_restore(b: Bench, stored: Stored) -> None:
    """Restores: decompress + sha256, with and without opening the sealed body first."""
    sealed = [((comp, seal(body, b.rec)), size) for (comp, body), size in stored]

    def down_plain() -> int:
        for _ in range(b.reps):
            for (comp, body), size in stored:
                hashlib.sha256(decompress(body, comp, size))
        return 0

    def down_age() -> int:
        for _ in range(b.reps):
            for (comp, body), size in sealed:
                hashlib.sha256(decompress(open_sealed(body, b.ids, size), comp, size))
        return 0

    report("restore, per 256 KiB chunk", timed(down_plain), timed(down_age), b.total)


def bench_seal(b: Bench, stored: Stored) -> float:
    """Sealing alone: 16 MiB packs vs 256 KiB chunks vs zstd alone; the per-chunk time."""
    rec, reps, total = b.rec, b.reps, b.total
    packs = [b"".join(body for (_, body), _ in stored[i : i + 64]) for i in range(0, 256, 64)]

    def seal_packs() -> int:
        return sum(len(seal(p, rec)) for _ in range(reps) for p in packs)

    def seal_chunks() -> int:
        return sum(len(seal(body, rec)) for _ in range(reps) for (_, body), _ in stored)

    t_p, _ = timed(seal_packs)
    t_c, _ = timed(seal_chunks)
    t_z, _ = timed(lambda: sum(len(compress(c)[1]) for c in chunks(b.data, total, CHUNK)))
    print(
        f"{'seal only, 16 MiB packs':<34} {mbps(total, t_p):7.1f} MB/s   "
        f"per 256 KiB chunk {mbps(total, t_c):7.1f} MB/s   zstd only {mbps(total, t_z):7.1f} MB/s"
    )
    return t_c


def bench_threads(b: Bench, stored: Stored, t_c: float) -> None:
    """3.: sealing per chunk in ``b.threads`` threads, against one thread (``t_c``)."""
    bodies = [body for (_, body), _ in stored]

    def seal_threads() -> int:
        with ThreadPoolExecutor(b.threads) as pool:
            for _ in range(b.reps):
                list(pool.map(lambda body: seal(body, b.rec), bodies))
        return 0

    t_t, _ = timed(seal_threads)
    print(
        f"{f'seal per chunk, {b.threads} threads':<34} {mbps(b.total, t_t):7.1f} MB/s "
        f"(x{t_c / t_t:.2f} of one thread)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--file", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    total = int(args.gib * GiB)
    data = sample(args.file)
    identity = x25519.Identity.generate()
    rec = Recipients.parse([str(identity.to_public())])
    ids = Identities(Path("bench.key"), rec.keys, (), (identity,))
    b = Bench(data, total, rec, ids, new_name_key("bench", rec), args.threads)
    print(f"{total / GiB:.2f} GiB, chunks of {CHUNK // KiB} KiB, packs of {PACK // MiB} MiB")
    bench_upload(b)
    stored = [(compress(c), len(c)) for c in chunks(data, SAMPLE, CHUNK)]
    bench_restore(b, stored)
    t_c = bench_seal(b, stored)
    bench_threads(b, stored, t_c)


if __name__ == "__main__":
    main()
