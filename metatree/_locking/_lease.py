"""`LeaseLock`: a lease object created with `Storage.create_exclusive`.

The atomic primitive is the backend's (``link(2)`` on local disk, ``If-None-Match: *`` on S3,
``CREATE overwrite=false`` on WebHDFS, a process-wide mutex in memory): of many writers trying
at once exactly one creates the object. The body says who holds the lease and until when, so
a dead holder is detected at once on its own host (its pid is gone) and by expiry elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

from metatree._locking._base import BaseLock
from metatree._paths import LOCK_FILE
from metatree.errors import CorruptMetadataError, NotFoundError

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["LeaseInfo", "LeaseLock"]

HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """The lock object's body."""

    owner: str
    """Unique per lock object (a uuid4)."""
    host: str
    """Host name of the holder."""
    pid: int
    """Process id of the holder on `host`."""
    acquired: float
    """Wall-clock time of acquisition (seconds since the epoch)."""
    expires: float
    """Wall-clock time after which the lease may be taken over."""
    token: int
    """Fencing token: nanoseconds at acquisition, increasing across successive holders."""

    @classmethod
    def parse(cls, data: bytes) -> LeaseInfo | None:
        """Parse a lease body; None for one we did not write (metatreedb's empty ``.lock``)."""
        try:
            raw: Any = orjson.loads(data)
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        """Describe the holder for errors."""
        left = self.expires - time.time()
        return f"{self.owner} (pid {self.pid} on {self.host}, lease ends in {left:.1f}s)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class LeaseLock(BaseLock):
    """The DB lock as a lease object at ``<root>/.lock``.

    Parameters
    ----------
    storage
        Where the lock object lives.
    ttl
        Lease duration in seconds; a lease older than this may be taken over.
    foreign_ttl
        How long a lock object we cannot parse (metatreedb's empty ``.lock``) is respected,
        counted from when we first saw it.
    """

    def __init__(
        self,
        storage: Storage,
        ttl: float = 120.0,
        foreign_ttl: float = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(storage.url_of(LOCK_FILE), **kwargs)
        self.storage = storage
        self.ttl = ttl
        self.foreign_ttl = foreign_ttl
        self.owner = uuid.uuid4().hex
        self._foreign_seen: tuple[bytes, float] | None = None
        self._holder = "unknown"

    def _body(self) -> bytes:
        now = time.time()
        info = LeaseInfo(self.owner, HOST, os.getpid(), now, now + self.ttl, time.time_ns())
        return orjson.dumps(asdict(info))

    def _try_acquire(self) -> bool:
        if self.storage.create_exclusive(LOCK_FILE, self._body()):
            self._foreign_seen = None
            return True
        try:
            body = self.storage.read_bytes(LOCK_FILE)
        except NotFoundError:
            return False  # released between our create and our read: try again at once
        if self._is_stale(body):
            # Between our read and this removal another waiter may have broken it and taken
            # a fresh lease; the conditional break of the lock manager issue closes that gap.
            with contextlib.suppress(NotFoundError, CorruptMetadataError):
                self.storage.remove_file(LOCK_FILE)
            return self.storage.create_exclusive(LOCK_FILE, self._body())
        return False

    def _is_stale(self, body: bytes) -> bool:
        info = LeaseInfo.parse(body)
        now = time.time()
        if info is None:
            self._holder = "a client that is not metatree (metatreedb 0.2.3?)"
            if self._foreign_seen is None or self._foreign_seen[0] != body:
                self._foreign_seen = (body, now)
            return now - self._foreign_seen[1] > self.foreign_ttl
        self._holder = info.describe()
        if info.expires < now:
            return True
        caps = self.storage.capabilities
        return caps.same_host_liveness and info.host == HOST and not _pid_alive(info.pid)

    def _release(self) -> None:
        self.storage.remove_file(LOCK_FILE)

    def _describe_holder(self) -> str:
        return self._holder
