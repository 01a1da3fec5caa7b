"""What the side-by-side benchmarks share: the peer tools (rclone, aws-cli, restic) and
their environment, the store builder (``../shared/tools/make_store.py``), the small-files
tree of issue 13, a listing of what a prefix of the bucket holds, and a process runner
that samples peak RSS. Not a benchmark itself."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def compile_akoshad() -> None:
    """Compile akoshad's modules to bytecode (``__pycache__``), as ``pip install`` does.
    An editable install compiles them on first import, unless the environment sets
    ``PYTHONDONTWRITEBYTECODE`` (some sandboxes do): then every start of the CLI compiles
    them again, 0.3-0.5 s that an installed akoshad never spends. Benches that time a start
    call this first."""
    compileall.compile_dir(str(REPO / "akoshad"), quiet=1)


MiB = 1024 * 1024
BLOCK = 256 * 1024
ROWS_PER_COMMIT = 20
RESTIC_PASSWORD = "akoshad-bench-not-a-secret"


# ---- the peer tools --------------------------------------------------------------------
def find_rclone() -> str | None:
    beside = Path(sys.executable).with_name("rclone")
    return str(beside) if beside.exists() else shutil.which("rclone")


def find_aws(explicit: str | None) -> tuple[list[str] | None, str]:
    """The aws-cli command: ``explicit``, this Python's awscli, else ``aws`` on PATH."""
    if explicit:
        return [explicit], explicit
    if importlib.util.find_spec("awscli") is not None:
        return [sys.executable, "-m", "awscli"], f"{sys.executable} -m awscli"
    found = shutil.which("aws")
    if found:
        return [found], found
    return None, "no awscli in this Python and no aws on PATH (give one with --aws-cli CMD)"


def tool_env(access_key: str, secret_key: str, endpoint: str, work: Path) -> dict[str, str]:
    """The environment of every tool: credentials, endpoint, private HOME and caches."""
    return dict(
        {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "AWS_"))},
        HOME=str(work / "home"),
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
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


def akoshad_config(
    path: Path, store: Path, work: Path, cloud_sync: dict[str, Any], endpoint: str
) -> list[str]:
    """Write an akoshad config for ``store`` to the bucket behind ``endpoint``; the
    ``run --once`` command that uses it."""
    settings = {
        "data_dir": str(store),
        "state_dir": str(work / "akoshad-state"),
        "socket_path": str(work / "akoshad.sock"),
        "local_target_dir": str(work / "akoshad-outbox"),
        "log_level": "WARNING",
        "cloud_sync": {**cloud_sync, "cloud_endpoint": endpoint},
    }
    path.write_text(json.dumps(settings))
    return [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(path)]


