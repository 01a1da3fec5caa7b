#!/usr/bin/env python3
"""First syncs side by side: akoshad ``run --once`` against ``restic backup`` and
``rclone copy``, on one local SeaweedFS, timed in the same run.

Cases (``--cases``):

* ``big``: one 1 GiB file of random bytes (incompressible). Goal: akoshad >= 0.95x
  rclone's speed, peak RSS < 100 MB.
* ``store``: a large session store: a copy of ``--store DIR`` (a store made by
  ``../shared/tools/make_store.py``), else one built with ``--conversations N``. Goal:
  <= 2x restic's time, peak RSS < 150 MiB (``memories.json`` streamed).
* ``small``: ``--small-files`` (10,000) ``sessions/<id>/state.json`` files. Goal: <= 2x
  restic's time.

Each repeat starts a fresh server and fresh state for every tool, and runs the tools of a
case one after the other in a rotating order, so that akoshad and its peers share the
machine's load of that moment; the table gives medians over the repeats, and the ratio
column the median of the per-repeat ratios (akoshad's time over the peer's). Peak RSS is
the process and its children (akoshad's DuckDB worker), sampled every 10 ms; CPU seconds are
the tool's user + system time (what a busy shared machine disturbs least); server CPU
seconds are what the S3 server (SeaweedFS, on the same cores) spent during the tool's run:
it grows with the bytes sent, so a tool that sends more pays for it twice on a 2-core
machine (akoshad's ``memories.json`` of a large store, which restic does not make:
SeaweedFS gzips what looks like text as it stores it, 6.0 CPU-s for 200 MB of it against
2.8 for 200 MB of random bytes); requests and
bytes come from the counting proxy of ``bench/s3_bench.py``. For a store with a
``reflection.duckdb``, akoshad's run counts as ok only when its upload holds a
``memories.json`` with every sendable memory of the store (counted while it is read back
from the bucket a chunk at a time).

    python bench/first_sync_bench.py --cases big --repeat 3
    python bench/first_sync_bench.py --cases store --store /path/to/store --repeat 3
    python bench/first_sync_bench.py --cases small --small-files 10000 --repeat 3

``--direct``: the tools talk to the server itself, not through the counting proxy (it runs
in this process, on the same cores, and costs the tool that sends more bytes more time);
requests and bytes then read 0.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import (  # noqa: E402
    MiB,
    add_small_files,
    akoshad_config,
    build_store,
    compile_akoshad,
    default_maker,
    find_rclone,
    request_kinds,
    run_measured,
    tap_proxy,
    tool_env,
    tree_bytes,
)

from tests.s3server import WeedServer  # noqa: E402

AKOSHAD = "akoshad run --once"
MEMORY_DB = "reflection.duckdb"
ENTRY = b'{"id":"'  # starts each memories.json entry (a string holds no bare quote)


@dataclass
class Run:
    case: str
    tool: str
    repeat: int
    seconds: float
    rss_mib: float
    requests: int
    bytes_up: int
    ok: bool
    kinds: str
    memories: int | None = None  # entries of the memories.json akoshad uploaded
    cpu: float = 0.0  # user + system seconds of the tool (and the children it waited for)
    server_cpu: float = 0.0  # user + system seconds the S3 server spent meanwhile


def _server_cpu(server: WeedServer) -> float:
    """User + system seconds the S3 server process has used so far."""
    import psutil

    assert server.proc is not None
    times = psutil.Process(server.proc.pid).cpu_times()
    return float(times.user + times.system)


def _cpu_since(before: resource.struct_rusage) -> float:
    """CPU seconds of the children reaped since ``before`` (the one tool just run)."""
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return now.ru_utime - before.ru_utime + now.ru_stime - before.ru_stime


def expected_memories(src: Path) -> int | None:
    """How many memories of ``src``'s reflection.duckdb are sendable (None: no such file)."""
    db = src / MEMORY_DB
    if not db.exists():
        return None
    from akoshad.akosha.rows import list_rows

    return sum(1 for ref in list_rows(db, "bench") if ref.problem is None)


