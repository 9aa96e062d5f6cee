"""The hypothesis state machine (placeholder; being written)."""

from __future__ import annotations

__all__ = ["StatefulTests"]


class StatefulTests:
    """put/update/find/get/remove checked against an in-memory model."""
