"""Hostile roots and stored names, recursive puts and gets, removal order, argument checks (issue 9).

Part of the conformance suite (mixed into `BackendConformance`): every test runs on every
backend, and skips itself only when the backend lacks a capability it needs.
"""

from __future__ import annotations

__all__ = ["StorageHardeningTests"]


class StorageHardeningTests:
    """Hostile roots and stored names, recursive puts and gets, removal order, argument checks (issue 9)."""
