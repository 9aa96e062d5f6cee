"""Helpers shared by the conformance suite and the project's tests."""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from metatree.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._storage import Storage
    from metatree._tree import Metatree

__all__ = ["held_elsewhere", "run_client", "snapshot", "unchanged"]

_CLIENT = """
import pickle, resource, sys
tree, direction, source = pickle.load(sys.stdin.buffer)
tree.put("warm/up", b"x", name="f", force=True)  # import everything lazily loaded
b"".join(tree.get("warm/up/f"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seen = 0
if direction == "put":
    tree.put("m/v1", source, force=True)
    seen = tree.storage.fs.size(tree.storage.abs("m/v1/big.bin"))
else:
    for chunk in tree.get("m/v1/big.bin"):
        seen += len(chunk)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, seen)
"""


def run_client(tree: Metatree, direction: str, source: str) -> tuple[int, int]:
    """Run a put or get of `source` in a child process; return its RSS growth and bytes."""
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT],
        input=pickle.dumps((tree, direction, source)),
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    growth, seen = done.stdout.split()
    return int(growth), int(seen)


def snapshot(storage: Storage) -> dict[str, bytes]:
    """Every file below the root with its bytes: compare two to prove nothing was written."""
    files: dict[str, bytes] = {}
    for rel in sorted(storage.walk_files("")):
        with contextlib.suppress(NotFoundError):
            files[rel] = storage.read_bytes(rel)
    return files


@contextlib.contextmanager
def unchanged(storage: Storage) -> Iterator[None]:
    """Assert that the block leaves the storage byte-for-byte as it found it."""
    before = snapshot(storage)
    yield
    after = snapshot(storage)
    assert after == before, f"storage changed: {sorted(set(after) ^ set(before)) or 'contents'}"


@contextlib.contextmanager
def held_elsewhere(storage: Storage) -> Iterator[Metatree]:
    """Hold the DB lock for the block from another tree (a thread in a transaction).

    Yields that tree. The holder lets go when the block ends, whatever happened in it.
    """
    from metatree._tree import Metatree

    other = Metatree(storage)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with other.transaction():
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30), "the other tree never got the lock"
        yield other
    finally:
        done.set()
        holder.join()
