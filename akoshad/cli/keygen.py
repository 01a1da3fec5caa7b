"""``akoshad keygen [--output PATH]``: a new age identity for ``encryption:``.

The identity (the secret key) is written in ``age-keygen``'s format, mode 0600, created
exclusively (an existing file, or a link, is never overwritten: exit 1); the directories
made for it are 0700. Its recipient (the public key) is printed alone on stdout, so that
``akoshad keygen > recipient.txt`` or ``$(akoshad keygen)`` gets just the key; where to put
it and how to keep the identity goes to stderr. The secret never reaches a screen.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from akoshad.fastpath import config_home
from akoshad.names import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from akoshad.private import make_private_dirs

IDENTITY_NAME = "identity.txt"


def default_identity_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/akoshad/identity.txt`` (default ``~/.config``)."""
    return config_home(environ) / "akoshad" / IDENTITY_NAME


def hint(path: Path, recipient: str) -> str:
    """What to do next (stderr): configure the recipient, keep the identity safe."""
    return "\n".join(
        [
            f"akoshad: wrote a new age identity to {path} (mode 0600)",
            "akoshad: put its public key (printed on stdout) in the configuration:",
            "  encryption:",
            f"    recipients: [{recipient}]",
            "akoshad: the daemon needs only the public key; verify, restore and drill need "
            f"the identity (encryption.identity_file: {path}, or --identity).",
            "akoshad: keep a copy of the identity somewhere safe, off this machine: if it is "
            "lost, every upload encrypted to it is lost for good.",
        ]
    )


def cmd_keygen(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Write the identity, print the recipient; exit 1 (one line) when it cannot."""
    from akoshad.storage.crypto import write_new_identity

    if args.output is not None and not str(args.output).strip():
        print("akoshad: --output is empty: name the file to write the identity to", file=sys.stderr)
        return EXIT_USAGE
    if args.output is not None and str(args.output).strip() == "-":
        print(
            "akoshad: --output - would be stdout: keygen never prints the identity (the "
            "secret key); name the file to write it to",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.output is not None and str(args.output).endswith("/"):
        print(
            f"akoshad: --output {args.output} ends with '/', a directory: name the file to "
            f"write the identity to ({args.output}{IDENTITY_NAME}, say)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    raw = args.output or default_identity_path(environ)
    # absolute: the hint's identity_file must not depend on the daemon's working directory
    path = Path(os.path.expanduser(str(raw))).absolute()
    try:
        make_private_dirs(path.parent)
        recipient = write_new_identity(path)
    except FileExistsError:
        what = (
            "is a directory: --output names the file to write"
            if path.is_dir() and not path.is_symlink()
            else "already exists: keygen never overwrites an identity"
        )
        print(f"akoshad: {path} {what} (pick another --output)", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"akoshad: cannot write the identity {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    unprinted = _print_recipient(recipient)
    print(hint(path, recipient), file=sys.stderr)
    if unprinted is None:
        return EXIT_OK
    print(
        f"akoshad: the identity is written to {path}, but its public key could not be "
        f"printed on stdout ({unprinted}): it is on that file's '# public key:' line",
        file=sys.stderr,
    )
    return EXIT_FAIL


def _print_recipient(recipient: str) -> str | None:
    """The recipient on stdout; why it could not be (a full disk, a closed stdout, a
    reader gone), else None."""
    if sys.stdout is None:  # started with stdout closed
        return "stdout is closed"
    try:
        print(recipient, flush=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
