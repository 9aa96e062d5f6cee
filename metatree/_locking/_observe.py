"""How long this process has seen a lock object's body unchanged, on the monotonic clock.

Waiters never compare a holder's wall-clock expiry with their own clock (a clock 30 s fast
would take a live lease, one 30 s slow would wait on a dead one): a lease is dead when its body
stayed the same for longer than its ttl (a live holder rewrites it every ttl / 3). The record
is process-wide, so a new lock object (a tree opened again, a retry after `LockTimeout`) goes on
counting from the first sighting instead of starting over, and the highest fencing token seen
per lock object is kept here too (tokens grow over take-overs even when clocks disagree).

A body that may repeat (metatreedb's empty ``.lock``, recreated after every release) only
counts while it is watched without a gap: seen again after a pause, it may be a new object.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Final

from metatree._locking._fork import in_forked_child

__all__ = ["highest_token", "note_token", "unchanged_for"]

_GAP: Final = 5.0
"""Seconds between two sightings after which a repeatable body counts from zero again."""
_LIMIT: Final = 1024  # lock objects remembered per process

_mutex = threading.Lock()
_seen: dict[str, tuple[bytes, float, float]] = {}  # url -> (digest, first seen, last seen)
_tokens: dict[str, int] = {}


def _after_fork_in_child() -> None:
    global _mutex
    _mutex = threading.Lock()


in_forked_child(_after_fork_in_child)


def unchanged_for(url: str, body: bytes, *, repeatable: bool = False) -> float:
    """Record a sighting of `body` at `url`; return for how many seconds it has been the same."""
    digest = hashlib.blake2b(body, digest_size=16).digest()
    now = time.monotonic()
    with _mutex:
        previous = _seen.get(url)
        first = now
        same = previous is not None and previous[0] == digest
        if previous is not None and same and (not repeatable or now - previous[2] <= _GAP):
            first = previous[1]
        if len(_seen) >= _LIMIT and url not in _seen:
            _seen.pop(next(iter(_seen)))
        _seen[url] = (digest, first, now)
    return now - first


def note_token(url: str, token: int) -> None:
    """Remember `token` as seen on the lock object at `url`."""
    with _mutex:
        if token > _tokens.get(url, -1):
            if len(_tokens) >= _LIMIT and url not in _tokens:
                _tokens.pop(next(iter(_tokens)))
            _tokens[url] = token


def highest_token(url: str) -> int:
    """Return the highest fencing token this process has seen at `url` (0 if none)."""
    with _mutex:
        return _tokens.get(url, 0)
