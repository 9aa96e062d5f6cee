"""Lock tests of the conformance suite: exclusion across processes, crashes, leases, bulk writes.

Processes are spawned (the test process runs server threads, which a fork would copy half
way). Classes set `concurrency_safe = False` for servers whose conditional writes are not
atomic under contention (moto); the SeaweedFS class runs these tests on a real S3 server.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from metatree import Metatree
from metatree._locking import LeaseLock
from metatree.errors import LockLostError, LockTimeout, MetatreeError
from metatree.testing import _workers
from metatree.testing._helpers import held_elsewhere

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["LockTestBase", "LockTests"]

KEYS = ("model", "version", "stage")
SPAWN = mp.get_context("spawn")


class LockTestBase:
    """What the lock suites share: their settings, and the skips and seed their tests need."""

    concurrency_safe: ClassVar[bool] = True
    """Whether the server's conditional writes are atomic under contention."""
    lease_ttl: ClassVar[float] = 1.5

    def _require_processes(self, storage: Storage) -> None:
        if storage.capabilities.data_in_memory:
            pytest.skip("other processes do not see this filesystem")
        if not self.concurrency_safe:
            pytest.skip("this server's conditional writes are not atomic under contention")

    @staticmethod
    def _lease_lock(tree: Metatree) -> LeaseLock:
        lock = tree._db.lock
        if not isinstance(lock, LeaseLock):
            pytest.skip("this backend's lock does not expire (local disk: the kernel's flock)")
        return lock

    def _seeded(self, storage: Storage, **options: Any) -> Metatree:
        tree = Metatree(storage, KEYS, **options)
        if not tree.exists("m/v1"):
            tree.put("m/v1", b"x", name="f")
        return tree


