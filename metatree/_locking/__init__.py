"""The DB-level lock: a lease object at the root, created with the backend's atomic primitive."""

from __future__ import annotations

from metatree._locking._base import BaseLock, NullLock
from metatree._locking._lease import LeaseInfo, LeaseLock

__all__ = ["BaseLock", "LeaseInfo", "LeaseLock", "NullLock"]
