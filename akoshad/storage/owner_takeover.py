"""The quiet time after a takeover: for :data:`TAKEOVER_QUIET` the new owner's prune
deletes nothing (:func:`settle_takeover`), so that an upload the previous owner still had
on the wire lands or is dropped first (its cached check, at most ``CHECK_INTERVAL`` old,
let it through)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from akoshad.errors import PermanentError
from akoshad.storage.owner import CHECK_INTERVAL, NotOwner, OwnerRecord

# after a takeover, a prune deletes nothing for this long: the previous owner's upload that
# its last check (at most CHECK_INTERVAL old) let through may still be landing its manifest
TAKEOVER_QUIET = 5 * CHECK_INTERVAL
# a record dated up to this far ahead of the clock still counts as just made: it was written
# by this machine's clock before that was set back (a clock minutes ahead that NTP set right
# within the quiet time), so the quiet time runs until TAKEOVER_QUIET after the time it
# records; one dated further ahead (a clock that ran days ahead) counts as long ago, rather
# than hold prunes off that long
SINCE_SKEW = 86400.0


class TakeoverSettling(NotOwner):
    """This machine took the id over less than :data:`TAKEOVER_QUIET` ago: a prune now
    could sweep the packs of an upload the previous owner is still committing (its cached
    check let it through), so the prune deletes nothing yet and says until when."""

    def __init__(self, system_id: str, record: OwnerRecord, until: datetime) -> None:
        previous = f" ({record.previous_host})" if record.previous_host else ""
        PermanentError.__init__(
            self,
            f"this machine took system_id {system_id!r} over at {record.since}: a prune "
            f"deletes nothing until {until.isoformat(timespec='seconds')}, "
            f"{TAKEOVER_QUIET / 60:g} min after, so that an upload the previous "
            f"owner{previous} still had on the wire lands or is dropped first",
            fix="prune again after that; nothing was deleted",
        )
        self.record = record


def settle_takeover(record: OwnerRecord, system_id: str, now: datetime | None = None) -> None:
    """Raise :class:`TakeoverSettling` while ``record`` (this machine's) is a takeover
    made less than :data:`TAKEOVER_QUIET` ago; a ``since`` that cannot be read counts as
    long ago."""
    if record.how != "takeover":
        return
    try:
        since = datetime.fromisoformat(record.since)
    except ValueError:
        return
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    age = ((now or datetime.now(UTC)) - since).total_seconds()
    if -SINCE_SKEW <= age < TAKEOVER_QUIET:
        raise TakeoverSettling(system_id, record, since + timedelta(seconds=TAKEOVER_QUIET))
