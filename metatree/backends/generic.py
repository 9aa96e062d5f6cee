"""Any other fsspec filesystem: `GenericBackend`, the plain fsspec primitives of `Backend`.

Exact where a single PUT is atomic; its exclusive create is only as atomic as fsspec's
``mode="create"`` on that filesystem. Its DB lock is the memory backend's `ContentLeaseStore`,
which excludes only the threads of this process: opening such a database warns, and the
fix is a backend of its own with a real lock (docs/backends.md).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from metatree._locking import LeaseLock
from metatree.backends.base import Backend
from metatree.backends.memory import ContentLeaseStore
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from metatree._locking import BaseLock
    from metatree._storage import Storage

__all__ = ["GenericBackend"]


class GenericBackend(Backend):
    """A filesystem no backend is registered for."""

    def make_lock(
        self, storage: Storage, rel: str, *, ttl: float, timeout: float, **kwargs: Any
    ) -> BaseLock:
        """Return an in-process lease, with a warning that it excludes no other process."""
        warnings.warn(
            f"no backend is registered for {type(self.fs).__name__}: the DB lock is exclusive "
            "only among the threads of this process (see metatree.backends.register_backend)",
            MetatreeWarning,
            stacklevel=5,
        )
        return LeaseLock(ContentLeaseStore(storage, rel), ttl=ttl, timeout=timeout, **kwargs)
