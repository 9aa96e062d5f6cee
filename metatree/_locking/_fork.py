"""`in_forked_child`: run a callback in the child after ``os.fork``, where fork exists.

Locks keep per-process state (mutexes, owner ids, held descriptors) that a forked child must
not inherit. ``os.register_at_fork`` is POSIX-only: Windows has no ``fork`` (and no such
function), so there is nothing to reset there, and importing metatree must not fail on it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["in_forked_child"]


def in_forked_child(callback: Callable[[], object]) -> None:
    """Call `callback` in every child forked from now on; nothing where ``fork`` does not exist."""
    register = getattr(os, "register_at_fork", None)
    if register is not None:
        register(after_in_child=callback)
