"""Configuration: one frozen, validated model built once and passed down.

Sources, highest precedence first: command line overrides, ``AKOSHAD_`` environment
(``__`` nests: ``AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET``), the YAML file, session-buddy's own
``cloud_sync`` settings (its ``SESSION_BUDDY_CLOUD_SYNC__*`` variables, then its
``config.yaml``; see ``sources``), defaults. Unknown file keys and unknown
``AKOSHAD_`` variables are errors. ``config`` is the only package that reads the process
environment.

``model`` holds the settings' model, ``load`` merges and validates the sources,
``sources`` says where each value came from.
"""

from akoshad.config.encryption import Encryption
from akoshad.config.groups import (
    MIN_CHUNK_MB,
    CloudSync,
    Webhook,
    WebhookEvent,
    slug_system_id,
)
from akoshad.config.load import (
    LoadedConfig,
    client_settings,
    debug_enabled,
    fallback_socket_path,
    load_config,
    load_settings,
    process_environ,
)
from akoshad.config.model import ENV_PREFIX, Settings

__all__ = [
    "ENV_PREFIX",
    "MIN_CHUNK_MB",
    "CloudSync",
    "Encryption",
    "LoadedConfig",
    "Settings",
    "Webhook",
    "WebhookEvent",
    "client_settings",
    "debug_enabled",
    "fallback_socket_path",
    "load_config",
    "load_settings",
    "process_environ",
    "slug_system_id",
]