class LockTests(LockTestBase):
    """The DB lock excludes, survives crashes, expires, and batches (DESIGN.md "The DB lock")."""

    writers: ClassVar[int] = 8
    updates_per_writer: ClassVar[int] = 200
    puts_per_writer: ClassVar[int] = 100
    torn_write_trials: ClassVar[int] = 200
    bulk_puts: ClassVar[int] = 1000

    # -- exclusion ----------------------------------------------------------------------
    def test_concurrent_updates_of_one_node(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = self._seeded(storage)
        n, count = self.writers, self.updates_per_writer
        with ProcessPoolExecutor(n, mp_context=SPAWN) as pool:
            errors = list(pool.map(_workers.hammer_updates, [tree] * n, range(n), [count] * n))
        assert errors == [[]] * n
        metadata = tree.find("m/v1").metadata
        assert {f"w{w}-{i}" for w in range(n) for i in range(count)} <= set(metadata)

    def test_concurrent_puts_under_one_parent(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = self._seeded(storage)
        tree.put("p", b"x", name="f")
        n, count = self.writers, self.puts_per_writer
        with ProcessPoolExecutor(n, mp_context=SPAWN) as pool:
            errors = list(pool.map(_workers.hammer_puts, [tree] * n, range(n), [count] * n))
        assert errors == [[]] * n
        children = tree.find("p").children
        expected = {f"w{w}-{i}" for w in range(n) for i in range(count)}
        assert sorted(children) == sorted(expected)  # nothing lost, no duplicate
        on_disk = {name for name in tree.find("p").list() if name != "f"}
        assert on_disk == expected  # index and directories agree

    def test_concurrent_updates_from_threads(self, storage: Storage) -> None:
        if not self.concurrency_safe:
            pytest.skip("this server's conditional writes are not atomic under contention")
        self._seeded(storage)
        trees = [Metatree(storage) for _ in range(4)]  # one lock object each

        def work(index: int) -> None:
            node = trees[index].find("m/v1")
            for i in range(15):
                node.update(**{f"t{index}-{i}": i})

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metadata = trees[0].find("m/v1").metadata
        assert {f"t{t}-{i}" for t in range(4) for i in range(15)} <= set(metadata)

    # -- crashes ------------------------------------------------------------------------
    def test_killed_holder_does_not_block(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = self._seeded(storage, lock_ttl=self.lease_ttl, lock_timeout=30)
        parent, child = SPAWN.Pipe()
        holder = SPAWN.Process(target=_workers.hold_lock, args=(tree, child))
        holder.start()
        try:
            assert parent.poll(60), "the holder did not take the lock"
            assert parent.recv() == "holding"
            status = tree.lock_status()
            assert status is not None
            assert status.pid == holder.pid
        finally:
            holder.kill()
            holder.join()
        assert tree.lock_status() is None  # its holder is provably gone: nobody is named
        tree.find("m/v1").update(after_kill=True)  # at once on this host, else after the TTL
        assert tree.find("m/v1").metadata["after_kill"] is True
        assert tree.lock_status() is None

    def test_kill_during_metadata_writes_never_tears(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = Metatree(storage, KEYS, locking_enabled=False)  # each kill would leave a lease
        tree.put("m/v1", b"x", name="f")
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(["metatree", "metatree.testing._workers"])
        rng = random.Random(1234)
        for _ in range(self.torn_write_trials):
            writer = context.Process(target=_workers.write_forever, args=(tree,))
            writer.start()
            time.sleep(rng.uniform(0.005, 0.05))
            writer.kill()
            writer.join()
            metadata = tree.find("m/v1").metadata  # CorruptMetadataError if torn or empty
            assert set(metadata) <= {"counter", "payload"}

    # -- waiting and leases -------------------------------------------------------------
    def test_waiter_times_out_naming_the_holder(self, storage: Storage) -> None:
        tree = self._seeded(storage)
        with held_elsewhere(storage):
            waiter = Metatree(storage, lock_timeout=0.3)
            with pytest.raises(LockTimeout) as info:
                waiter.find("m/v1").update(late=True)
            assert f"pid {os.getpid()}" in info.value.holder
            assert isinstance(info.value, TimeoutError)
        assert "late" not in tree.find("m/v1").metadata

    def test_expired_holder_cannot_commit(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = self._seeded(storage, lock_ttl=self.lease_ttl, lock_timeout=30)
        self._lease_lock(tree)
        parent, child = SPAWN.Pipe()
        stalled = SPAWN.Process(target=_workers.stall_then_commit, args=(tree, child))
        stalled.start()
        try:
            assert parent.poll(60)
            assert parent.recv() == "staged"
            assert stalled.pid is not None
            os.kill(stalled.pid, signal.SIGSTOP)  # a holder frozen past its lease (GC, swap)
            tree.find("m/v1").update(winner=True)  # waits for the lease to expire, takes over
            os.kill(stalled.pid, signal.SIGCONT)
            parent.send("go")
            assert parent.poll(60)
            assert parent.recv() == LockLostError.__name__
        finally:
            stalled.kill()
            stalled.join()
        metadata = tree.find("m/v1").metadata
        assert metadata["winner"] is True
        assert "stalled" not in metadata  # the stalled holder's write was not applied

    def test_lock_status_and_break(self, storage: Storage) -> None:
        tree = self._seeded(storage)
        assert tree.lock_status() is None
        assert tree.break_lock() is False
        with tree.transaction():
            status = tree.lock_status()
            assert status is not None
            assert (status.pid, status.owner != "foreign") == (os.getpid(), True)
        assert tree.lock_status() is None

    # -- transactions -------------------------------------------------------------------
    def test_transaction_takes_the_lock_once(self, storage: Storage) -> None:
        tree = self._seeded(storage)
        lock = tree._db.lock
        before = lock.acquisitions
        writes: list[str] = []
        original, batch = tree.storage.write_atomic, tree.storage.put_many

        def counting(rel: str, data: bytes, **options: Any) -> None:
            writes.append(rel)
            original(rel, data, **options)

        def counting_many(items: list[tuple[Any, str]], **options: Any) -> Any:
            writes.extend(rel for _, rel in items)  # a transaction's batched writes
            return batch(items, **options)

        tree.storage.write_atomic = counting  # type: ignore[method-assign]
        tree.storage.put_many = counting_many  # type: ignore[method-assign,assignment]
        try:
            with tree.transaction():
                for i in range(self.bulk_puts):
                    tree.put(f"bulk/n{i}", b"x", name="f")
                tree.find("m/v1").update(bulk=True)
        finally:
            del tree.storage.write_atomic
            del tree.storage.put_many
        assert lock.acquisitions - before == 1
        # once when created (a crash then leaves an orphan `claim` recognises), once at commit
        assert writes.count("bulk/metadata.json") == 2
        assert writes.count("metadata.json") == 1  # the root index, once
        assert len(tree.find("bulk").children) == self.bulk_puts

    def test_transaction_that_raises_commits_nothing(self, storage: Storage) -> None:
        tree = self._seeded(storage)

        def abort() -> None:
            with tree.transaction():
                tree.put("m/v2", b"x", name="f")
                tree.find("m/v1").update(half=True)
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            abort()
        assert tree.find("m").children == ["v1"]
        assert "half" not in tree.find("m/v1").metadata
        with pytest.raises(MetatreeError):
            tree.find("m/v2")
