"""Every shipped configuration example validates, and the main one names every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.config import CloudSync, Settings, load_settings

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml"))


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "akoshad.example.yaml",
        "r2.example.yaml",
        "aws-s3.example.yaml",
        "local-seaweedfs.example.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path, tmp_path: Path) -> None:
    load_settings(path, environ={"HOME": str(tmp_path)})


def test_main_example_lists_every_key() -> None:
    text = (EXAMPLES[0].parent / "akoshad.example.yaml").read_text()
    for name in [*Settings.model_fields, *CloudSync.model_fields]:
        assert f"{name}:" in text, name
