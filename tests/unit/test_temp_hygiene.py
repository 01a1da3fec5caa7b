"""The test suite leaves nothing in the system temp folder: files go in ``tmp_path``, sockets
that need a short path in ``tests.tmpdirs.short_dir()``, removed when the run ends."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# temp folders or files that nothing removes (a ``with TemporaryDirectory()`` cleans up)
STRAY = re.compile(r"tempfile\.(mkdtemp|mkstemp|mktemp)\(|delete=False|dir=\"/tmp\"")


def test_tests_make_temp_folders_only_through_tmp_path_or_short_dir() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        if path.name not in ("tmpdirs.py", "test_temp_hygiene.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if STRAY.search(line)
    ]
    assert offenders == [], "use tmp_path or tests.tmpdirs.short_dir():\n" + "\n".join(offenders)


def test_short_dirs_are_gone_when_the_run_ends(tmp_path: Path) -> None:
    """A real run of a test file whose sockets live in short_dir() folders."""
    script = (
        "import json, sys, pytest\n"
        "rc = pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/unit/test_notify.py'])\n"
        "from tests import tmpdirs\n"
        "print(json.dumps({'rc': int(rc), 'made': [str(p) for p in tmpdirs.made]}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, res.stdout
    assert report["made"], "the run made no short folder: the check checks nothing"
    assert [p for p in report["made"] if Path(p).exists()] == []
