"""`LeaseInfo`: the body of the lock object, as JSON."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import orjson

__all__ = ["HOST", "LeaseInfo", "pid_alive"]

HOST: Final = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who holds the DB lock, and until when (the lock object's body)."""

    owner: str
    """Unique per lock object (a uuid4 hex), or ``"foreign"`` for a body we did not write."""
    host: str
    """Host name of the holder."""
    pid: int
    """Process id of the holder on `host`."""
    acquired: float
    """Wall-clock time of acquisition, seconds since the epoch."""
    expires: float
    """Wall-clock time after which the lease may be taken over (renewals move it); 0 for a
    lock that does not expire (local disk's ``flock``: held until its process ends)."""
    token: int
    """Fencing token: grows with every new holder (a take-over adds one)."""

    @classmethod
    def new(cls, owner: str, ttl: float, previous: LeaseInfo | None) -> LeaseInfo:
        """Return a lease for `owner` from now (`ttl` 0: no expiry), token above `previous`'s."""
        now = time.time()
        token = max(time.time_ns(), previous.token + 1 if previous else 0)
        return cls(owner, HOST, os.getpid(), now, now + ttl if ttl else 0.0, token)

    @classmethod
    def parse(cls, data: bytes) -> LeaseInfo | None:
        """Parse a lease body; None for one metatree did not write (metatreedb's empty file)."""
        try:
            raw: Any = orjson.loads(data)
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None

    @classmethod
    def foreign(cls, seen: float) -> LeaseInfo:
        """Stand-in for a lock object another client wrote (no holder known)."""
        return cls("foreign", "", 0, seen, seen, 0)

    def to_bytes(self) -> bytes:
        """Serialise (never empty, so a lease is told apart from metatreedb's empty file)."""
        return orjson.dumps(asdict(self))

    def renewed(self, ttl: float) -> LeaseInfo:
        """Return the same lease, expiring `ttl` seconds from now."""
        return replace(self, expires=time.time() + ttl)

    def is_dead(self, margin: float = 0.0) -> bool:
        """Expired (by more than `margin` seconds), or its process is gone on this host."""
        if self.expires and self.expires + margin < time.time():
            return True
        return self.host == HOST and not pid_alive(self.pid)

    def describe(self) -> str:
        """Describe the holder for errors and `lock_status`."""
        if self.owner == "foreign":
            return "a client that is not metatree (metatreedb 0.2.3?), no expiry known"
        if not self.expires:
            return f"{self.owner} (pid {self.pid} on {self.host}, held until it exits)"
        left = self.expires - time.time()
        return f"{self.owner} (pid {self.pid} on {self.host}, lease ends in {left:.1f}s)"
