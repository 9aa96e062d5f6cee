"""`LeaseLock`: the DB lock as a lease object, over a backend's compare-and-swap primitives.

A `LeaseStore` gives four operations on the lock object, each named with the backend's atomic
primitive in its docstring: exclusive create, read with a version, replace-if-version and
delete-if-version. The lease protocol is written once here:

* acquire: exclusive create; if the object exists and its holder is dead, take it over with
  replace-if-version, so two waiters cannot both win. Dead means: its body stayed unchanged for
  longer than its ttl + `margin` on *our* monotonic clock (a live holder rewrites it every
  ttl / 3), or its pid is gone on provably the same machine and PID namespace. The holder's
  wall-clock expiry is never compared with ours (clocks differ);
* hold: a daemon thread renews the lease every ``ttl / 3`` (replace-if-version); a renewal
  whose reply was lost is recognised by reading the body back;
* commit: `check` refuses (`LockLostError`) when the lease is lost or within `margin` of its
  end (timed on the monotonic clock from the start of the request that wrote it), and, on
  stores whose replace is not atomic, verifies the stored body first;
* release: delete-if-version, always conditional (a broken lease's holder must not delete the
  next holder's lease).

A lease is adopted only with proof: the stored body equals, byte for byte, the body this lock
object just tried to write (each attempt has a random nonce; a forked child has a new owner id).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from metatree._locking._base import BaseLock
from metatree._locking._info import CorruptLease, LeaseInfo, describe_foreign, directory_error
from metatree._locking._observe import highest_token, note_token, unchanged_for
from metatree.errors import LockError, LockLostError

if TYPE_CHECKING:
    from collections.abc import Callable

    from metatree._storage import Storage
    from metatree._types import Version

__all__ = ["LeaseLock", "LeaseStore"]


_BREAK_SKEW = 60.0
"""`break_lock` without force judges expiry on the caller's clock, with this allowance."""


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
        """Return the body (at most ``MAX_BODY + 1`` bytes) and version; None when absent."""

    @abstractmethod
    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """Replace the object if it is still at `version`; return the new version or None.

        `owned` says that the caller holds an unexpired lease at `version` (a renewal).
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
        Safety gap: a holder stops committing `margin` seconds before its lease ends, a waiter
        takes over `margin` seconds after (covers the time from `check` to the commit landing).
    foreign_ttl
        How long a lock object that is not a lease (metatreedb's empty ``.lock``, a corrupt
        body) is respected, counted from when this process first saw it unchanged. Below the
        default `lock_timeout` (60 s), so that one waiting writer gets there.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        ttl: float = 30.0,
        margin: float | None = None,
        foreign_ttl: float = 30.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poll_interval", 0.005)
        kwargs.setdefault("max_poll_interval", 0.1)  # a lock is held for a few requests only
        super().__init__(store.storage.url_of(store.rel), **kwargs)
        self.store = store
        self.ttl = ttl
        self.margin = min(ttl / 6, 2.0) if margin is None else margin
        self.foreign_ttl = foreign_ttl
        self._holder = "unknown"
        self._reset()

    def _reset(self) -> None:
        self.owner = uuid.uuid4().hex
        self._state = threading.Lock()  # guards the fields below; the renewer holds it to write
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lease: LeaseInfo | None = None
        self._body = b""
        self._version: Version | None = None
        self._valid_until = 0.0  # monotonic: start of the request that wrote it + ttl - margin
        self._lost: str | None = None
        self._pending: list[tuple[bytes, float, LeaseInfo]] = []  # writes whose reply was lost
        self._attempt: bytes | None = None  # a body being written, not yet recorded as held

    def _after_fork(self) -> None:
        """Forget the parent's lease in a forked child, which is a new owner (never adopts it)."""
        super()._after_fork()
        self._reset()

    # -- acquire / release --------------------------------------------------------------
    def _new_lease(self, previous: LeaseInfo | None) -> LeaseInfo:
        return LeaseInfo.new(self.owner, self.ttl, previous, highest_token(self.name))

    def _try_acquire(self) -> bool:
        lease = self._new_lease(None)
        body, start = lease.to_bytes(), time.monotonic()
        version = self._attempted(body, lambda: self.store.create(body))
        if version is not None:
            return self._held(lease, body, version, start)
        current = self.store.read()
        if current is None:
            if self.store.storage.kind(self.store.rel) == "directory":
                raise directory_error(self.name)  # "exists" to create, absent to read
            return False  # released between our create and our read: try again
        seen, version = current
        if seen == body:  # our create landed: a client's retry of it was refused (lost reply)
            return self._held(lease, body, version, start)
        dead, info = self._judge(seen)
        if not dead:
            return False
        lease = self._new_lease(info)
        body, start = lease.to_bytes(), time.monotonic()
        taken = self._attempted(body, lambda: self.store.replace(version, body, owned=False))
        if taken is None:  # lost, or landed and its retry refused: the stored body tells
            current = self.store.read()
            taken = current[1] if current is not None and current[0] == body else None
        return taken is not None and self._held(lease, body, taken, start)

    def _attempted(self, body: bytes, write: Callable[[], Version | None]) -> Version | None:
        """Run a write of `body`; if it fails, find out from the stored body whether it landed.

        A reply lost after the write happened (a dropped connection, a timeout) must not leave
        a lease nobody renews: an error adopts it only when the stored body is exactly ours,
        and an interruption (Ctrl-C) gives it back.
        """
        self._attempt = body
        try:
            version = write()
        except BaseException as exc:
            try:
                current = self.store.read()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                current = None
            if current is not None and current[0] == body:
                if isinstance(exc, Exception):
                    return current[1]  # the write landed; only its reply was lost
                with contextlib.suppress(Exception):
                    self.store.delete(current[1], owned=False)
            self._attempt = None
            raise
        if version is None:
            self._attempt = None
        return version

    def _judge(self, body: bytes) -> tuple[bool, LeaseInfo | None]:
        """Whether the holder of `body` is dead; also describe it for `LockTimeout`."""
        try:
            info = LeaseInfo.load(body)
        except CorruptLease:
            age = unchanged_for(self.name, body, repeatable=True)
            self._holder = (
                f"{describe_foreign(body)}, seen unchanged for {age:.1f}s; it is taken over "
                f"after {self.foreign_ttl:g}s"
            )
            return age > self.foreign_ttl, None
        note_token(self.name, info.token)
        self._holder = info.describe()
        age = unchanged_for(self.name, body)
        if info.holder_gone():
            return True, info
        limit = (info.ttl if info.ttl > 0 else self.foreign_ttl) + self.margin
        return age > limit, info

    def _held(self, lease: LeaseInfo, body: bytes, version: Version, start: float) -> bool:
        note_token(self.name, lease.token)
        with self._state:
            self._lease, self._body, self._version = lease, body, version
            self._valid_until = start + self.ttl - self.margin
            self._lost, self._pending, self._attempt = None, [], None
        self._stop = stop = threading.Event()  # one per holding: a late renewer sees its own
        renewer = threading.Thread(
            target=self._renew_loop, args=(stop,), daemon=True, name=f"renew {self.name}"
        )
        try:
            renewer.start()
        except BaseException:
            self._abandon()
            raise
        self._renewer = renewer
        return True

    def _abandon(self) -> None:
        """Give back a lease taken (or being taken) when the acquisition did not complete."""
        if self._lease is not None:
            with contextlib.suppress(Exception):
                self._release()
            return
        body, self._attempt = self._attempt, None
        if body is not None:
            with contextlib.suppress(Exception):
                current = self.store.read()
                if current is not None and current[0] == body:
                    self.store.delete(current[1], owned=False)

    def _release(self) -> None:
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.join()
        with self._state:
            lease, version, body = self._lease, self._version, self._body
            pending = [p[0] for p in self._pending]
            self._lease = self._version = None
            self._body, self._pending = b"", []
        if lease is None:
            return
        if self.store.delete(version, owned=False) or not pending:
            return  # deleted, or someone else holds it now: their lease is left alone
        current = self.store.read()  # a renewal whose reply was lost may be what is stored
        if current is not None and current[0] in pending and current[0] != body:
            self.store.delete(current[1], owned=False)

    def _describe_holder(self) -> str:
        return self._holder

    def _timeout_advice(self) -> str:
        return (
            f"retry later: a dead holder's lease is taken over once a waiter has seen it "
            f"unchanged for its ttl + {self.margin:g}s, or at once when its pid is gone on this "
            "machine; break_lock(force=True) removes a live one"
        )

    # -- holding ------------------------------------------------------------------------
    def _renew_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            with self._state:
                if stop.is_set() or self._lease is None or self._lost is not None:
                    return
                if time.monotonic() >= self._valid_until:
                    self._lost = "the lease ran out before it could be renewed (a stall?)"
                    return
                if not self._renew_once() and self._held_now():
                    self._renew_once()  # a lost reply was recovered: renew from there at once
                if not self._held_now():
                    return

    def _held_now(self) -> bool:
        return self._lease is not None and self._lost is None

    def _renew_once(self) -> bool:
        """Renew once (the caller holds `_state`); False when lost, or recovered: try again."""
        if self._lease is None:
            return False
        renewed = self._lease.renewed(self.ttl)
        body, start = renewed.to_bytes(), time.monotonic()
        try:
            version = self.store.replace(self._version, body, owned=True)
        except Exception as exc:  # noqa: BLE001 - retried next time; the write may have landed
            self._pending.append((body, start, renewed))
            self._holder = f"renewal failed: {exc}"
            return True
        if version is None:
            # refused: taken over, or our write landed and a client's retry of it (its reply
            # lost: gcsfs and the S3 and Azure SDKs retry) was refused; the stored body tells
            self._pending.append((body, start, renewed))
            if not self._recover_pending():
                self._lost = "the lease was taken over or broken by another writer"
            return False
        self._lease, self._body, self._version = renewed, body, version
        self._valid_until, self._pending = start + self.ttl - self.margin, []
        return True

    def _recover_pending(self, current: tuple[bytes, Version] | None = None) -> bool:
        """Adopt a renewal that landed although its reply was lost (caller holds `_state`)."""
        if not self._pending:
            return False
        current = self.store.read() if current is None else current
        if current is None:
            return False
        for body, start, lease in self._pending:
            if current[0] == body:
                self._lease, self._body, self._version = lease, body, current[1]
                self._valid_until, self._pending = start + self.ttl - self.margin, []
                return True
        return False

    def check(self) -> None:
        """Refuse to commit unless our lease is held and not about to end.

        On stores without an atomic replace (WebHDFS) the stored body is read and compared
        with the one we last wrote, under the state lock, so a renewal cannot slip in between.
        """
        with self._state:
            lost = self._lost
            if lost is None and self._lease is None:
                lost = "the lock is not held"
            elif lost is None and time.monotonic() >= self._valid_until:
                lost = f"the lease (ttl {self.ttl:g}s) ran out before this commit"
            elif lost is None and not self.store.atomic_replace:
                current = self.store.read()
                if current is None or (
                    current[0] != self._body and not self._recover_pending(current)
                ):
                    lost = "the lock object is no longer our lease (broken or taken over)"
            if lost is not None:
                self._lost = lost
        if lost is not None:
            raise LockLostError(self.name, lost)

    def confirm(self) -> None:
        """`check`, then read the stored lease: it must still be the body we last wrote."""
        self.check()
        with self._state:
            current = self.store.read()
            if current is None or (current[0] != self._body and not self._recover_pending(current)):
                self._lost = "the lock object is no longer our lease (broken or taken over)"
                raise LockLostError(self.name, self._lost)

    # -- inspection ---------------------------------------------------------------------
    def status(self) -> LeaseInfo | None:
        """Return the stored lease; None when free or when its holder is provably dead."""
        current = self.store.read()
        if current is None:
            return None
        try:
            info = LeaseInfo.load(current[0])
        except CorruptLease:
            return LeaseInfo.foreign(time.time())
        return None if info.holder_gone() else info

    def break_(self, *, force: bool = False) -> bool:
        """Remove a dead holder's lease; a live one only with `force`.

        Without `force` a lease is dead when its pid is gone on this machine, when this process
        saw it unchanged for its ttl + margin, or when it expired more than a minute ago by the
        caller's clock (an allowance for clock differences).
        """
        current = self.store.read()
        if current is None:
            return False
        body, version = current
        info = LeaseInfo.parse(body)
        if not force and info is not None:
            seen = unchanged_for(self.name, body)
            dead = info.is_dead(max(self.margin, _BREAK_SKEW)) or (
                info.ttl > 0 and seen > info.ttl + self.margin
            )
            if not dead:
                raise LockError(
                    f"{self.name} is held by {info.describe()}: it is alive, so it was not "
                    "broken; pass force=True if you know better"
                )
        return bool(self.store.delete(version, owned=False))
