"""Fault injection: requests that fail, drop their connection, or are never answered."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """The next `remaining` requests matching `op` and `datanode` fail this way."""

    remaining: int
    op: str | None
    datanode: bool | None
    status: int
    drop: bool
    after: bool


class Faults:
    """The pending faults and stalls of one server, shared by its handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []
        self._stall_ops: set[str | None] = set()
        self._unstall = threading.Event()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._pending.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self, op: str, datanode: bool) -> Fault | None:
        """Spend one injection of the first fault matching this request, if any."""
        with self._lock:
            for fault in self._pending:
                if fault.op in {None, op} and fault.datanode in {None, datanode}:
                    fault.remaining -= 1
                    self._pending = [f for f in self._pending if f.remaining > 0]
                    return fault
        return None

    def stall(self, op: str | None) -> None:
        with self._lock:
            self._unstall.clear()
            self._stall_ops.add(op)

    def release(self) -> None:
        with self._lock:
            self._stall_ops.clear()
            self._unstall.set()

    def wait_if_stalled(self, op: str) -> None:
        """Hold a stalled request until `release` (bounded, so a forgotten stall cannot hang)."""
        with self._lock:
            stalled = bool(self._stall_ops & {None, op})
        if stalled:
            self._unstall.wait(120)
