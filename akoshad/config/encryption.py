"""The ``encryption:`` group: age recipients (public keys) uploads are sealed to, the
identity file that reads them back, and whether ``memories.json`` is sealed too.

The daemon needs only ``recipients``; ``identity_file`` is checked (exists, is an age
identity, warns when others may read it) only by :meth:`Encryption.load_identities`, which
``verify``, ``restore`` and ``drill`` call when they need it, so the identity can live
offline; the daemon warns once (start, reload) when others may read it
(:meth:`Encryption.exposed_identity`). ``pyrage`` is imported only when a recipient is configured.

A recipient that is not an age public key is a configuration error (exit 78) naming its
entry; the value is shown only when it looks like a public key (never a secret key pasted
in the wrong place).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from akoshad.config.checks import check_absolute

if TYPE_CHECKING:
    from akoshad.storage.crypto import Identities, Recipients

MAX_RECIPIENTS = 32  # as akoshad.storage.crypto (kept in step by a test)
_SECRET_PREFIX = "AGE-SECRET-KEY-"
_PUBLIC_PREFIX = "age1"


def check_recipient(value: str) -> str:
    """``value`` as the canonical age X25519 public key; ``ValueError`` (one line, never
    echoing anything but a public-looking prefix) otherwise."""
    value = value.strip()
    if value.upper().startswith(_SECRET_PREFIX):
        raise ValueError(
            "is an age identity (a secret key), not a recipient: put its public key "
            "(age1..., printed by `akoshad keygen` or `age-keygen -y`) here and keep the "
            "identity private"
        )
    import pyrage
    from pyrage import x25519

    from akoshad.storage.age_write import low_order, recipient_bytes

    try:
        canonical = str(x25519.Recipient.from_str(value))
    except pyrage.RecipientError:
        shown = f" ({value[:16]}...)" if value.startswith(_PUBLIC_PREFIX) else ""
        raise ValueError(
            f"not an age public key{shown}: expected age1... as `akoshad keygen` prints it"
        ) from None
    if low_order(recipient_bytes(canonical)):
        raise ValueError(
            f"not a usable age public key ({canonical[:16]}...): a low-order point, "
            "nothing can be encrypted to it; use one `akoshad keygen` prints"
        )
    return canonical


Recipient = Annotated[str, AfterValidator(check_recipient)]


class Encryption(BaseModel):
    """The ``encryption:`` configuration group (off while ``recipients`` is empty)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipients: list[Recipient] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description="age public keys (age1...) uploads are encrypted to; empty = off",
    )
    identity_file: Path | None = Field(
        default=None,
        description="the age identity (secret key) file; needed only by verify, restore "
        "and drill, so it can stay offline",
    )
    encrypt_memories: bool = Field(
        default=False,
        description="also encrypt memories.json (Akosha then cannot read it from the bucket)",
    )

    @field_validator("recipients", mode="before")
    @classmethod
    def _left_empty(cls, value: object) -> object:
        """``recipients:`` with every entry commented out (YAML's null) sets nothing, as a
        list left without a value does at the top level: none, encryption off."""
        return [] if value is None else value

    @field_validator("recipients")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("identity_file", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if not isinstance(value, str | Path):
            return value
        if _SECRET_PREFIX in str(value).upper():  # never echoed: it is the secret key
            raise ValueError(
                "holds an age identity (the secret key itself), not the path of a file: "
                "save it in a file of mode 0600 and give that file's path"
            )
        return check_absolute(Path(os.path.expanduser(str(value))))

    @property
    def enabled(self) -> bool:
        """True when uploads are to be encrypted (at least one recipient)."""
        return bool(self.recipients)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What is accepted but likely not meant: ``encrypt_memories`` with no recipient."""
        if not self.encrypt_memories or self.enabled:
            return ()
        return (
            "encryption.encrypt_memories is true but encryption.recipients is empty: "
            "nothing is encrypted, memories.json included (list an age public key in "
            "encryption.recipients, or set encrypt_memories: false)",
        )

    def parsed_recipients(self) -> Recipients:
        """The recipients, parsed for :func:`akoshad.storage.crypto.seal` (only when
        :attr:`enabled`; raises ``BadRecipient`` otherwise)."""
        from akoshad.storage.crypto import Recipients

        return Recipients.parse(self.recipients)

    def load_identities(
        self, override: Path | None = None, warn: Callable[[str], None] | None = None
    ) -> Identities:
        """Read the identity (``override``, e.g. ``--identity``, else ``identity_file``).

        One-line errors (``IdentityError``, exit 1): not configured, missing, unreadable,
        not an age identity. A file that group or others may read is accepted and
        ``warn`` is called with one line saying so (and how to fix it)."""
        from akoshad.storage.crypto import IdentityNeeded, load_identity

        path = override or self.identity_file
        if path is None:
            raise IdentityNeeded(
                "encrypted uploads need the age identity: set encryption.identity_file "
                "(or pass --identity FILE)"
            )
        identities = load_identity(Path(os.path.expanduser(str(path))))
        for line in identities.warnings:
            if warn is not None:
                warn(line)
        return identities

    def exposed_identity(self) -> str | None:
        """The one-line warning when ``identity_file`` is set and group or others may read
        it, else None (nor when it cannot be read: whoever needs it says so). Blocking."""
        from akoshad.storage.crypto import readable_by_others

        if self.identity_file is None:
            return None
        path = Path(os.path.expanduser(str(self.identity_file)))
        try:
            return readable_by_others(path, os.stat(path).st_mode)
        except OSError:
            return None

    def identities_if_set(self, warn: Callable[[str], None] | None = None) -> Identities | None:
        """:meth:`load_identities` when ``identity_file`` is set (its errors raised), else
        None: an unencrypted upload needs none, an encrypted one then says it needs it."""
        return None if self.identity_file is None else self.load_identities(warn=warn)


# Uploads are encrypted (``pipeline.sealing``). Were this False, a daemon with recipients
# would refuse to start rather than upload in the clear what the user asked to seal.
UPLOADS_ENCRYPTED = True


def unavailable(encryption: Encryption) -> str | None:
    """One line when ``encryption`` asks for what this akoshad cannot do yet (else None)."""
    if encryption.enabled and not UPLOADS_ENCRYPTED:
        return (
            "encryption.recipients is set, but this akoshad does not encrypt uploads yet: "
            "it refuses to upload in the clear (remove encryption.recipients to upload "
            "unencrypted)"
        )
    return None