def uploaded_memories(server: WeedServer, system_id: str) -> int | None:
    """Entries of the memories.json under ``system_id`` (None: there is none), counted
    while it streams back from the bucket."""
    keys = [k for k in server.keys(f"systems/{system_id}/") if k.endswith("/memories.json")]
    if not keys:
        return None
    body = server.client().get_object(Bucket=server.bucket, Key=keys[-1])["Body"]
    count, tail = 0, b""
    for block in iter(lambda: body.read(MiB), b""):
        data = tail + block  # an entry split across two blocks is whole here
        count += data.count(ENTRY)
        tail = data[-(len(ENTRY) - 1) :]  # too short to hold one: never counted twice
    return count


def build_cases(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    for case in args.cases.split(","):
        src = work / "src" / case
        if case == "big":
            src.mkdir(parents=True)
            with (src / "random-1GiB.bin").open("wb") as fh:
                for _ in range(args.big_mib):
                    fh.write(os.urandom(MiB))
        elif case == "store" and args.store:
            shutil.copytree(args.store, src, symlinks=True)
        elif case == "store":
            build_store(Path(args.make_store), src, args.conversations)
        elif case == "small":
            add_small_files(src, args.small_files)
        else:
            raise SystemExit(f"unknown case {case!r}: big, store or small")
        cases[case] = src
        print(f"case {case}: {tree_bytes(src) / MiB:.1f} MiB in {src}", flush=True)
    return cases


def commands(
    case: str, src: Path, scratch: Path, endpoint: str, server: WeedServer, tools: list[str]
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    bucket = server.bucket
    for tool in tools:
        if tool == "akoshad":
            cloud = server.cloud_sync(f"bench-{case}")
            out[AKOSHAD] = akoshad_config(scratch / "akoshad.yaml", src, scratch, cloud, endpoint)
        elif tool == "restic" and shutil.which("restic"):
            repo = ["-r", f"s3:{endpoint}/{bucket}/restic-{case}"]
            out["restic backup"] = ["restic", *repo, "backup", "--quiet", "--host", "b", str(src)]
        elif tool == "rclone" and find_rclone():
            rclone = str(find_rclone())
            out["rclone copy"] = [rclone, "copy", str(src), f":s3:{bucket}/rclone-{case}"]
        else:
            print(f"skipping {tool}: not installed", flush=True)
    return out


def one_repeat(
    rep: int,
    work: Path,
    cases: dict[str, Path],
    tools: list[str],
    log_requests: bool,
    expected: dict[str, int | None],
    direct: bool = False,
) -> list[Run]:
    """A fresh server; every case, every tool in rotating order; fresh state each.
    ``direct``: the tools talk to the server itself, not through the counting proxy (which
    runs in this process, on the same cores, and costs the tool that sends more bytes more
    time); requests and bytes are then not counted (0)."""
    scratch = work / f"repeat-{rep}"
    server = WeedServer(scratch / "weed", volume_size_mb=1024)
    server.start()
    proxy = tap_proxy(server.s3_port).start()
    endpoint = f"http://127.0.0.1:{server.s3_port if direct else proxy.port}"
    env = tool_env(server.access_key, server.secret_key, endpoint, scratch)
    out: list[Run] = []
    try:
        for case, src in cases.items():
            state = scratch / case
            state.mkdir(parents=True)
            cmds = commands(case, src, state, endpoint, server, tools)
            if "restic backup" in cmds:
                init = [*cmds["restic backup"][:3], "init", "--repository-version", "2"]
                subprocess.run(init, env=env, check=True, capture_output=True)
            order = list(cmds)
            order = order[rep % len(order) :] + order[: rep % len(order)]
            for tool in order:
                proxy.reset()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                server_before = _server_cpu(server)
                secs, rss, code, err = run_measured(cmds[tool], env)
                cpu = _cpu_since(before)  # the tool and the children it waited for
                server_cpu = _server_cpu(server) - server_before
                kinds = request_kinds(proxy.lines) if log_requests else ""
                run = Run(
                    case, tool, rep, secs, rss, proxy.requests, proxy.bytes_up, code == 0, kinds
                )
                run.cpu, run.server_cpu = cpu, server_cpu
                if tool == AKOSHAD and expected[case] is not None:
                    run.memories = uploaded_memories(server, f"bench-{case}")
                    run.ok = run.ok and run.memories == expected[case]
                out.append(run)
                if code:
                    print(f"  {tool} on {case} exited {code}: {err}", flush=True)
                memories = (
                    f" memories.json {run.memories} of {expected[case]}"
                    if tool == AKOSHAD and expected[case] is not None
                    else ""
                )
                print(
                    f"  [{rep + 1}] {case:6} {tool:20} {secs:7.2f} s {cpu:6.2f} CPU s "
                    f"(server {server_cpu:5.2f}) "
                    f"{rss:6.0f} MiB RSS "
                    f"{proxy.requests:6d} req {proxy.bytes_up / MiB:8.1f} MiB sent{memories}",
                    flush=True,
                )
    finally:
        proxy.stop()
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def print_table(runs: list[Run], sizes: dict[str, int], repeats: int) -> None:
    print(f"\nmedians of {repeats} repeat(s); load average now {os.getloadavg()[0]:.1f}\n")
    print(
        "| case | tool | wall s | CPU s | server CPU s | MiB/s | peak RSS MiB (max) | requests "
        "| MiB sent | akoshad time / this tool's (per-repeat median) | memories.json entries "
        "| ok |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.case, r.tool), []).append(r)
    for (case, tool), rs in groups.items():
        secs = statistics.median(r.seconds for r in rs)
        ratios = []
        for r in rs:
            mine = [a for a in runs if (a.case, a.tool, a.repeat) == (case, AKOSHAD, r.repeat)]
            if mine and tool != AKOSHAD:
                ratios.append(mine[0].seconds / r.seconds)
        ratio = f"{statistics.median(ratios):.2f}" if ratios else ""
        counts = {r.memories for r in rs if r.memories is not None}
        memories = "/".join(str(c) for c in sorted(counts))
        cpu = statistics.median(r.cpu for r in rs)
        server_cpu = statistics.median(r.server_cpu for r in rs)
        print(
            f"| {case} | {tool} | {secs:.2f} | {cpu:.2f} | {server_cpu:.2f} "
            f"| {sizes[case] / MiB / secs:.0f} "
            f"| {statistics.median(r.rss_mib for r in rs):.0f} ({max(r.rss_mib for r in rs):.0f}) "
            f"| {statistics.median(r.requests for r in rs):.0f} "
            f"| {statistics.median(r.bytes_up for r in rs) / MiB:.1f} | {ratio} | {memories} "
            f"| {'yes' if all(r.ok for r in rs) else 'NO'} |"
        )
    for r in runs:
        if r.kinds and r.tool == AKOSHAD and r.repeat == 0:
            print(f"akoshad's requests, {r.case}: {r.kinds}")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--cases", default="big,store,small", help="any of big,store,small")
    ap.add_argument("--tools", default="akoshad,rclone,restic", help="akoshad,rclone,restic")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the big file")
    ap.add_argument("--store", default=None, help="a prebuilt store to copy (case store)")
    ap.add_argument("--conversations", type=int, default=56000, help="else build this size")
    ap.add_argument("--make-store", default=str(default_maker()))
    ap.add_argument("--small-files", type=int, default=10000)
    ap.add_argument("--requests", action="store_true", help="print akoshad's requests by kind")
    ap.add_argument(
        "--direct",
        action="store_true",
        help="no counting proxy in the path: times as a user's, requests and bytes not counted",
    )
    ap.add_argument("--work", default=None, help="scratch parent (default: a temp dir)")
    args = ap.parse_args()
    compile_akoshad()  # timed as installed: its bytecode compiled
    with tempfile.TemporaryDirectory(prefix="akoshad-first-sync-", dir=args.work) as tmp:
        work = Path(tmp)
        cases = build_cases(args, work)
        sizes = {case: tree_bytes(src) for case, src in cases.items()}
        expected = {case: expected_memories(src) for case, src in cases.items()}
        runs: list[Run] = []
        for rep in range(args.repeat):
            tools = args.tools.split(",")
            runs += one_repeat(rep, work, cases, tools, args.requests, expected, args.direct)
    print_table(runs, sizes, args.repeat)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
