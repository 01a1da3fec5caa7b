"""What a restore takes: the upload (``--latest``, ``--upload-id``, ``--at TIME``) and the
store paths (``--path GLOB``).

``--at`` picks the newest upload whose manifest's ``uploaded_at`` is at or before TIME
(ISO 8601, local time unless it has an offset; a local time that daylight saving makes
happen twice, or never, is refused). ``--path`` globs are shell-style and
matched against the whole store path, ``*`` also matching ``/`` (``fnmatchcase`` on the
whole path); a DuckDB database (``.duckdb``, or any name its entry's kind says is one)
always brings its ``.wal`` along.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import date, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Protocol, TypeVar

from loguru import logger

from akoshad.errors import AkoshadError
from akoshad.manifest.layout import upload_time

WAL_SUFFIX = ".wal"
# DuckDB's WAL of a checkpoint under way: never captured (its database waits for it to go)
CHECKPOINT_WAL_SUFFIX = ".wal.checkpoint"
DUCKDB_SUFFIX = ".duckdb"
DUCKDB_KIND = "duckdb"  # a manifest entry's kind: DuckDB told by the file's header
SQLITE_KIND = "sqlite"
# what SQLite reads beside a database; never captured (the backup API copy holds every commit)
SQLITE_SIDES = ("-wal", "-journal", "-shm")
# An upload id carries the time it was made, next to the manifest's ``uploaded_at``; an id
# dated this far after TIME cannot be at or before it, so its manifest is not even read.
ID_MARGIN = timedelta(days=1)


class SelectError(AkoshadError):
    """No upload or no path matches what was asked (exit 1, one line)."""


class LocalTimeError(ValueError):
    """A local time that daylight saving makes happen twice, or never."""


def parse_at(text: str) -> datetime:
    """``--at`` as an aware datetime: ISO 8601 (``24:00`` too); without an offset, local time.
    ValueError (argparse: a usage error) when it is not ISO 8601; LocalTimeError when it is
    a local time that happens twice (clocks set back) or never (clocks set forward)."""
    text = text.strip()
    when = _iso(text)
    if when.tzinfo is None:
        return _local(when, day=_a_day(text))
    return when


def _a_day(text: str) -> bool:
    """``text`` names the start of a day: a date alone, or a day's ``24:00``."""
    if _END_OF_DAY.match(text):
        return True
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# ISO 8601's end of a day, ``T24:00`` (``24``, ``24:00:00``, ``24:00:00.0``), then its offset
_END_OF_DAY = re.compile(
    r"^(?P<date>[^T ]+)[T ]24(?::?00(?::?00(?:[.,]0+)?)?)?(?P<zone>[Zz+-].*)?$"
)


def _iso(text: str) -> datetime:
    """``datetime.fromisoformat`` with what ISO 8601 allows and it refuses: ``24:00`` (the
    end of a day: the next day's 00:00) and a lowercase ``z`` (RFC 3339)."""
    if text.endswith("z"):
        text = text[:-1] + "Z"
    end = _END_OF_DAY.match(text)
    if end is None:
        return datetime.fromisoformat(text)
    day = datetime.fromisoformat(end["date"])
    if day.date() == date.max:  # the last day datetime holds: its last microsecond
        return datetime.fromisoformat(f"{date.max.isoformat()}T23:59:59.999999{end['zone'] or ''}")
    following = (day.date() + timedelta(days=1)).isoformat()
    return datetime.fromisoformat(f"{following}T00:00{end['zone'] or ''}")


def _local(when: datetime, *, day: bool = False) -> datetime:
    """The naive ``when`` in the local zone, daylight saving included; a time at the edge of
    what datetime holds (``9999-12-31``, ``0001-01-01``: "after every upload", "before
    every upload"), which the zone's rules cannot place, takes the zone's offset of now.
    ``day``: ``when`` is a day's 00:00 asked as a date, never refused: where the clocks
    jump at midnight it is the day's first moment."""
    try:
        early, late = when.replace(fold=0).astimezone(), when.replace(fold=1).astimezone()
    except (OverflowError, ValueError, OSError):
        return when.replace(tzinfo=datetime.now().astimezone().tzinfo)
    if early == late:
        return early
    shown = when.isoformat()
    twice = early.replace(tzinfo=None) == when == late.replace(tzinfo=None)
    if day:  # the day's first moment: the first of two midnights, or the clocks' jump
        return min(early, late) if twice else max(early, late)
    if twice:
        raise LocalTimeError(
            f"{shown} happens twice in local time (the clocks went back): add its offset, "
            f"{_offset(early)} or {_offset(late)}"
        )
    raise LocalTimeError(
        f"{shown} does not exist in local time (the clocks went forward): add an offset, "
        f"{_offset(early)} (the time before the jump) or {_offset(late)} (after it)"
    )


