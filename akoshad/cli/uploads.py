"""``akoshad uploads [--json] [--system-id ID]``: the uploads in the target, oldest first."""

from __future__ import annotations

import argparse
import asyncio
import json

from akoshad.config import Settings
from akoshad.restore.listing import no_uploads, render_table, upload_rows
from akoshad.restore.readback import _with_target, identities_of
from akoshad.targets.base import ReadCheck


async def cmd_uploads(args: argparse.Namespace, settings: Settings) -> int:
    """Print the uploads (a table, or a JSON list with ``--json``); exit 0, also with none.
    Encrypted uploads are read with the identity (``--identity`` or
    ``encryption.identity_file``) when one is set. A target that cannot be read (a missing
    bucket, refused credentials) or a set identity that cannot be read raises: exit 1."""
    identities = await asyncio.to_thread(identities_of, settings)
    target, system_id = await _with_target(settings, args)
    try:
        if isinstance(target, ReadCheck):
            await target.check()  # a missing bucket is an error, not "no uploads"
        rows = await upload_rows(target, system_id, identities)
        none = None if rows or args.json else await no_uploads(target, system_id)
    finally:
        await target.close()
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
    elif none is not None:
        print(none)
    else:
        print(render_table(rows))
    return 0
