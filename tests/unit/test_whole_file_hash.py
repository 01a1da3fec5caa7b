"""The whole-file sha256 of a large file, taken in a thread of its own beside its chunking."""

from __future__ import annotations

import hashlib
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from akoshad.pipeline.packing import HASH_AHEAD, WholeFileHash


def _pieces(n: int) -> list[bytes]:
    rng = random.Random(n)
    return [rng.randbytes(rng.randrange(1, 300_000)) for _ in range(n)]


@pytest.mark.parametrize("apart", [False, True])
def test_the_hash_is_the_files_in_order(apart: bool) -> None:
    pieces = _pieces(40)
    with ThreadPoolExecutor(1) as pool:
        whole = WholeFileHash(pool if apart else None)
        for piece in pieces:
            whole.update(piece)
        assert whole.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
        # a different order gives a different hash: order is what is checked
        assert whole.hexdigest() != hashlib.sha256(b"".join(reversed(pieces))).hexdigest()


def test_the_chunking_is_never_more_than_a_few_chunks_ahead() -> None:
    gate = threading.Event()
    ahead: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        pool.submit(gate.wait)  # the hashing thread is busy until the gate opens
        whole = WholeFileHash(pool)

        def feed() -> None:
            for _ in range(50):
                whole.update(b"x" * 4096)

        feeder = threading.Thread(target=feed)
        feeder.start()
        feeder.join(0.5)
        ahead.append(len(whole._pending))
        assert feeder.is_alive()  # held back: it may not run ahead without bound
        gate.set()
        feeder.join(5)
        assert not feeder.is_alive()
        assert whole.hexdigest() == hashlib.sha256(b"x" * 4096 * 50).hexdigest()
    assert ahead == [HASH_AHEAD]  # the oldest is being waited on


def test_an_abandoned_hash_waits_for_what_it_handed_over() -> None:
    with ThreadPoolExecutor(1) as pool:
        whole = WholeFileHash(pool)
        for piece in _pieces(5):
            whole.update(piece)
        whole.abandon()
        assert not whole._pending