def _offset(when: datetime) -> str:
    """``+02:00``: the offset as ISO 8601 writes it after a time."""
    return when.isoformat(timespec="minutes")[len("2026-01-01T00:00") :]


def at_argument(text: str) -> datetime:
    """The argparse ``type`` of ``--at``."""
    try:
        return parse_at(text)
    except LocalTimeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-30T14:05 or 2026-11-30T14:05+01:00)"
        ) from None


def uploaded_at(manifest: dict[str, Any]) -> datetime | None:
    """The manifest's ``uploaded_at`` (aware), or None when missing or malformed."""
    try:
        when = datetime.fromisoformat(str(manifest.get("uploaded_at")))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def candidates_at(uploads: Sequence[str], when: datetime) -> list[str]:
    """The upload ids worth reading for ``--at when``, newest first: those whose id is not
    dated more than :data:`ID_MARGIN` after ``when`` (ids without a time always are)."""
    out = []
    for upload_id in reversed(uploads):
        made = upload_time(upload_id)
        if made is None or made - when <= ID_MARGIN:  # ``when + ID_MARGIN`` may not exist
            out.append(upload_id)
    return out


class HasPath(Protocol):
    """A manifest entry, whatever its format: it has a store path."""

    @property
    def path(self) -> str: ...


_E = TypeVar("_E", bound=HasPath)


async def pick_at(
    uploads: Sequence[str],
    when: datetime,
    load: Callable[[str], Awaitable[dict[str, Any]]],
    shown: str,
) -> tuple[str, dict[str, Any]]:
    """The newest upload whose manifest's ``uploaded_at`` is at or before ``when``, with its
    manifest. ``load(upload_id)`` reads a manifest, raising AkoshadError when it is
    damaged: SelectError then when its id is dated at or before ``when`` (it may be the
    upload asked for: an older one is not restored in its place, as ``--latest`` does
    not), else that upload is skipped with a warning. SelectError when none is."""
    for upload_id in candidates_at(uploads, when):
        try:
            manifest = await load(upload_id)
        except AkoshadError as exc:
            made = upload_time(upload_id)
            if made is None or made <= when:
                raise SelectError(
                    f"upload {upload_id} of {shown}, perhaps the newest at or before "
                    f"{when.isoformat()}, cannot be read: {exc}; restore an older one by "
                    "its --upload-id (akoshad uploads lists them)"
                ) from None
            logger.warning("ignoring upload {} (dated after the time asked): {}", upload_id, exc)
            continue
        made = uploaded_at(manifest)
        if made is not None and made <= when:
            return upload_id, manifest
    first = f" (the first is {uploads[0]})" if uploads else ""
    raise SelectError(f"no upload of {shown} was made at or before {when.isoformat()}{first}")


def wal_of(path: str, kind: str | None = None) -> str | None:
    """The WAL that goes with a DuckDB database (told by its entry's ``kind``, as capture
    tells it by its header, or by a ``.duckdb`` name), or None."""
    return path + WAL_SUFFIX if kind == DUCKDB_KIND or path.endswith(DUCKDB_SUFFIX) else None


def _wal_of_entry(entry: HasPath) -> str | None:
    kind = getattr(entry, "kind", None)
    return wal_of(entry.path, kind if isinstance(kind, str) else None)


def databases_without_wal(entries: Iterable[HasPath]) -> frozenset[str]:
    """The paths of the DuckDB databases among ``entries`` whose WAL is not among them."""
    listed = list(entries)
    paths = {e.path for e in listed}
    return frozenset(
        e.path for e in listed if (w := _wal_of_entry(e)) is not None and w not in paths
    )


