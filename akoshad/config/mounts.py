"""Whether a place of akoshad's own shows inside ``data_dir`` through a mount (a bind
mount of a directory above the state or the outbox, made under ``data_dir``): compared
paths do not see it, and the daemon then backs up its own outbox, each upload a change
for the next, without end."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPED = re.compile(r"\\([0-7]{3})")

Mount = tuple[str, str, str]  # (device, the directory of its file system it shows, where)


def _unescape(field: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/PID/mountinfo`` text, in its order."""
    out: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            out.append((fields[2], _unescape(fields[3]), _unescape(fields[4])))
    return out


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _on_its_fs(path: str, mounts: list[Mount]) -> tuple[str, str] | None:
    """(device, its path within that file system) of the resolved ``path``: the mount
    with the longest mount point above it, the one listed last of those (it covers the
    others)."""
    best: Mount | None = None
    for mount in mounts:
        if _below(path, mount[2]) and (best is None or len(mount[2]) >= len(best[2])):
            best = mount
    if best is None:
        return None
    dev, root, point = best
    rest = path[len(point) :] if point != "/" else path
    return dev, root.rstrip("/") + "/" + rest.lstrip("/")


def mounted_inside(
    data_dir: Path, own: Mapping[str, Path | None], mounts: list[Mount] | None = None
) -> str | None:
    """One line when a place of ``own`` (name -> path) shows inside ``data_dir`` through
    a mount at or below it (``mounts``: this process's, read when None), else None."""
    if mounts is None:
        try:
            mounts = parse_mountinfo(MOUNTINFO.read_text(errors="surrogateescape"))
        except OSError:  # no /proc (macOS): not checked
            return None
    data = os.path.realpath(data_dir)
    inside = [m for m in mounts if _below(m[2], data)]
    for name, path in own.items():
        if path is None or not inside:
            continue
        place = _on_its_fs(os.path.realpath(path), mounts)
        if place is None:
            continue
        for dev, root, point in inside:
            if dev == place[0] and _below(place[1], root):
                return (
                    f"{name} {path} shows inside data_dir {data_dir} through the mount at "
                    f"{point}: the daemon would back up its own files forever; unmount it "
                    f"or keep {name} out of what it shows"
                )
    return None
