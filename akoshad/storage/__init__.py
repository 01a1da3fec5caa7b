"""Format 2 storage: chunks, packs, retention and prune."""