def wal_pairs(entries: Iterable[HasPath]) -> dict[str, str]:
    """DuckDB database path -> its WAL's, for the databases listed with their WAL."""
    listed = list(entries)
    paths = {e.path for e in listed}
    return {e.path: w for e in listed if (w := _wal_of_entry(e)) is not None and w in paths}


def stale_sides(entries: Iterable[HasPath]) -> dict[str, tuple[str, ...]]:
    """For each database among ``entries``, the suffixes of the side files its engine
    would read beside it that the restore does not bring: a DuckDB WAL the upload does
    not hold, a DuckDB checkpoint WAL (never captured), SQLite's ``-wal``, ``-journal``
    and ``-shm``. One left in ``--dest`` (an earlier restore, the live store) would be
    replayed or rolled back into the restored database."""
    listed = list(entries)
    paths = {e.path for e in listed}
    without = databases_without_wal(listed)
    out: dict[str, tuple[str, ...]] = {
        e.path: (WAL_SUFFIX, CHECKPOINT_WAL_SUFFIX)
        if e.path in without
        else (CHECKPOINT_WAL_SUFFIX,)
        for e in listed
        if _wal_of_entry(e) is not None and e.path + CHECKPOINT_WAL_SUFFIX not in paths
    }
    for e in listed:
        if getattr(e, "kind", None) == SQLITE_KIND:
            out[e.path] = tuple(s for s in SQLITE_SIDES if e.path + s not in paths)
    return {p: sides for p, sides in out.items() if sides}


def _relative_glob(glob: str, listed: Collection[str]) -> str | None:
    """The glob a path-like ``glob`` (``/home/u/.claude/data/x``, ``./x``) was meant as:
    its longest tail after a ``/`` that names something (not wildcards alone) and matches
    a store path, else None."""
    if not glob.startswith(("/", "./", "../")):
        return None
    parts = glob.split("/")
    for i in range(1, len(parts)):
        tail = "/".join(parts[i:])
        if any(c.isalnum() for c in tail) and any(
            fnmatchcase(p, tail) or p == tail for p in listed
        ):
            return tail
    return None


def matching_paths(
    paths: Iterable[str], globs: Sequence[str], duckdbs: Collection[str] = ()
) -> set[str]:
    """The store paths any glob matches (whole path, ``*`` crossing ``/``; a glob that is
    a store path also matches that path itself: ``notes [draft].md``), with the WAL
    of every matched DuckDB database (``duckdbs``: those not named ``.duckdb``) and the
    database of every matched WAL: one is never restored without the other. SelectError
    naming every glob that matches nothing (a typo must not pass for a partial restore)."""
    listed = set(paths)
    chosen: set[str] = set()
    unmatched = []
    for glob in globs:
        hits = {p for p in listed if fnmatchcase(p, glob)}
        if glob in listed:  # a name with '[', '*' or '?' in it, given as it is
            hits.add(glob)
        chosen |= hits
        if not hits:
            unmatched.append(glob)
    if unmatched:
        named = ", ".join(repr(g) for g in unmatched)
        folders = [g for g in unmatched if any(p.startswith(g.rstrip("/") + "/") for p in listed)]
        hint = f" (a directory: use '{folders[0].rstrip('/')}/*')" if folders else ""
        relative = [r for r in (_relative_glob(g, listed) for g in unmatched) if r]
        if relative and not hint:
            hint = f" (store paths are relative to data_dir: use {relative[0]!r})"
        raise SelectError(f"--path {named} matches no file of the upload{hint}")
    # each database listed with its WAL, both ways: either one brings the other
    partner = {
        p: w for p in listed if (w := wal_of(p, DUCKDB_KIND if p in duckdbs else None)) in listed
    }
    partner |= {w: p for p, w in partner.items()}
    return chosen | {partner[p] for p in chosen if p in partner}


def select_entries(entries: Sequence[_E], globs: Sequence[str] | None) -> list[_E]:
    """``entries`` restricted to the ``--path`` globs, in their
    order; all of them when no glob is given."""
    if not globs:
        return list(entries)
    duckdbs = {e.path for e in entries if getattr(e, "kind", None) == DUCKDB_KIND}
    chosen = matching_paths((e.path for e in entries), globs, duckdbs)
    return [e for e in entries if e.path in chosen]
