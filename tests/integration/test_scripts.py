"""The README's two commands, ``bash scripts/demo.sh`` and ``bash scripts/test.sh``, on a
Python that refuses system-wide installs (PEP 668), as Debian's does.

That Python is the running interpreter's base installation laid out anew in a temporary
folder (its standard library linked entry by entry, pip beside it) with an
``EXTERNALLY-MANAGED`` marker in its stdlib: ``python -m pip install`` stops there with
``externally-managed-environment``. The scripts must create their own virtual environment
with it and never install into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def externally_managed_python(root: Path) -> Path:
    """A copy of the base interpreter under ``root`` whose pip refuses to install."""
    base = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    stdlib = Path(sysconfig.get_path("stdlib"))
    lib = root / "lib" / stdlib.name
    (root / "bin").mkdir(parents=True)
    (lib / "site-packages").mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "EXTERNALLY-MANAGED"):
            (lib / entry.name).symlink_to(entry)
    import pip

    (lib / "site-packages" / "pip").symlink_to(Path(pip.__file__).parent)
    (lib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use a venv\n")
    python = root / "bin" / "python3"
    shutil.copy2(base, python)
    return python


def _env(python: Path, venv: Path) -> dict[str, str]:
    """This environment without the tests' own virtual environment on PATH."""
    mine = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p != mine]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "XDG_"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env.update(PATH=os.pathsep.join(path), PYTHON=str(python), AKOSHAD_VENV=str(venv))
    return env


def _bash(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", f"scripts/{script}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def refusing_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = externally_managed_python(tmp_path_factory.mktemp("sys") / "python")
    res = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "akoshad-does-not-exist"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "externally-managed-environment" in res.stderr, res.stderr
    return python


def test_test_sh_and_demo_sh_work_where_pip_refuses(refusing_python: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = _env(refusing_python, venv)
    res = _bash("test.sh", env, "--collect-only", "-q", "tests/unit/test_layout.py")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "All checks passed!" in res.stdout  # ruff ran
    assert "Success: no issues found" in res.stdout  # mypy ran
    assert "tests collected" in res.stdout or "test collected" in res.stdout
    for tool in ("weed", "ruff", "mypy", "akoshad"):
        assert (venv / "bin" / tool).exists(), tool

    demo = _bash("demo.sh", dict(env, DEMO_DIR=str(tmp_path / "demo")))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "8 file(s) verified, ok" in demo.stdout
    assert "restored 8 file(s)" in demo.stdout
    # nothing went into the refusing interpreter itself
    site = refusing_python.parent.parent / "lib" / Path(sysconfig.get_path("stdlib")).name
    assert sorted(p.name for p in (site / "site-packages").iterdir()) == ["pip"]

    # an environment already up to date is used as it is: no pip run the second time
    stamp = venv / ".akoshad-installed"
    before = stamp.stat().st_mtime_ns
    again = _bash("demo.sh", dict(env, DEMO_DIR=str(tmp_path / "demo2")))
    assert again.returncode == 0, again.stdout + again.stderr
    assert stamp.stat().st_mtime_ns == before
