"""Secret redaction speed: MB/s of text per core, and what it adds to memory delivery.

Prints, for three corpora (session-buddy-like conversation text from
``../shared/tools/make_store.py``, Python source code, this README repeated), the scan
rate of ``SecretRedactor.redact`` on one core, in MB of text per CPU second (robust to
the load of a shared machine; the load average is printed beside it); then the CPU time
to load and batch every memory of a generated ``reflection.duckdb`` with redaction on and
off, where DuckDB's check of the redactor's gate spares most texts the scan; and the
time to scan one long line of random base64 (a pasted screenshot) of 100 KB to 5 MB, with
and without the word "okta" in it (a rule's keyword: 68 s for 2 MB before its regex was run
only near the keyword), alone with ``--long-lines``.

    python bench/redact_bench.py [--conversations N] [--long-lines]
"""

from __future__ import annotations

import argparse
import base64
import glob
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from akoshad.akosha.redact import SecretRedactor  # noqa: E402
from akoshad.akosha.rows import list_rows  # noqa: E402
from akoshad.duckdb_commands import load_batches_here  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from benchlib import default_maker  # noqa: E402

MAKE_STORE = default_maker()  # ../shared/tools/make_store.py beside the checkout


def rate(redactor: SecretRedactor, text: str, rounds: int = 3) -> tuple[float, int]:
    times = []
    found = 0
    for _ in range(rounds):
        t0 = time.process_time()
        found = len(redactor.redact(text)[1])
        times.append(time.process_time() - t0)
    return len(text.encode()) / 1e6 / statistics.median(times), found


def conversation_corpus(store: Path) -> str:
    import duckdb

    con = duckdb.connect(str(store / "reflection.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT content FROM conversations_v2").fetchall()
    finally:
        con.close()
    return "\n".join(r[0] for r in rows)


def long_lines(redactor: SecretRedactor) -> None:
    """One line of random base64 per size, with and without a keyword ("okta") at its head."""
    for head in ("data:image/png;base64,", "my okta login screenshot: data:image/png;base64,"):
        for size in (100_000, 800_000, 2_000_000, 5_000_000):
            body = base64.b64encode(random.Random(size).randbytes(size * 3 // 4)).decode()
            text = head + body
            t0 = time.process_time()
            redactor.redact(text)
            took = time.process_time() - t0
            label = f"one line, {'with' if 'okta' in head else 'no'} okta"
            print(
                f"{label:42s} {len(text) / 1e6:7.2f} MB  {len(text) / 1e6 / took:6.1f} MB/s  "
                f"({took:.2f} CPU s)"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=1500)
    ap.add_argument("--make-store", type=Path, default=MAKE_STORE, help="make_store.py to use")
    ap.add_argument("--long-lines", action="store_true", help="only the long-line figures")
    args = ap.parse_args()
    if args.long_lines:
        long_lines(SecretRedactor())
        return
    with tempfile.TemporaryDirectory(prefix="akoshad-redact-bench-") as tmp:
        store = Path(tmp) / "store"
        subprocess.run(
            [
                sys.executable,
                str(args.make_store),
                "--root",
                str(store),
                "--conversations",
                str(args.conversations),
            ],
            check=True,
            capture_output=True,
        )
        t0 = time.perf_counter()
        redactor = SecretRedactor()
        print(
            f"rules compiled in {time.perf_counter() - t0:.3f} s "
            f"({len(redactor.rules.rules)} rules)"
        )
        site = sysconfig.get_paths()["purelib"]
        code = "".join(
            Path(f).read_text(errors="replace")
            for f in sorted(glob.glob(f"{site}/aiohttp/*.py") + glob.glob(f"{site}/botocore/*.py"))
        )
        corpora = {
            "conversations (make_store)": conversation_corpus(store),
            "python source": code,
            "README x30 (dense in key/token words)": (ROOT / "README.md").read_text() * 30,
        }
        rng = random.Random(1)
        planted = corpora["conversations (make_store)"].split("\n")
        for i in range(0, len(planted), 50):
            planted[i] += " token ghp_" + "".join(rng.choice("abcdef0123456789") for _ in range(36))
        corpora["conversations, a secret every 50 rows"] = "\n".join(planted)
        for name, text in corpora.items():
            mbps, found = rate(redactor, text)
            print(f"{name:42s} {len(text) / 1e6:7.2f} MB  {mbps:6.1f} MB/s  {found} found")
        long_lines(redactor)
        # as delivery scans: one memory text at a time
        rows = corpora["conversations (make_store)"].split("\n")
        times = []
        for _ in range(3):
            t0 = time.process_time()
            for row in rows:
                redactor.redact(row)
            times.append(time.process_time() - t0)
        size = sum(len(r.encode()) for r in rows) / 1e6
        print(
            f"{'conversations, one memory at a time':42s} {size:7.2f} MB  "
            f"{size / statistics.median(times):6.1f} MB/s  ({len(rows)} memories)"
        )

        db = store / "reflection.duckdb"
        refs = list_rows(db, "bench")
        for label, red in (("off", None), ("on", redactor)):
            times = []
            for _ in range(3):
                t0 = time.process_time()
                load_batches_here(db, "bench", refs, 100, 4 << 20, red)
                times.append(time.process_time() - t0)
            print(
                f"load + batch {len(refs)} memories, redaction {label:3s}: "
                f"{statistics.median(times):.3f} CPU s"
            )
        print(f"load average {os.getloadavg()[0]:.1f} (MB/s are per CPU second)")


if __name__ == "__main__":
    main()
