"""`LeaseInfo`: the body of the lock object, as JSON, checked field by field when read.

The body is stored data: another client, an older version or an attacker may have written it.
`LeaseInfo.load` therefore checks every field's type and range and raises `CorruptLease` with
a description instead of letting a raw ``TypeError``/``OverflowError`` escape; callers treat
such a body as foreign (respected for ``foreign_ttl``, then taken over).
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import orjson

from metatree.errors import StorageError

__all__ = [
    "HOST",
    "MAX_BODY",
    "MAX_TTL",
    "CorruptLease",
    "LeaseInfo",
    "describe_foreign",
    "directory_error",
    "machine_id",
    "pid_alive",
]

HOST: Final = socket.gethostname()
MAX_BODY: Final = 64 * 1024
"""A lock object larger than this is corrupt; only this many bytes (+1) are ever read."""
MAX_TTL: Final = 86_400.0
"""Longest lease accepted, from a caller (`lock_ttl`) or a stored body: one day."""
_MAX_TOKEN: Final = 2**62  # leaves room to add one forever without leaving JSON's int64
_MAX_TIME: Final = 1e11  # seconds since the epoch: year 5138


class CorruptLease(ValueError):
    """A lock object body that is not a lease metatree wrote; the message says why."""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (in this PID namespace).

    Asked with signal 0, which only POSIX defines: on Windows ``os.kill(pid, 0)`` would
    *terminate* the process, so every pid counts as alive there (no take-over by pid; a
    Windows holder is never judged on the same machine anyway, `machine_id` is empty there).
    """
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # it exists, owned by another user (or cannot be asked: assume alive)
    return True


