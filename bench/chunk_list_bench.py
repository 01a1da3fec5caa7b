#!/usr/bin/env python3
"""What a large file's chunk list costs per checkpoint, whole or split into parts.

Copies ``reflection.duckdb`` of a store built by ``../shared/tools/make_store.py`` (e.g.
``/work/benchdata/big``, about 1 GB) into a scratch directory, chunks it as akoshad does
(FastCDC, 256 KiB average), then plays ``--sessions`` sessions of session-buddy's
long-lived connection (20 rows committed twice, then ``CHECKPOINT``) and chunks the file
again after each checkpoint. Chunk refs get pack locations as an upload would give them
(unchanged chunks keep theirs, new ones go to new 16 MiB packs). For the whole list and for
several part shapes (``chunk_parts``: boundary bits, min and max chunks per part), the
stored bytes of the chunk-list documents each checkpoint writes (those not stored by the
upload before: new parts and the top-level list), encoded with the real document codec.

    python bench/chunk_list_bench.py --store /work/benchdata/big --sessions 3
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import Writer, default_maker, load_maker  # noqa: E402

from akoshad.storage import chunk_parts  # noqa: E402
from akoshad.storage.chunker import iter_file_chunks  # noqa: E402
from akoshad.storage.documents import encode_document  # noqa: E402

PACK_CHUNKS = 64  # 16 MiB packs of 256 KiB chunks
SHAPES = [  # (boundary bits, min chunks, max chunks); None = the whole list
    None,
    (4, 4, 64),
    (5, 8, 128),
    (5, 4, 64),
    (6, 16, 256),
    (3, 2, 32),
]


class Locations:
    """Chunk refs as uploads give them: a chunk keeps its first location."""

    def __init__(self) -> None:
        self.refs: dict[str, dict[str, Any]] = {}
        self.upload = 0

    def refs_of(self, chunks: list[tuple[str, int]]) -> list[dict[str, Any]]:
        self.upload += 1
        new = 0
        out = []
        for sha, size in chunks:
            if sha not in self.refs:
                pack = hashlib.sha256(f"{self.upload}/{new // PACK_CHUNKS}".encode()).hexdigest()
                offset = (new % PACK_CHUNKS) * size
                self.refs[sha] = {
                    "sha256": sha,
                    "size": size,
                    "key": f"systems/bench/packs/{pack[:2]}/{pack}",
                    "offset": offset,
                    "length": size * 2 // 3,
                    "compression": "zstd",
                    "encryption": "none",
                }
                new += 1
            out.append(self.refs[sha])
        return out


def documents(chunks: list[dict[str, Any]], shape: tuple[int, int, int] | None) -> dict[str, int]:
    """Key -> stored bytes of every chunk-list document of ``chunks`` in ``shape``."""
    if shape is None:
        key, data = encode_document("bench", "chunklists", {"chunks": chunks})
        return {key: len(data)}
    bits, lo, hi = shape
    out: dict[str, int] = {}
    parts = []
    for part in chunk_parts.cut_chunk_parts(chunks, chunk_parts.boundary_of(None, bits), lo, hi):
        key, data = encode_document("bench", "chunklists", {"chunks": part})
        out[key] = len(data)
        parts.append(chunk_parts.part_json(key, "none", part))
    key, data = encode_document("bench", "chunklists", {"parts": parts})
    out[key] = len(data)
    return out


def chunk_ids(path: Path) -> list[tuple[str, int]]:
    return [(c.sha256, c.length) for c in iter_file_chunks(path)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="a store built by make_store.py")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--make-store", default=str(default_maker()), help="path of make_store.py")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--shapes", default=None, help='part shapes to try, e.g. "5,8,128 4,4,64"')
    args = ap.parse_args()
    shapes = SHAPES
    if args.shapes:
        shapes = [None, *(_shape(s) for s in args.shapes.split())]
    maker = load_maker(Path(args.make_store))
    with tempfile.TemporaryDirectory(prefix="akoshad-chunklist-", dir=args.work) as tmp:
        db = Path(tmp) / "reflection.duckdb"
        for name in ("reflection.duckdb", "reflection.duckdb.wal"):
            if (Path(args.store) / name).exists():
                shutil.copy2(Path(args.store) / name, Path(tmp) / name)
        writer = Writer(maker, db)
        writer.checkpoint()  # the copied WAL folded in: the state a first upload sees
        versions = [chunk_ids(db)]
        for session in range(args.sessions):
            writer.commit(session)
            writer.commit(session)
            writer.checkpoint()
            started = time.monotonic()
            versions.append(chunk_ids(db))
            print(f"session {session + 1}: chunked in {time.monotonic() - started:.1f} s")
        writer.close()
        size = db.stat().st_size
    locations = Locations()
    lists = [locations.refs_of(v) for v in versions]
    for before, after in itertools.pairwise(versions):
        old = set(before)
        changed = {i for i, c in enumerate(after) if c not in old}
        runs = sum(1 for i in changed if i - 1 not in changed)
        print(
            f"checkpoint: {len(changed)} of {len(after)} chunks new, in {runs} runs "
            f"({sum(after[i][1] for i in changed) / 2**20:.1f} MiB)"
        )
    print(f"\nreflection.duckdb {size / 2**20:.0f} MiB, {len(lists[-1])} chunks")
    print(f"{'shape (bits,min,max)':>22} {'parts':>6} {'top KiB':>8} {'per checkpoint KiB':>19}")
    for shape in shapes:
        docs = [documents(chunks, shape) for chunks in lists]
        sent = [
            sum(n for k, n in after.items() if k not in before) / 1024
            for before, after in itertools.pairwise(docs)
        ]
        top = max(docs[-1].values()) / 1024 if shape is None else _top(lists[-1], shape)
        label = "whole" if shape is None else ",".join(map(str, shape))
        print(
            f"{label:>22} {len(docs[-1]) - (shape is not None):>6} {top:>8.1f} "
            f"{statistics.mean(sent):>8.1f} (max {max(sent):.1f})"
        )


def _shape(text: str) -> tuple[int, int, int]:
    bits, lo, hi = (int(x) for x in text.split(","))
    return bits, lo, hi


def _top(chunks: list[dict[str, Any]], shape: tuple[int, int, int]) -> float:
    bits, lo, hi = shape
    parts = []
    for part in chunk_parts.cut_chunk_parts(chunks, chunk_parts.boundary_of(None, bits), lo, hi):
        key, _ = encode_document("bench", "chunklists", {"chunks": part})
        parts.append(chunk_parts.part_json(key, "none", part))
    return len(encode_document("bench", "chunklists", {"parts": parts})[1]) / 1024


if __name__ == "__main__":
    main()
