"""Process bodies for the lock tests (importable, so that spawned processes can run them).

Each receives the database pickled (`Metatree` pickles its storage and lock settings).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from metatree.errors import MetatreeError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from metatree._tree import Metatree

__all__ = ["hammer_puts", "hammer_updates", "hold_lock", "stall_then_commit", "write_forever"]


def hammer_updates(tree: Metatree, worker: int, count: int) -> list[str]:
    """Update distinct keys of node ``m/v1``; return the errors (none expected)."""
    node = tree.find("m/v1")
    errors = []
    for i in range(count):
        try:
            node.update(**{f"w{worker}-{i}": i})
        except MetatreeError as exc:
            errors.append(repr(exc))
    return errors


def hammer_puts(tree: Metatree, worker: int, count: int) -> list[str]:
    """Put distinct children under ``p``; return the errors (none expected)."""
    errors = []
    for i in range(count):
        try:
            tree.put(f"p/w{worker}-{i}", b"x", name="f")
        except MetatreeError as exc:
            errors.append(repr(exc))
    return errors


def hold_lock(tree: Metatree, conn: Connection) -> None:
    """Take the lock, say so, and hold it until killed."""
    with tree.transaction():
        conn.send("holding")
        while True:
            time.sleep(1)


def stall_then_commit(tree: Metatree, conn: Connection) -> None:
    """Stage an update in a transaction, wait for a go, commit; report how it ended."""
    try:
        with tree.transaction():
            tree.find("m/v1").update(stalled=True)
            conn.send("staged")
            conn.recv()
    except MetatreeError as exc:
        conn.send(type(exc).__name__)
    else:
        conn.send("committed")


def write_forever(tree: Metatree) -> None:
    """Rewrite metadata as fast as possible, with growing values, until killed."""
    node = tree.find("m/v1")
    i = 0
    while True:
        i += 1
        node.update(counter=i, payload="x" * (i % 4096))
