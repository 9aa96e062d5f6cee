"""The bad-input catalogue (placeholder; being written)."""

from __future__ import annotations

__all__ = ["BadInputTests"]


class BadInputTests:
    """Bad input gets a typed error and leaves the storage byte-for-byte unchanged."""
