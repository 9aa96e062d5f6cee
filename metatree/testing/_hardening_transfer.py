"""Interrupted and concurrent transfers: aborted uploads, torn reads, fenced writes, timeouts (issues 9, 19).

Part of the conformance suite (mixed into `BackendConformance`): every test runs on every
backend, and skips itself only when the backend lacks a capability it needs.
"""

from __future__ import annotations

__all__ = ["TransferHardeningTests"]


class TransferHardeningTests:
    """Interrupted and concurrent transfers: aborted uploads, torn reads, fenced writes, timeouts (issues 9, 19)."""