def objects(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Every object under ``prefix``: key -> size."""
    out: dict[str, int] = {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        out.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
    return out


def classify(key: str) -> str:
    """What an akoshad object is: manifest, index, chunklist, pack, memories or other."""
    if key.endswith("/manifest.json"):
        return "manifest"
    for kind, part in (("index", "/index/"), ("chunklist", "/chunklists/"), ("pack", "/packs/")):
        if part in key:
            return kind
    return "memories" if key.endswith("/memories.json") else "other"


# ---- the counting proxy, with each request's line kept -------------------------------
class _Tap:
    """A stream reader that keeps the request line of each head read through it."""

    def __init__(self, reader: asyncio.StreamReader, lines: list[str]) -> None:
        self.reader = reader
        self.lines = lines

    async def readuntil(self, separator: bytes) -> bytes:
        head = await self.reader.readuntil(separator)
        self.lines.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
        return head

    async def read(self, n: int) -> bytes:
        return await self.reader.read(n)


def tap_proxy(upstream_port: int) -> Any:
    """``s3_bench.CountingProxy`` that also keeps ``lines``: every request line since the
    last ``reset``."""
    from s3_bench import CountingProxy

    class TapProxy(CountingProxy):
        lines: list[str] = []

        def reset(self) -> None:
            super().reset()
            self.lines = []

        async def _client(self, reader: asyncio.StreamReader, writer: Any) -> None:
            await super()._client(_Tap(reader, self.lines), writer)  # type: ignore[arg-type]

    return TapProxy(upstream_port)


def request_kinds(lines: list[str]) -> str:
    """Request lines summed up by method and kind of key: ``PUT pack x2, GET list x1``."""
    counts: dict[str, int] = {}
    for line in lines:
        method, _, rest = line.partition(" ")
        path = rest.split(" ")[0]
        key, _, query = path.partition("?")
        kind = classify(key) if "/systems/" in key else "bucket"
        kind = "owner" if key.endswith("/owner.json") else kind
        if "uploadId" in query or "uploads" in query:
            kind += " multipart"
        elif "list-type" in query or "prefix=" in query:
            kind = "list"
        counts[f"{method} {kind}"] = counts.get(f"{method} {kind}", 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


# ---- running a tool --------------------------------------------------------------------
def run_measured(
    cmd: list[str], env: dict[str, str], cwd: Path = REPO
) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS in MiB (the process and its children, sampled every 10 ms),
    exit status and the tail of stderr."""
    import psutil

    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    err: list[bytes] = []
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: err.append(stderr.read()))
    reader.start()
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            rss = ps.memory_info().rss
            for child in ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
            peak = max(peak, rss)
        time.sleep(0.01)
    reader.join()
    tail = b"".join(err).decode(errors="replace")[-400:]
    return time.monotonic() - t0, peak / MiB, proc.returncode, tail


# ---- stores ----------------------------------------------------------------------------
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


def session_ids(count: int) -> list[str]:
    """``count`` stable session ids (uuid-like hex, as session-buddy names them)."""
    rng = random.Random(13)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def state_json(sid: str, n: int) -> str:
    """A session's ``state.json`` (a few hundred bytes, as session-buddy writes it)."""
    return json.dumps(
        {
            "status": "active" if n else "ended",
            "revision": n,
            "notes": f"session {sid} revision {n} " + "x" * (200 + int(sid[:2], 16)),
            "_metadata": {"session_id": sid, "stored_at": time.time(), "backend": "file"},
        },
        indent=2,
    )


def add_small_files(store: Path, count: int) -> list[Path]:
    """``count`` files ``sessions/<id>/state.json`` under ``store``; their paths."""
    paths = []
    for sid in session_ids(count):
        p = store / "sessions" / sid / "state.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(state_json(sid, 0))
        paths.append(p)
    return paths


def touch_small_files(paths: list[Path], how_many: int, rng: random.Random) -> None:
    """Rewrite ``how_many`` of the small files (a new revision each)."""
    for p in rng.sample(paths, min(how_many, len(paths))):
        p.write_text(state_json(p.parent.name, rng.randrange(1, 1 << 30)))


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ---- the changed-block floor -----------------------------------------------------------
def block_digests(root: Path) -> dict[str, list[tuple[bytes, int]]]:
    """Per store file, a digest and the length of each 256 KiB aligned block."""
    out: dict[str, list[tuple[bytes, int]]] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        digests = []
        with p.open("rb") as fh:
            while block := fh.read(BLOCK):
                digests.append((hashlib.blake2b(block, digest_size=16).digest(), len(block)))
        out[p.relative_to(root).as_posix()] = digests
    return out


def changed_bytes(before: dict[str, list[tuple[bytes, int]]], after: dict[str, Any]) -> int:
    """Bytes of the blocks of ``after`` that are new or differ from the same block of
    ``before`` (a whole 256 KiB per block, less for a file's short last block)."""
    n = 0
    for path, blocks in after.items():
        old = before.get(path, [])
        n += sum(ln for i, (d, ln) in enumerate(blocks) if i >= len(old) or old[i][0] != d)
    return n


# ---- the store and its writer ----------------------------------------------------------
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
