"""What the state database's parts share: one transaction at a time, in its thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class StoreBase:
    """``transaction(fn)`` runs ``fn(connection)`` as one transaction in the database's
    thread (implemented by :class:`~akoshad.store.db.StateDB`)."""

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError
