#!/usr/bin/env python3
"""``akoshad run --once`` of two source trees against one S3 server, interleaved.

Compares this checkout (B) with another one (A, for example a ``git worktree`` of an older
commit) on the cases of ``s3_bench.py``: the small session store and the large
incompressible file. Both trees run with the same Python environment and the same data on
one SeaweedFS server; the runs alternate (A B, B A, A B, ...) so that the machine's load
falls on both alike. Every measured run is a first upload (a fresh state directory, so an
empty ledger) by the machine that already owns the run's system id: one system id per tree
and case, claimed by an unmeasured warm-up run (a claim waits ``CLAIM_SETTLE``, 1 s, once
per system id; the state keeps the same ``owner_id``).
Wall time and CPU time (user + system of the run and its worker processes) are printed
per run, then their medians per case and tree and the ratio B / A::

    git worktree add --detach /path/before <commit>
    python bench/s3_ab.py --against /path/before --rounds 5 [--big-mib 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.s3server import WeedServer  # noqa: E402

MiB = 1024 * 1024


def build_data(work: Path, big_mib: int, conversations: int, wanted: str) -> dict[str, Path]:
    """The small session store, 10,000 small files and a ``big_mib`` MiB incompressible file
    (``wanted``: any of ``store,small,big``)."""
    cases: dict[str, Path] = {}
    if "store" in wanted:
        cases["small store"] = make_small_store(work / "store", conversations)
    if "small" in wanted:
        sys.path.insert(0, str(REPO / "bench"))
        from benchlib import add_small_files

        small = work / "small"
        add_small_files(small, 10_000)
        cases["10000 small files"] = small
    if "big" in wanted:
        big = work / "big"
        big.mkdir()
        with (big / f"random-{big_mib}MiB.bin").open("wb") as fh:
            for _ in range(big_mib):
                fh.write(os.urandom(MiB))
        cases[f"{big_mib} MiB file"] = big
    return cases


def make_small_store(store: Path, conversations: int) -> Path:
    """A session store by make_store.py (beside the checkout) or tests/storegen.py."""
    makers = [up / "shared" / "tools" / "make_store.py" for up in REPO.parents[:2]]
    maker = next((m for m in makers if m.exists()), None)
    if maker is not None:
        options = ["--root", str(store), "--conversations", str(conversations)]
        subprocess.run(
            [sys.executable, str(maker), *options, "--reflections", "900"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    else:
        from tests.storegen import make_store

        make_store(store, conversations=conversations)
    return store


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a run of ``tree``'s akoshad (its package first on the path)."""
    return dict(os.environ, PYTHONPATH=str(tree))


def package_of(tree: Path) -> str:
    """Where ``python -m akoshad`` run from ``tree`` imports the package from."""
    out = subprocess.run(
        [sys.executable, "-c", "import akoshad; print(akoshad.__file__)"],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def run_once(tree: Path, cfg: Path) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system of the run and its reaped children), exit
    status and stderr tail of one ``akoshad run --once``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(cfg)],
        cwd=tree,
        env=tree_env(tree),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode, proc.stderr.decode(errors="replace")[-400:]


OWNER_ID = "ab" * 16  # every run is the same machine (state_dir/owner_id)


def write_config(path: Path, data: Path, scratch: Path, server: WeedServer, system: str) -> None:
    """A config for one first upload of ``data`` (a fresh state and outbox) as ``system``."""
    state = scratch / "state"
    state.mkdir(mode=0o700)
    (state / "owner_id").write_text(OWNER_ID + "\n")
    (state / "owner_id").chmod(0o600)
    path.write_text(
        json.dumps(
            {
                "data_dir": str(data),
                "state_dir": str(state),
                "local_target_dir": str(scratch / "outbox"),
                "log_level": "WARNING",
                "cloud_sync": {
                    "cloud_bucket": server.bucket,
                    "cloud_endpoint": server.endpoint,
                    "cloud_region": "us-east-1",
                    "system_id": system,
                    "access_key_id": server.access_key,
                    "secret_access_key": server.secret_key,
                },
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--against", required=True, help="the other source tree (A)")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each tree per case")
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the large file")
    ap.add_argument("--conversations", type=int, default=1500, help="small store size")
    ap.add_argument("--cases", default="store,big", help="any of store,small,big")
    args = ap.parse_args()
    trees = {"A": Path(args.against).resolve(), "B": REPO}
    for label, tree in trees.items():
        print(f"{label}: {tree} (imports {package_of(tree)})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="akoshad-ab-"))
    server = WeedServer(work / "weed", volume_size_mb=1024)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        cases = build_data(work, args.big_mib, args.conversations, args.cases)
        server.start()
        runs = 0
        for rnd in range(-1, args.rounds):  # round -1: the warm-up runs that claim
            order = ["A", "B"] if rnd % 2 == 0 else ["B", "A"]
            for case, data in cases.items():
                for label in order:
                    runs += 1
                    scratch = work / "runs" / str(runs)
                    scratch.mkdir(parents=True)
                    cfg = scratch / "config.yaml"
                    system = f"ab-{label}-{case.split()[0]}".lower()
                    write_config(cfg, data, scratch, server, system)
                    wall, cpu, code, err = run_once(trees[label], cfg)
                    shutil.rmtree(scratch, ignore_errors=True)
                    if code != 0:
                        print(f"  {label} {case} exited {code}: {err}", flush=True)
                        return 1
                    if rnd >= 0:
                        results.setdefault((case, label), []).append((wall, cpu))
                    print(
                        f"  [{rnd + 1 or 'warm-up'}] {label} {case:16} "
                        f"wall {wall:7.2f} s  cpu {cpu:7.2f} s",
                        flush=True,
                    )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, args.rounds)
    return 0


def print_table(results: dict[tuple[str, str], list[tuple[float, float]]], rounds: int) -> None:
    """Medians per case and tree, and B / A."""
    print()
    print(f"medians of {rounds} interleaved run(s); load average: {os.getloadavg()[0]:.1f}")
    print("| case | A wall s | B wall s | B/A wall | A CPU s | B CPU s | B/A CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in dict.fromkeys(c for c, _ in results):
        a, b = results[(case, "A")], results[(case, "B")]
        aw, bw = statistics.median(r[0] for r in a), statistics.median(r[0] for r in b)
        ac, bc = statistics.median(r[1] for r in a), statistics.median(r[1] for r in b)
        print(
            f"| {case} | {aw:.2f} | {bw:.2f} | {bw / aw:.3f} | {ac:.2f} | {bc:.2f} | "
            f"{bc / ac:.3f} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
