"""Upload targets behind one small protocol, found by name in a registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from akoshad.targets.base import Compression, StoredObject, Target

if TYPE_CHECKING:
    from akoshad.config import Settings
    from akoshad.events import RequestCounter

__all__ = ["REGISTRY", "Compression", "StoredObject", "Target", "make_target"]


def _local(settings: Settings, _counter: RequestCounter | None) -> Target:
    from akoshad.targets.local import LocalTarget

    own = f"systems/{settings.cloud_sync.system_id}/"  # a start cleans up only there
    return LocalTarget(settings.local_target_dir, own)  # counted from outside (metrics)


def _cloud(settings: Settings, counter: RequestCounter | None) -> Target:
    from akoshad.targets.s3.target import S3Target

    target: Target = S3Target.from_settings(settings, counter)
    return target


REGISTRY: dict[str, Callable[[Settings, RequestCounter | None], Target]] = {
    "local": _local,
    "cloud": _cloud,
}


def make_target(name: str, settings: Settings, counter: RequestCounter | None = None) -> Target:
    """Build the target registered under ``name`` from validated settings; a target that
    counts its own requests (S3, by operation name) counts them with ``counter``."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return factory(settings, counter)
