"""The quick check of ``run --once`` after an upgrade: the version string is the same for
every build from git, so a record of another build's run is not believed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import akoshad
from akoshad import codeid
from tests.helpers import base_env, write_config
from tests.storegen import make_store


def test_an_upgraded_akoshad_is_not_answered_by_the_record_of_the_one_before(
    tmp_path: Path,
) -> None:
    build = tmp_path / "build"  # an installed akoshad, as pip would lay it out
    shutil.copytree(
        Path(akoshad.__file__).parent,
        build / "akoshad",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    make_store(tmp_path / "store")
    config = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
    )
    env = base_env(tmp_path / "home")

    def once() -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(config)],
            cwd=build,  # this build's package first on sys.path
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        return res

    def quick(res: subprocess.CompletedProcess[str]) -> bool:
        return "reconciled" not in res.stderr and "nothing changed, no upload" in res.stderr

    runs = [once() for _ in range(3)]  # the first uploads; a later one records, then answers
    assert quick(runs[-1]), runs[-1].stderr
    # the upgrade: the same version string, other code
    module = build / "akoshad" / "pipeline" / "upload.py"
    module.write_text(module.read_text() + "\n# a later build\n")
    after = once()
    assert not quick(after) and "reconciled" in after.stderr, after.stderr
    assert quick(once())  # that build's own record is believed again


def test_the_code_digest_follows_every_file_of_the_package(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    (package / "sub" / "b.toml").write_text("b = 2\n")
    first = codeid.code_digest(str(package))
    (package / "sub" / "__pycache__" / "b.cpython.pyc").write_bytes(b"\0")
    assert codeid._tree_digest(str(package)) == first  # compiled files are no code change
    (package / "sub" / "b.toml").write_text("b = 3\n")
    assert codeid._tree_digest(str(package)) not in (first, None)
    assert codeid.code_digest(str(tmp_path / "gone")) is None
