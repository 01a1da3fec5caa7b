"""What tells one akoshad's code from another's: the version string is the same for every
build from git, so whatever must not take an upgraded akoshad for the one before (the
quick check of ``run --once``) keys on a digest of the package's files. Standard library
only (the quick check imports it before anything heavy)."""

from __future__ import annotations

import functools
import hashlib
import os

PACKAGE = os.path.dirname(os.path.abspath(__file__))


@functools.cache
def code_digest(package: str = PACKAGE) -> str | None:
    """A digest of the names and bytes of every file of the package at ``package`` (its
    modules and data; ``__pycache__`` left out), or None when they cannot all be read (a
    package in a zip file, an unreadable file). About 2 MB, read in a few milliseconds."""
    try:
        return _tree_digest(package)
    except OSError:
        return None


def _raise(exc: OSError) -> None:
    raise exc


def _tree_digest(package: str) -> str | None:
    h = hashlib.sha256()
    found = False
    for top, dirs, files in os.walk(package, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            path = os.path.join(top, name)
            h.update(os.path.relpath(path, package).encode("utf-8", "surrogateescape") + b"\0")
            with open(path, "rb") as file:
                h.update(hashlib.sha256(file.read()).digest())
            found = True
    return h.hexdigest() if found else None
