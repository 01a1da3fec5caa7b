"""The watch over large files that staging has no room to copy: when each may be read in
place (left alone for QUIET_SECONDS of the monotonic clock, or waiting MAX_WAIT_SECONDS)."""

from __future__ import annotations

from akoshad.fileio import LiveStat
from akoshad.pipeline.capture.quiet import MAX_WAIT_SECONDS, QUIET_SECONDS, QuietWatch, copy_watch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stat(size: int, inode: int = 7) -> LiveStat:
    return LiveStat(size, size * 10, size * 10, inode)


def test_ready_once_left_alone_for_the_quiet_time() -> None:
    clock = Clock()
    watch = QuietWatch(clock)
    assert not watch.ready("big", stat(1))  # first look: it waits from now
    clock.now += QUIET_SECONDS - 1
    assert not watch.ready("big", stat(1))
    clock.now += 1
    assert watch.ready("big", stat(1))
    assert "big" not in watch  # released: a later move starts over


def test_a_change_starts_the_quiet_time_again_but_not_the_wait() -> None:
    clock = Clock()
    watch = QuietWatch(clock)
    assert not watch.ready("big", stat(1))
    for size in range(2, 60):  # written between every two looks
        clock.now += QUIET_SECONDS
        assert not watch.ready("big", stat(size))
    clock.now += MAX_WAIT_SECONDS  # never left alone: read in place all the same
    assert watch.ready("big", stat(99))


def test_another_file_by_the_same_name_starts_over() -> None:
    """A file deleted while it waited, and a new one by its name: the new one is not read
    in place at once on the strength of the old one's hour of waiting."""
    clock = Clock()
    watch = QuietWatch(clock)
    assert not watch.ready("big", stat(1, inode=7))
    clock.now += 2 * MAX_WAIT_SECONDS
    assert not watch.ready("big", stat(5, inode=8))
    clock.now += QUIET_SECONDS
    assert watch.ready("big", stat(5, inode=8))


def test_a_failed_copy_is_remembered_until_released_or_discarded() -> None:
    clock = Clock()
    watch = QuietWatch(clock)
    assert not watch.copy_failed("big")
    watch.add_failed_copy("big", stat(1))
    assert watch.copy_failed("big")
    assert not watch.ready("big", stat(1))
    assert watch.copy_failed("big")
    watch.discard("big")
    assert not watch.copy_failed("big") and "big" not in watch


def test_wait_starts_over_from_now() -> None:
    """``wait``: a copy that kept changing waits from now, whatever it waited before."""
    clock = Clock()
    watch = QuietWatch(clock)
    assert not watch.ready("big", stat(1))
    clock.now += MAX_WAIT_SECONDS - 1
    watch.wait("big", stat(1))
    clock.now += QUIET_SECONDS - 1
    assert not watch.ready("big", stat(1))  # an hour of waiting before does not count
    clock.now += 1
    assert watch.ready("big", stat(1))


def test_the_copies_watch_is_ready_when_unchanged_since_the_look_before() -> None:
    """``copy_watch``: no quiet minute needed, only a look that finds the file as the look
    before did; a change at each look holds it back for the hour."""
    clock = Clock()
    watch = copy_watch(clock)
    watch.wait("big", stat(1))
    clock.now += 1
    assert not watch.ready("big", stat(2))  # changed since
    clock.now += 1
    assert watch.ready("big", stat(2))  # as the look before found it
    watch.wait("big", stat(3))
    for size in range(4, 40):
        clock.now += QUIET_SECONDS
        assert not watch.ready("big", stat(size))
    clock.now += MAX_WAIT_SECONDS
    assert watch.ready("big", stat(99))


def test_the_copies_watch_takes_a_new_file_at_once() -> None:
    clock = Clock()
    watch = copy_watch(clock)
    watch.wait("big", stat(1, inode=7))
    assert watch.ready("big", stat(1, inode=8))  # saved by a rename: copied now
    assert "big" not in watch
