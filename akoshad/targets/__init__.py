"""Upload targets behind one small protocol, found by name in a registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from akoshad.targets.base import Compression, StoredObject, Target

if TYPE_CHECKING:
    from akoshad.config import Settings

__all__ = ["REGISTRY", "Compression", "StoredObject", "Target", "make_target"]


def _local(settings: Settings) -> Target:
    from akoshad.targets.local import LocalTarget

    return LocalTarget(settings.local_target_dir)


def _cloud(settings: Settings) -> Target:
    from akoshad.targets.s3.target import S3Target

    target: Target = S3Target.from_settings(settings)
    return target


REGISTRY: dict[str, Callable[[Settings], Target]] = {"local": _local, "cloud": _cloud}


def make_target(name: str, settings: Settings) -> Target:
    """Build the target registered under ``name`` from validated settings."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return factory(settings)
