"""`LeaseLock`: the DB lock as a lease object, over a backend's compare-and-swap primitives.

A `LeaseStore` gives four operations on the lock object, each named with the backend's atomic
primitive in its docstring: exclusive create, read with a version, replace-if-version and
delete-if-version. The lease protocol is written once here:

* acquire: exclusive create; if the object exists and its lease is dead (expired, or its pid is
  gone on this host), take it over with replace-if-version, so two waiters cannot both win;
* hold: a daemon thread renews the lease every ``ttl / 3`` (replace-if-version); a failed
  renewal marks the lease lost;
* commit: `check` refuses (`LockLostError`) when the lease is lost or within `margin` of its
  expiry, and verifies the stored lease first on stores whose replace is not atomic;
* release: delete-if-version.

Safety rests on the usual lease assumption: clocks of writers differ by less than `margin`.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from metatree._locking._base import BaseLock
from metatree._locking._info import LeaseInfo
from metatree.errors import LockError, LockLostError

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["LeaseLock", "LeaseStore", "Version"]

Version = Any
"""Opaque: an ETag on S3, the body itself where the store compares contents."""


class LeaseStore(ABC):
    """The lock object's primitives on one backend."""

    atomic_replace: ClassVar[bool] = True
    """Whether `replace` and `delete` are atomic compare-and-swap (else `check` verifies)."""

    def __init__(self, storage: Storage, rel: str) -> None:
        self.storage = storage
        self.rel = rel

    @abstractmethod
    def create(self, body: bytes) -> Version | None:
        """Create the object unless it exists; return its version, None if it existed."""

    @abstractmethod
    def read(self) -> tuple[bytes, Version] | None:
        """Return the body and version, or None when there is no object."""

    @abstractmethod
    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """Replace the object if it is still at `version`; return the new version or None.

        `owned` says that the caller holds an unexpired lease at `version`, so nobody else may
        have touched the object (stores without a conditional write rely on it).
        """

    @abstractmethod
    def delete(self, version: Version, *, owned: bool) -> bool:
        """Delete the object if it is still at `version`; return whether it was deleted."""


class LeaseLock(BaseLock):
    """The DB lock: a lease at ``<root>/.lock``, taken over when its holder is dead.

    Parameters
    ----------
    store
        The backend's primitives.
    ttl
        Lease duration in seconds; renewed every ``ttl / 3`` while held.
    margin
        Assumed bound on clock differences between writers: a holder stops committing
        `margin` seconds before its lease ends, a waiter takes over `margin` seconds after.
    foreign_ttl
        How long a lock object we cannot parse (metatreedb's empty ``.lock``) is respected,
        counted from when this lock object first saw it.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        ttl: float = 30.0,
        margin: float | None = None,
        foreign_ttl: float = 120.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poll_interval", 0.005)
        kwargs.setdefault("max_poll_interval", 0.1)  # a lock is held for a few requests only
        super().__init__(store.storage.url_of(store.rel), **kwargs)
        self.store = store
        self.ttl = ttl
        self.margin = min(ttl / 6, 2.0) if margin is None else margin
        self.foreign_ttl = foreign_ttl
        self.owner = uuid.uuid4().hex
        self._lease: LeaseInfo | None = None
        self._version: Version | None = None
        self._lost: str | None = None
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._foreign_seen: tuple[bytes, float] | None = None
        self._holder = "unknown"

    # -- acquire / release --------------------------------------------------------------
    def _try_acquire(self) -> bool:
        lease = LeaseInfo.new(self.owner, self.ttl, None)
        version = self.store.create(lease.to_bytes())
        if version is not None:
            return self._held(lease, version)
        current = self.store.read()
        if current is None:
            return False  # released between our create and our read: try again
        body, version = current
        info = LeaseInfo.parse(body)
        if info is not None and info.owner == self.owner:
            return self._held(info, version)  # our create won, but its reply was lost
        if not self._is_dead(body, info):
            return False
        lease = LeaseInfo.new(self.owner, self.ttl, info)
        new_version = self.store.replace(version, lease.to_bytes(), owned=False)
        return new_version is not None and self._held(lease, new_version)

    def _is_dead(self, body: bytes, info: LeaseInfo | None) -> bool:
        now = time.time()
        if info is None:
            self._holder = LeaseInfo.foreign(now).describe()
            if self._foreign_seen is None or self._foreign_seen[0] != body:
                self._foreign_seen = (body, now)
            return now - self._foreign_seen[1] > self.foreign_ttl
        self._holder = info.describe()
        return info.is_dead(self.margin)

    def _held(self, lease: LeaseInfo, version: Version) -> bool:
        with self._state:
            self._lease, self._version, self._lost = lease, version, None
        self._foreign_seen = None
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name=self.name)
        self._renewer.start()
        return True

    def _release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self._state:
            lease, version, lost = self._lease, self._version, self._lost
            self._lease = self._version = None
        if lease is None or lost is not None:
            return  # someone else holds it now: leave their lease alone
        owned = time.time() < lease.expires - self.margin
        self.store.delete(version, owned=owned)

    def _describe_holder(self) -> str:
        return self._holder

    # -- holding ------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._state:
                lease, version = self._lease, self._version
                if lease is None or self._lost is not None:
                    return
                if time.time() >= lease.expires - self.margin:
                    self._lost = "the lease expired before it could be renewed"
                    return
                renewed = lease.renewed(self.ttl)
                try:
                    new_version = self.store.replace(version, renewed.to_bytes(), owned=True)
                except Exception as exc:  # noqa: BLE001 - a failed renewal is retried next time
                    self._holder = f"renewal failed: {exc}"
                    continue
                if new_version is None:
                    self._lost = "the lease was taken over by another writer"
                    return
                self._lease, self._version = renewed, new_version

    def check(self) -> None:
        """Refuse to commit unless our lease is held and not about to expire."""
        with self._state:
            lease, lost = self._lease, self._lost
        if lost is None and lease is None:
            lost = "the lock is not held"
        elif lost is None and lease is not None and time.time() >= lease.expires - self.margin:
            lost = f"the lease expired at {lease.expires:.3f} (ttl {self.ttl:g}s)"
        elif lost is None and not self.store.atomic_replace:
            current = self.store.read()
            if current is None or current[0] != (lease.to_bytes() if lease else b""):
                lost = "the lock object is no longer our lease"
        if lost is not None:
            with self._state:
                self._lost = lost
            raise LockLostError(self.name, lost)

    # -- inspection ---------------------------------------------------------------------
    def status(self) -> LeaseInfo | None:
        # docstring inherited
        current = self.store.read()
        if current is None:
            return None
        info = LeaseInfo.parse(current[0])
        return info if info is not None else LeaseInfo.foreign(time.time())

    def break_(self, *, force: bool = False) -> bool:
        # docstring inherited
        current = self.store.read()
        if current is None:
            return False
        body, version = current
        info = LeaseInfo.parse(body)
        if not force and info is not None and not info.is_dead(self.margin):
            raise LockError(
                f"{self.name} is held by {info.describe()}: it is alive, so it was not "
                "broken; pass force=True if you know better"
            )
        return self.store.delete(version, owned=False)