@functools.cache
def machine_id() -> tuple[str, str]:
    """Return the kernel's boot id and this process's PID namespace (``""`` when unknown).

    Host names are not unique (containers on the host network, replicas with a fixed name),
    so a pid is only checked on a holder with the same host name, boot id *and* PID namespace.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as stream:
            boot = stream.read(64).strip()
        ns = os.stat("/proc/self/ns/pid")
    except OSError:
        return "", ""
    return boot, f"{ns.st_dev}:{ns.st_ino}"


def _number(raw: dict[str, Any], key: str, low: float, high: float) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CorruptLease(f"field {key!r} is {type(value).__name__}, not a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise CorruptLease(f"field {key!r} = {value!r} is out of range [{low:g}, {high:g}]")
    return float(value)


def _integer(raw: dict[str, Any], key: str, high: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptLease(f"field {key!r} is {type(value).__name__}, not an integer")
    if not 0 <= value <= high:
        raise CorruptLease(f"field {key!r} = {value!r} is out of range [0, {high}]")
    return value


def _text(raw: dict[str, Any], key: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or len(value) > 256:
        raise CorruptLease(f"field {key!r} is not a string of at most 256 characters")
    return value


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who holds the DB lock, and for how long (the lock object's body)."""

    owner: str
    """Unique per lock object and process (a uuid4 hex; a forked child gets a new one), or
    ``"foreign"`` for a body metatree did not write."""
    host: str
    """Host name of the holder."""
    pid: int
    """Process id of the holder on `host`."""
    acquired: float
    """Wall-clock time of acquisition, seconds since the epoch (for people: never compared)."""
    expires: float
    """Wall-clock time the holder's lease ends by its own clock (for people and `break_lock`);
    0 for local disk's ``flock``, held until its process ends. Waiters do not trust it: they
    time a lease from when they first saw its body unchanged (clocks differ)."""
    token: int
    """Fencing token: a take-over stores the previous token + 1, so it grows over take-overs."""
    ttl: float = 0.0
    """The holder's lease duration: a body unchanged for longer (+ margin) is dead."""
    boot: str = ""
    """The holder's kernel boot id (``""`` unknown): with `pidns`, proves "same machine"."""
    pidns: str = ""
    """The holder's PID namespace (``""`` unknown)."""
    nonce: str = ""
    """Random per acquisition attempt: a body equal to the bytes we sent proves it is ours."""

    @classmethod
    def new(cls, owner: str, ttl: float, previous: LeaseInfo | None, floor: int = 0) -> LeaseInfo:
        """Return a lease for `owner` from now (`ttl` 0: no expiry).

        The token is above `previous`'s (a take-over) and above `floor` (the highest token
        this process has seen on the lock), and at least the clock in nanoseconds.
        """
        now = time.time()
        token = max(time.time_ns(), floor + 1, previous.token + 1 if previous else 0)
        boot, pidns = machine_id()
        expires = now + ttl if ttl else 0.0
        return cls(
            owner, HOST, os.getpid(), now, expires, token, ttl, boot, pidns, secrets.token_hex(8)
        )

    @classmethod
    def load(cls, data: bytes) -> LeaseInfo:
        """Parse and check a lease body; `CorruptLease` says what is wrong with it."""
        if not data:
            raise CorruptLease("it is empty (metatreedb 0.2.3 touches an empty .lock)")
        if len(data) > MAX_BODY:
            raise CorruptLease(f"it is larger than {MAX_BODY} bytes")
        try:
            raw: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise CorruptLease("it is not JSON") from None
        if not isinstance(raw, dict):
            raise CorruptLease(f"it is a JSON {type(raw).__name__}, not an object")
        owner = _text(raw, "owner")
        if owner in {"", "foreign"}:
            raise CorruptLease(f"its owner {owner!r} is reserved")
        acquired = _number(raw, "acquired", 0.0, _MAX_TIME)
        expires = _number(raw, "expires", 0.0, _MAX_TIME)
        ttl = _number(raw, "ttl", 0.0, MAX_TTL) if "ttl" in raw else 0.0
        if not ttl and expires:  # written before `ttl` was stored: the first lease's length
            ttl = min(max(expires - acquired, 0.0), MAX_TTL)
        return cls(
            owner,
            _text(raw, "host"),
            _integer(raw, "pid", 2**31),
            acquired,
            expires,
            _integer(raw, "token", _MAX_TOKEN),
            ttl,
            _text(raw, "boot", default=""),
            _text(raw, "pidns", default=""),
            _text(raw, "nonce", default=""),
        )

    @classmethod
    def parse(cls, data: bytes) -> LeaseInfo | None:
        """Parse a lease body; None for one metatree did not write or that is corrupt."""
        try:
            return cls.load(data)
        except CorruptLease:
            return None

    @classmethod
    def foreign(cls, seen: float) -> LeaseInfo:
        """Stand-in for a lock object another client wrote (no holder known)."""
        return cls("foreign", "", 0, seen, seen, 0)

    def to_bytes(self) -> bytes:
        """Serialise (never empty, so a lease is told apart from metatreedb's empty file)."""
        return orjson.dumps(asdict(self))

    def renewed(self, ttl: float) -> LeaseInfo:
        """Return the same lease, expiring `ttl` seconds from now (a new body every time)."""
        return replace(self, expires=time.time() + ttl, ttl=ttl, nonce=secrets.token_hex(8))

    def same_machine(self) -> bool:
        """Whether the holder provably runs on this machine, in this PID namespace."""
        boot, pidns = machine_id()
        return bool(boot and pidns) and (self.host, self.boot, self.pidns) == (HOST, boot, pidns)

    def holder_gone(self) -> bool:
        """Whether the holder is provably dead: same machine and namespace, and no such pid."""
        return self.same_machine() and not pid_alive(self.pid)

    def is_dead(self, margin: float = 0.0) -> bool:
        """Expired by more than `margin` on *this* clock, or provably gone (`break_lock` only)."""
        if self.expires and self.expires + margin < time.time():
            return True
        return self.holder_gone()

    def describe(self) -> str:
        """Describe the holder for errors and `lock_status`."""
        if self.owner == "foreign":
            return "a client that is not metatree (metatreedb 0.2.3?), no expiry known"
        if not self.expires:
            return f"{self.owner} (pid {self.pid} on {self.host}, held until it exits)"
        left = self.expires - time.time()
        return f"{self.owner} (pid {self.pid} on {self.host}, lease ends in {left:.1f}s)"


def describe_foreign(body: bytes) -> str:
    """Describe a lock object that is not a lease (metatreedb's empty file, or corrupt)."""
    try:
        LeaseInfo.load(body)
    except CorruptLease as exc:
        if not body:
            return "a client that is not metatree (metatreedb 0.2.3's empty .lock)"
        return f"a lock object metatree did not write ({exc})"
    return "a lease"  # pragma: no cover - callers pass bodies that failed to load


def directory_error(url: str) -> StorageError:
    """Return the error for a lock object that is a directory (planted, or made by hand)."""
    return StorageError(
        url, "the lock object is a directory, which metatree never creates: remove it by hand"
    )
