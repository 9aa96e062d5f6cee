"""The lock under failure: leaked flocks, fencing, forks, skew, planted lease bodies (issues 9, 19).

Part of the conformance suite (mixed into `BackendConformance`): every test runs on every
backend, and skips itself only when the backend lacks a capability it needs.
"""

from __future__ import annotations

__all__ = ["LockHardeningTests"]


class LockHardeningTests:
    """The lock under failure: leaked flocks, fencing, forks, skew, planted lease bodies (issues 9, 19)."""
