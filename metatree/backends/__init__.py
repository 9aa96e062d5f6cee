"""Backends: one module per filesystem, each holding its adapter and its DB-lock strategy.

The public API for adding a backend (docs/backends.md): subclass `Backend`, state its
`Capabilities`, give it a lock (`Backend.lease_store` on the store's conditional writes, or
`Backend.make_lock`), register it for a filesystem class with `register_backend`, and run
`metatree.testing.BackendTests` and the conformance suite on it.
"""

from __future__ import annotations

from metatree._locking import BaseLock, LeaseLock, LeaseStore
from metatree._locking._info import MAX_BODY as MAX_LEASE_BYTES
from metatree._transfer import Download, Upload
from metatree.backends._registry import backend_for, register_backend
from metatree.backends.base import (
    MISSING,
    Backend,
    Capabilities,
    Changed,
    Stopped,
    Version,
    translate_errors,
)

__all__ = [
    "MAX_LEASE_BYTES",
    "MISSING",
    "Backend",
    "BaseLock",
    "Capabilities",
    "Changed",
    "Download",
    "LeaseLock",
    "LeaseStore",
    "Stopped",
    "Upload",
    "Version",
    "backend_for",
    "register_backend",
    "translate_errors",
]
