"""The DB lock's protocol, shared by the strategies each backend module brings (`Backend.make_lock`)."""

from __future__ import annotations

from metatree._locking._base import BaseLock, NullLock
from metatree._locking._info import LeaseInfo
from metatree._locking._lease import LeaseLock, LeaseStore
from metatree._locking._manager import check_lock_options, make_lock

__all__ = [
    "BaseLock",
    "LeaseInfo",
    "LeaseLock",
    "LeaseStore",
    "NullLock",
    "check_lock_options",
    "make_lock",
]
