"""Names and constants every layer shares, defined once.

Standard library only: the quick ``run --once`` check and the drill worker import it.
"""

from __future__ import annotations

import re

SYSTEM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MANIFEST_NAME = "manifest.json"
MEMORIES_NAME = "memories.json"  # the memories of an upload, beside its files
MEMORY_DB = "reflection.duckdb"  # the store file memories are read from

# Exit codes of ``akoshad`` (sysexits where one fits)
EXIT_OK = 0
EXIT_FAIL = 1  # the operation failed
EXIT_USAGE = 2  # bad command line
EXIT_NO_DAEMON = 3  # no daemon answers on the socket
EXIT_DEGRADED = 69  # EX_UNAVAILABLE: degraded for longer than allowed
EXIT_CONFIG = 78  # EX_CONFIG: bad configuration
