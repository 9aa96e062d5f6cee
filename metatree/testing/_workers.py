"""Process bodies for the lock tests (importable, so that spawned processes can run them).

Each receives the database pickled (`Metatree` pickles its storage and lock settings).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import TYPE_CHECKING

from metatree.errors import ConflictError, MetatreeError
from metatree.models import ModelStore

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from threading import Barrier  # a manager's proxy of one, across processes

    from metatree._tree import Metatree

__all__ = [
    "alias_switches",
    "fork_pool_increments",
    "fork_pool_report",
    "hammer_puts",
    "hammer_updates",
    "hold_lock",
    "hold_with_skew",
    "stage_alias_switch",
    "stall_then_commit",
    "switch_alias_forever",
    "upload_models",
    "write_forever",
]

_TREE: Metatree | None = None
"""The module-level tree a fork pool's children inherit (the pattern of issue 19.3)."""


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
    _commit_on_go(tree, conn, "stalled", "staged")


def _commit_on_go(tree: Metatree, conn: Connection, key: str, ready: str) -> None:
    """Stage ``key=True`` in a transaction, say `ready`, commit on a go; say how it ended."""
    try:
        with tree.transaction():
            tree.find("m/v1").update(**{key: True})
            conn.send(ready)
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


def _increment(count: int, parent_owner: str) -> list[str]:
    """In a forked child: read-modify-write ``counter`` of ``m/v1`` `count` times."""
    tree = _TREE
    if tree is None:  # pragma: no cover - set before the pool forks
        return ["no inherited tree"]
    lock = tree._db.lock
    errors = []
    if lock.is_locked:
        errors.append("the child inherited the parent's held lock")
    if getattr(lock, "owner", None) == parent_owner:
        errors.append("the child kept the parent's owner id")
    for _ in range(count):
        try:
            with tree.transaction():
                node = tree.find("m/v1")
                node.update(counter=node.metadata.get("counter", 0) + 1)
        except MetatreeError as exc:
            errors.append(repr(exc))
    return errors


def fork_pool_increments(tree: Metatree, workers: int, count: int) -> list[str]:
    """Fork a pool from this (clean, spawned) process while holding the lock; count up.

    The pool's children inherit `tree` as a module global, with its lock held by the parent
    at the moment of the fork: none may believe it holds that lock or adopt its lease.
    (The lock is held directly, not through a transaction: a transaction open across a fork
    is the transaction layer's business, not the lock's.)
    """
    global _TREE
    _TREE = tree
    fork = mp.get_context("fork")
    with tree._db.lock:  # held while the children are forked (the lock alone: see below)
        close = getattr(getattr(tree.storage.fs, "session", None), "close", None)
        if callable(close):
            close()  # no pooled HTTP connection may be shared by the children (requests)
        pool = fork.Pool(workers)
        owner = str(getattr(tree._db.lock, "owner", ""))
    try:
        results = pool.starmap(_increment, [(count, owner)] * workers)
    finally:
        pool.close()
        pool.join()
    return [error for result in results for error in result]


def fork_pool_report(tree: Metatree, workers: int, count: int, conn: Connection) -> None:
    """Run `fork_pool_increments` as a spawned process's body; send back the errors."""
    conn.send(fork_pool_increments(tree, workers, count))


def hold_with_skew(tree: Metatree, conn: Connection, skew: float) -> None:
    """Hold the lock with a wall clock `skew` seconds off; commit on a go, say how it ended."""
    real = time.time
    time.time = lambda: real() + skew  # this whole process runs on the skewed clock
    _commit_on_go(tree, conn, "skewed", "holding")


# -- the model store (metatree/testing/_models_locks.py) --------------------------------------
def upload_models(
    tree: Metatree, worker: int, count: int, start: Barrier
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Upload `count` bytes models into domain ``d``, back to back (several in one second).

    Even uploads name their id (``w<worker>-<i>``), odd ones take the default uuid4. Return
    the (model id, bytes) uploaded and the errors (none expected). All writers start together
    at `start` (spawned processes come up one by one).
    """
    store = ModelStore.open(tree)
    start.wait(60)
    uploaded: list[tuple[str, bytes]] = []
    errors: list[str] = []
    for i in range(count):
        data = f"model of writer {worker}, upload {i}".encode()
        try:
            record = store.upload("d", data, model_id=f"w{worker}-{i}" if i % 2 == 0 else None)
        except MetatreeError as exc:
            errors.append(repr(exc))
        else:
            uploaded.append((record["model"]["model_id"], data))
    return uploaded, errors


def alias_switches(
    tree: Metatree, model: str, rounds: int, start: Barrier
) -> tuple[int, list[str]]:
    """Point two aliases of domain ``d`` at `model`, `rounds` times each.

    ``staging`` is switched plainly (last writer wins, each switch recorded); ``production``
    by compare-and-set from the value just read, so this writer knows which of its switches
    took effect. Return how many ``production`` switches changed the alias, and the errors.
    All writers start together at `start`.
    """
    store = ModelStore.open(tree)
    start.wait(60)
    switched = 0
    errors: list[str] = []
    for _ in range(rounds):
        try:
            store.set_alias("d", "staging", model)
            current = store.get_alias("d", "production")
            try:
                store.set_alias("d", "production", model, expected=current)
            except ConflictError:
                continue  # another writer switched it in between: not ours to count
            switched += current != model
        except MetatreeError as exc:
            errors.append(repr(exc))
    return switched, errors


def stage_alias_switch(tree: Metatree, model: str, conn: Connection) -> None:
    """Stage a switch of ``d``'s ``production`` alias in a transaction, say so, wait (killed)."""
    store = ModelStore.open(tree)
    with store.tree.transaction():
        store.set_alias("d", "production", model)
        conn.send("staged")
        conn.recv()


def switch_alias_forever(tree: Metatree, models: list[str], conn: Connection) -> None:
    """Switch ``d``'s ``production`` alias round `models` as fast as possible, until killed."""
    store = ModelStore.open(tree)
    conn.send("switching")
    i = 0
    while True:
        i += 1
        store.set_alias("d", "production", models[i % len(models)])
