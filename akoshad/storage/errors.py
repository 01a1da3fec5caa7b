"""Typed errors of the storage engine."""

from __future__ import annotations

from akoshad.errors import AkoshadError


class StorageError(AkoshadError):
    """Base of the storage engine's errors."""


class RefError(StorageError):
    """A chunk, chunk-list or index-part reference read from a manifest is malformed."""


class CorruptChunk(StorageError):
    """A stored chunk does not decode to what its reference promises."""


class DecompressionBomb(CorruptChunk):
    """A stored chunk inflates beyond its declared size (decoding stopped at the bound)."""


class PackError(StorageError):
    """A pack could not be written, or a byte range could not be read from one."""
