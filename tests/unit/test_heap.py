"""The daemon's heap settings: freed chunk buffers are reused, not faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_CYCLES = """
import ctypes, resource, sys
from akoshad.heap import bounded_heap
if sys.argv[1] == "bounded":
    bounded_heap()
else:  # the settings before: the mmap threshold alone (glibc's trim threshold, 128 KiB)
    ctypes.CDLL("libc.so.6").mallopt(-3, 1024 * 1024)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def cycle():  # a large file's chunks: cut, held a while, freed
    held = [bytearray(256 * 1024 + i * 4096) for i in range(8)]
    del held
cycle()
before = faults()
for _ in range(100):
    cycle()
print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_chunk_buffers_stay_for_the_next_ones(tmp_path: Path) -> None:
    script = tmp_path / "cycles.py"
    script.write_text(_CYCLES)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, str(script), mode],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for mode in ("mmap-only", "bounded")
    }
    assert faults["mmap-only"] > 200  # every cycle gave its pages back and took new ones
    assert faults["bounded"] < 20
