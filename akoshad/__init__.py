"""akoshad: keeps a session-buddy memory store synced to Akosha."""

__version__ = "0.1.0"
