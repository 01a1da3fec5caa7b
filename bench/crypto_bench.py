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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyrage import x25519  # noqa: E402

from akoshad.storage.chunker import iter_stream_chunks  # noqa: E402
from akoshad.storage.codec import compress, decompress  # noqa: E402
from akoshad.storage.crypto import Identities, Recipients, open_sealed, seal  # noqa: E402
from akoshad.storage.name_key import new_name_key  # noqa: E402
from akoshad.storage.packs import PackWriter  # noqa: E402

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
    nk = new_name_key("bench", rec)
    print(f"{total / GiB:.2f} GiB, chunks of {CHUNK // KiB} KiB, packs of {PACK // MiB} MiB")

    def up_plain() -> int:
        n = 0
        for c in chunks(data, total, CHUNK):
            hashlib.sha256(c).hexdigest()
            n += len(compress(c)[1])
        return n

    def up_age() -> int:
        n = 0
        for c in chunks(data, total, CHUNK):
            nk.name(hashlib.sha256(c).hexdigest())
            n += len(seal(compress(c)[1], rec))
        return n

    def cdc_upload(sealed: bool) -> Callable[[], int]:
        def run() -> int:
            n = 0
            for _ in range(total // SAMPLE):
                for c in iter_stream_chunks(io.BytesIO(data)):  # sha256 included
                    body = compress(c.data)[1]
                    if sealed:
                        nk.name(c.sha256)
                        body = seal(body, rec)
                    n += len(body)
            return n

        return run

    def staged_upload(sealed: bool) -> Callable[[], int]:
        def run() -> int:
            n = 0
            with tempfile.TemporaryDirectory() as tmp, PackWriter(Path(tmp), "bench") as w:
                for _ in range(total // SAMPLE):
                    for c in iter_stream_chunks(io.BytesIO(data)):
                        body = compress(c.data)[1]
                        name = c.sha256
                        if sealed:
                            name = nk.name(c.sha256)
                            body = seal(body, rec)
                        for pack in w.add(name, body):
                            n += pack.size
                            pack.path.unlink()  # uploaded
                last = w.flush()
                if last is not None:
                    n += last.size
                    last.path.unlink()
            return n

        return run

    report("upload, per 256 KiB chunk", timed(up_plain), timed(up_age), total)
    report(
        "upload, CDC+sha256+zstd [+age]", timed(cdc_upload(False)), timed(cdc_upload(True)), total
    )
    report(
        "upload, ... + packs written to disk",
        timed(staged_upload(False), 1),
        timed(staged_upload(True), 1),
        total,
    )
    t1, _ = timed(lambda: sum(len(seal(b"x", rec)) for _ in range(2000)))
    t2, _ = timed(lambda: sum(len(open_sealed(seal(b"x", rec), ids, 1)) for _ in range(2000)))
    print(
        f"{'fixed cost per body':<34} seal {t1 / 2000 * 1e6:.0f} us, "
        f"open {(t2 - t1) / 2000 * 1e6:.0f} us"
    )

    stored = [(compress(c), len(c)) for c in chunks(data, SAMPLE, CHUNK)]
    sealed = [((comp, seal(body, rec)), size) for (comp, body), size in stored]
    reps = total // SAMPLE

    def down_plain() -> int:
        for _ in range(reps):
            for (comp, body), size in stored:
                hashlib.sha256(decompress(body, comp, size))
        return 0

    def down_age() -> int:
        for _ in range(reps):
            for (comp, body), size in sealed:
                hashlib.sha256(decompress(open_sealed(body, ids, size), comp, size))
        return 0

    report("restore, per 256 KiB chunk", timed(down_plain), timed(down_age), total)

    packs = [b"".join(body for (_, body), _ in stored[i : i + 64]) for i in range(0, 256, 64)]

    def seal_packs() -> int:
        return sum(len(seal(p, rec)) for _ in range(reps) for p in packs)

    def seal_chunks() -> int:
        return sum(len(seal(body, rec)) for _ in range(reps) for (_, body), _ in stored)

    t_p, _ = timed(seal_packs)
    t_c, _ = timed(seal_chunks)
    t_z, _ = timed(lambda: sum(len(compress(c)[1]) for c in chunks(data, total, CHUNK)))
    print(
        f"{'seal only, 16 MiB packs':<34} {mbps(total, t_p):7.1f} MB/s   "
        f"per 256 KiB chunk {mbps(total, t_c):7.1f} MB/s   zstd only {mbps(total, t_z):7.1f} MB/s"
    )

    bodies = [body for (_, body), _ in stored]

    def seal_threads() -> int:
        with ThreadPoolExecutor(args.threads) as pool:
            for _ in range(reps):
                list(pool.map(lambda b: seal(b, rec), bodies))
        return 0

    t_t, _ = timed(seal_threads)
    print(
        f"{f'seal per chunk, {args.threads} threads':<34} {mbps(total, t_t):7.1f} MB/s "
        f"(x{t_c / t_t:.2f} of one thread)"
    )


if __name__ == "__main__":
    main()
