"""``akoshad uploads --help`` says what its STORED column counts, as README does: in
format 2 an upload's own folder holds only its manifest, its bytes are in shared packs."""

from __future__ import annotations

import pytest

from akoshad.cli.parser import build_parser


def test_uploads_help_says_stored_counts_the_packs_an_upload_added(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["uploads", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the objects in its own folder, and the shared packs and documents" in text
