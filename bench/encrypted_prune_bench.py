#!/usr/bin/env python3
"""Bytes an encrypted target holds after each prune run without the identity (the daemon's
setup: the recipients only), with and without the copies of the encrypted documents that
the uploading machine keeps in its state (``state_dir/document_copies``).

Each round changes ``--churn`` of a ``--mib`` MiB file of random bytes at a random place,
runs ``akoshad run --once`` to the local outbox (encrypted), then ``akoshad prune --json``
with ``keep_last: 2``. Without copies (they are removed before each prune, as for uploads
of an earlier akoshad or a lost state), a pack stays whole while a kept upload uses any of
its chunks. Prints, per mode, the stored bytes against the bytes the kept uploads reference
(the 1.2x bound of issue 13; counted chunk by chunk by a dry run with the identity), every
``--every`` rounds and at the end.

python bench/encrypted_prune_bench.py [--rounds 45] [--mib 8] [--churn 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from akoshad.storage.crypto import write_new_identity  # noqa: E402
from akoshad.storage.document_copies import DIR_NAME  # noqa: E402

MiB = 1024 * 1024
SID = "enc-prune-bench"


def _akoshad(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AKOSHAD_")}
    return subprocess.run(
        [sys.executable, "-m", "akoshad", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def _config(root: Path, public: str, identity: Path | None = None) -> Path:
    cfg = root / ("c.json" if identity is None else "c-identity.json")
    encryption: dict[str, Any] = {"recipients": [public]}
    if identity is not None:
        encryption["identity_file"] = str(identity)
    settings = {
        "data_dir": str(root / "store"),
        "state_dir": str(root / "state"),
        "local_target_dir": str(root / "outbox"),
        "socket_path": str(root / "s.sock"),
        "min_upload_interval_seconds": 0,
        "encryption": encryption,
        "retention": {"keep_last": 2, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0},
        "cloud_sync": {"system_id": SID},
    }
    cfg.write_text(json.dumps(settings))  # YAML is a superset of JSON
    return cfg


def _stored(root: Path) -> int:
    top = root / "outbox" / "systems" / SID
    return sum(p.stat().st_size for p in top.rglob("*") if p.is_file())


def _referenced(cfg: Path) -> int:
    """The bytes the kept uploads use, chunk by chunk: a dry run with the identity, which
    opens every upload's documents (a prune without them counts whole packs)."""
    res = _akoshad(cfg, "prune", "--dry-run", "--json")
    result: dict[str, Any] = json.loads(res.stdout or "{}")
    if res.returncode != 0:
        sys.exit(f"prune --dry-run failed: {res.stdout.strip()[-400:]}")
    return int(result["bytes_referenced"])


def run_mode(args: argparse.Namespace, keep_copies: bool) -> list[tuple[int, int, int, float]]:
    """Per round: (stored after the prune, referenced, packs repacked, prune seconds)."""
    rng = random.Random(7)
    out: list[tuple[int, int, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="akoshad-encprune-") as tmp:
        root = Path(tmp)
        (root / "store").mkdir()
        public = write_new_identity(root / "id.txt")
        cfg = _config(root, public)
        with_identity = _config(root, public, root / "id.txt")
        size = args.mib * MiB
        data = bytearray(rng.randbytes(size))
        span = max(1, int(size * args.churn))
        for _ in range(args.rounds):
            start = rng.randrange(0, size - span + 1)
            data[start : start + span] = rng.randbytes(span)
            (root / "store" / "big.bin").write_bytes(data)
            res = _akoshad(cfg, "run", "--once")
            if res.returncode != 0:
                sys.exit(f"run --once failed: {res.stderr.strip()[-400:]}")
            if not keep_copies:
                shutil.rmtree(root / "state" / DIR_NAME, ignore_errors=True)
            t0 = time.monotonic()
            res = _akoshad(cfg, "prune", "--json")
            took = time.monotonic() - t0
            result: dict[str, Any] = json.loads(res.stdout or "{}")
            if res.returncode != 0 or not result.get("ok", False):
                sys.exit(f"prune failed: {res.stdout.strip()[-400:]} {res.stderr.strip()[-400:]}")
            stored = _stored(root)
            out.append((stored, _referenced(with_identity), int(result["packs_repacked"]), took))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--mib", type=int, default=8, help="size of the file that changes")
    parser.add_argument("--churn", type=float, default=0.25, help="share changed per round")
    parser.add_argument("--every", type=int, default=15, help="print every N rounds")
    args = parser.parse_args()
    print(
        f"encrypted local outbox, keep_last 2, {args.rounds} rounds of {args.churn:.0%} of "
        f"a {args.mib} MiB file changed; each prune without the identity"
    )
    results = {}
    for keep in (False, True):
        label = "with copies   " if keep else "without copies"
        rows = run_mode(args, keep)
        results[keep] = rows
        for i, (stored, ref, repacked, took) in enumerate(rows, 1):
            if i % args.every == 0 or i == len(rows):
                print(
                    f"{label} round {i:3d}: stored {stored / MiB:7.2f} MiB, referenced "
                    f"{ref / MiB:6.2f} MiB, ratio {stored / ref:5.2f}x, packs repacked "
                    f"{repacked}, prune {took:.2f} s"
                )
    worst = {k: max(s / r for s, r, _, _ in rows) for k, rows in results.items()}
    print(
        f"worst ratio over the rounds: without copies {worst[False]:.2f}x, with copies "
        f"{worst[True]:.2f}x (bound 1.2x)"
    )


if __name__ == "__main__":
    main()
