"""Any other fsspec filesystem: `GenericBackend`, the plain fsspec primitives of `Backend`.

Exact where a single PUT is atomic; its exclusive create is only as atomic as fsspec's
``mode="create"`` on that filesystem. It names no lock of its own, so `Backend.make_lock` gives
it the memory backend's `ContentLeaseStore`, which excludes only the threads of this process:
opening such a database warns, and the fix is a backend of its own with a real lock
(docs/backends.md).
"""

from __future__ import annotations

from metatree.backends.base import Backend

__all__ = ["GenericBackend"]


class GenericBackend(Backend):
    """A filesystem no backend is registered for."""
