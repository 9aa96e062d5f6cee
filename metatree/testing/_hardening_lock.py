"""The lock under failure: leaked flocks, fencing, forks, skew, planted lease bodies (issues 9, 19).

Part of the conformance suite (mixed into `BackendConformance`, and into the SeaweedFS lock
class): every test runs on every backend, and skips itself only when the backend lacks what it
needs (other processes sharing the storage, a lock that expires). Faults are injected into the
lock's own primitives (a write that fails before or after it landed, a Ctrl-C), so each test
means the same on every backend; outcomes are asserted (which error, what is stored, who holds
the lock), never durations.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import pytest

from metatree import Metatree
from metatree._locking import LeaseLock
from metatree._locking._info import HOST, machine_id
from metatree.backends.local import LocalLock
from metatree.errors import (
    DatabaseError,
    LockError,
    LockLostError,
    LockTimeout,
    StorageError,
)
from metatree.testing import _workers
from metatree.testing._helpers import held_elsewhere, snapshot
from metatree.testing._locks import SPAWN, LockTestBase

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from metatree._storage import Storage

__all__ = ["LockHardeningTests"]

KEYS = ("model", "version", "stage")
LOCK = ".lock"


def _dead_pid() -> int:
    """Return the pid of a process that has exited (on this machine, in this PID namespace)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _lease(**fields: Any) -> bytes:
    """Return a lease body as another writer would store it; `fields` override the defaults.

    The holder's pid is one that has exited, unless `fields` name one.
    """
    boot, pidns = machine_id()
    now = time.time()
    body: dict[str, Any] = {
        "owner": "planted",
        "host": HOST,
        "pid": fields["pid"] if "pid" in fields else _dead_pid(),
        "acquired": now,
        "expires": now + 600,
        "token": 7,
        "ttl": 600.0,
        "boot": boot,
        "pidns": pidns,
        "nonce": "n",
    }
    body.update(fields)
    return json.dumps(body).encode()  # the stdlib writes what orjson refuses (2**80, 1e308)


CORRUPT_BODIES = {
    "owner-not-a-string": _lease(owner=1, pid=1),
    "pid-a-string": _lease(pid="x"),
    "pid-huge": _lease(pid=2**80),
    "token-negative": _lease(token=-1, pid=1),
    "token-huge": _lease(token=2**70, pid=1),
    "expires-a-string": _lease(expires="soon", pid=1),
    "expires-huge": _lease(expires=1e308, pid=1),
    "ttl-negative": _lease(ttl=-5, pid=1),
    "a-list": b"[1, 2]",
    "not-json": b"\xff\xfe garbage",
    "huge": b'{"owner": "' + b"x" * (200 * 1024) + b'"}',
}


class LockHardeningTests(LockTestBase):
    """The lock under failure: leaked flocks, fencing, forks, skew, planted lease bodies (issues 9, 19)."""

    fork_workers: ClassVar[int] = 4
    fork_increments: ClassVar[int] = 10

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def _failing_lock_write(tree: Metatree, error: BaseException, *, lands: bool) -> Iterator[None]:
        """Make the next write of a lease body raise `error`, after it landed or before."""
        lock = tree._db.lock
        if isinstance(lock, LeaseLock):
            target: Any = lock.store
            name = "create"
            if isinstance(error, OSError) and not isinstance(error, StorageError):
                error = StorageError(lock.name, str(error))  # what a store raises
        else:
            assert isinstance(lock, LocalLock)
            target, name = lock, "_write"
        original: Callable[..., Any] = getattr(target, name)

        def failing(*args: Any, **kwargs: Any) -> Any:
            setattr(target, name, original)  # once
            if lands:
                original(*args, **kwargs)
            raise error

        setattr(target, name, failing)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError):
                delattr(target, name)

    def _free_for_others(self, storage: Storage) -> None:
        """Another lock object (another file description on local disk) gets in at once."""
        Metatree(storage, lock_timeout=2).find("m/v1").update(other=True)
        assert Metatree(storage).find("m/v1").metadata["other"] is True

    # -- item 9.4: failed acquisitions release everything -------------------------------
    def test_failed_lease_write_is_a_storage_error_and_releases(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_timeout=2)
        before = snapshot(storage)
        with (
            self._failing_lock_write(tree, OSError(28, "No space left on device"), lands=False),
            pytest.raises(StorageError),
        ):
            tree.find("m/v1").update(late=True)
        assert {k: v for k, v in snapshot(storage).items() if k != LOCK} == before
        assert not tree._db.lock.is_locked
        self._free_for_others(storage)
        tree.find("m/v1").update(again=True)  # and the failed object itself recovers

    def test_interrupted_acquisition_gives_the_lock_back(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_timeout=2)
        with (
            self._failing_lock_write(tree, KeyboardInterrupt(), lands=True),
            pytest.raises(KeyboardInterrupt),
        ):
            tree.find("m/v1").update(late=True)
        assert "late" not in tree.find("m/v1").metadata
        assert tree.lock_status() is None
        self._free_for_others(storage)

    def test_lock_object_that_is_a_directory(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_timeout=2)
        storage.write_atomic(f"{LOCK}/planted", b"")
        error = ""
        try:
            tree.find("m/v1").update(ok=True)
        except StorageError as exc:  # never a LockTimeout "held by unknown", never a false win
            error = str(exc)
        if error:
            assert "the lock object is a directory" in error, error
            assert "ok" not in tree.find("m/v1").metadata
        else:  # a store where a key and a prefix of one name coexist (S3 on moto)
            assert not storage.capabilities.exclusive_names
        storage.remove_tree(LOCK)
        storage.fs.invalidate_cache()
        if storage.fs.exists(storage.abs(LOCK)):
            return  # a server that keeps empty directories (SeaweedFS's filer keeps "a/")
        tree.find("m/v1").update(after=True)  # nothing was left locked
        assert tree.find("m/v1").metadata["after"] is True

    # -- item 9.11: exclusion does not depend on a file others replace ------------------
    def test_resaving_the_config_does_not_break_exclusion(self, storage: Storage) -> None:
        tree = self._seeded(storage)
        config = storage.read_bytes(".metatree")
        with tree.transaction():
            storage.write_atomic(".metatree", config)  # an editor's temp file + rename
            with pytest.raises(LockTimeout):
                Metatree(storage, lock_timeout=0.3).find("m/v1").update(second=True)
            tree.find("m/v1").update(first=True)
        metadata = tree.find("m/v1").metadata
        assert metadata["first"] is True
        assert "second" not in metadata

    # -- item 19.3: fork ----------------------------------------------------------------
    def test_fork_pool_workers_do_not_share_the_lease(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = self._seeded(storage)
        tree.find("m/v1").update(counter=0)
        n, count = self.fork_workers, self.fork_increments
        parent, child = SPAWN.Pipe()
        helper = SPAWN.Process(  # a clean process to fork from (no server threads)
            target=_workers.fork_pool_report, args=(tree, n, count, child)
        )
        helper.start()
        try:
            assert parent.poll(120), "the fork pool did not finish"
            errors = parent.recv()
        finally:
            helper.kill()
            helper.join()
        if any("not fork-safe" in error for error in errors):
            pytest.skip("this filesystem's client refuses to run in a forked child (fsspec)")
        assert errors == []
        assert tree.find("m/v1").metadata["counter"] == n * count

    # -- item 19.4: same host name is not the same machine ------------------------------
    def test_same_host_name_other_machine_is_not_taken_over(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_timeout=0.5)
        self._lease_lock(tree)
        storage.write_atomic(LOCK, _lease(boot="another-boot"))  # dead pid, but not ours
        with pytest.raises(LockTimeout):
            tree.find("m/v1").update(stolen=True)
        storage.write_atomic(LOCK, _lease(pidns="another-namespace"))
        with pytest.raises(LockTimeout):
            tree.find("m/v1").update(stolen=True)
        assert "stolen" not in tree.find("m/v1").metadata
        if not all(machine_id()):
            return  # no boot id / PID namespace here: no holder is provably on this machine
        storage.write_atomic(LOCK, _lease())  # provably this machine, and its pid is gone
        assert tree.lock_status() is None
        tree.find("m/v1").update(taken=True)

    # -- item 19.5: an expired holder starts over ---------------------------------------
    def test_expired_holder_takes_the_lock_again(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_ttl=0.6, lock_timeout=10)
        lock = self._lease_lock(tree)

        def failing(*args: Any, **kwargs: Any) -> Any:
            raise StorageError(lock.name, "injected: renewals fail")

        with pytest.raises(LockLostError), tree.transaction():  # noqa: PT012
            lock.store.replace = failing  # type: ignore[method-assign]
            tree.find("m/v1").update(lost=True)
            time.sleep(1.0)  # past the lease: every renewal failed
        del lock.store.replace
        tree.find("m/v1").update(after=True)  # no re-adoption of the expired lease
        metadata = tree.find("m/v1").metadata
        assert (metadata["after"], "lost" in metadata) == (True, False)

    # -- item 19.6: release is conditional ----------------------------------------------
    def test_release_after_force_break_keeps_the_next_holders_lease(self, storage: Storage) -> None:
        tree = self._seeded(storage)
        self._lease_lock(tree)
        nxt = Metatree(storage)
        holding, done = threading.Event(), threading.Event()

        def hold() -> None:
            with nxt.transaction():
                holding.set()
                done.wait(30)

        holder = threading.Thread(target=hold)
        try:
            with tree.transaction():
                assert Metatree(storage).break_lock(force=True) is True
                holder.start()
                assert holding.wait(30)
            status = tree.lock_status()  # the broken holder released: not the next one's lease
            assert status is not None
            assert status.owner == nxt._db.lock.owner  # type: ignore[attr-defined]
            with pytest.raises(LockTimeout):
                Metatree(storage, lock_timeout=0.3).find("m/v1").update(third=True)
        finally:
            done.set()
            if holder.is_alive():
                holder.join()
        assert "third" not in tree.find("m/v1").metadata

    # -- item 19.7: check does not race the renewal -------------------------------------
    def test_slow_lease_reads_do_not_fail_a_healthy_writer(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_ttl=self.lease_ttl)
        lock = self._lease_lock(tree)
        original = lock.store.read

        def slow_read() -> Any:
            time.sleep(0.05)  # a slow name node: renewals land while a check reads
            return original()

        lock.store.read = slow_read  # type: ignore[method-assign]
        try:
            for i in range(40):
                tree.find("m/v1").update(n=i)
        finally:
            del lock.store.read
        assert tree.find("m/v1").metadata["n"] == 39

    # -- item 19.9: metatreedb's empty .lock --------------------------------------------
    def test_empty_foreign_lock_is_taken_over_within_the_default_timeout(
        self, storage: Storage
    ) -> None:
        tree = self._seeded(storage)
        lock: Any = tree._db.lock
        assert lock.foreign_ttl < lock.timeout  # with defaults, one waiting writer gets there
        storage.write_atomic(LOCK, b"")  # what metatreedb 0.2.3 touches
        first = Metatree(storage, lock_timeout=0.3)
        first._db.lock.foreign_ttl = 0.6  # type: ignore[attr-defined]
        with pytest.raises(LockTimeout, match="metatreedb"):
            first.find("m/v1").update(early=True)
        second = Metatree(storage, lock_timeout=5)  # a new lock object goes on counting
        second._db.lock.foreign_ttl = 0.6  # type: ignore[attr-defined]
        second.find("m/v1").update(taken=True)
        assert second.find("m/v1").metadata["taken"] is True
        assert "early" not in second.find("m/v1").metadata

    # -- item 19.10: clock skew ---------------------------------------------------------
    def test_waiter_with_fast_clock_does_not_take_a_live_lease(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = self._seeded(storage, lock_ttl=self.lease_ttl, lock_timeout=30)
        self._lease_lock(tree)
        parent, child = SPAWN.Pipe()
        holder = SPAWN.Process(target=_workers.hold_with_skew, args=(tree, child, -30.0))
        holder.start()
        try:
            assert parent.poll(60)
            assert parent.recv() == "holding"
            waiter = Metatree(storage, lock_timeout=3 * self.lease_ttl)
            with pytest.raises(LockTimeout):
                waiter.find("m/v1").update(waiter=True)
            parent.send("go")
            assert parent.poll(60)
            assert parent.recv() == "committed"
        finally:
            holder.kill()
            holder.join()
        metadata = tree.find("m/v1").metadata
        assert (metadata["skewed"], "waiter" in metadata) == (True, False)

    def test_waiter_with_slow_clock_takes_a_dead_lease(self, storage: Storage) -> None:
        self._require_processes(storage)
        tree = self._seeded(storage, lock_ttl=self.lease_ttl, lock_timeout=30)
        self._lease_lock(tree)
        parent, child = SPAWN.Pipe()
        holder = SPAWN.Process(target=_workers.hold_with_skew, args=(tree, child, 30.0))
        holder.start()
        try:
            assert parent.poll(60)
            assert parent.recv() == "holding"
            assert holder.pid is not None
            os.kill(holder.pid, signal.SIGSTOP)  # alive, so only its lease can time out
            Metatree(storage, lock_timeout=10).find("m/v1").update(winner=True)
            os.kill(holder.pid, signal.SIGCONT)
            parent.send("go")
            assert parent.poll(60)
            assert parent.recv() == LockLostError.__name__
        finally:
            holder.kill()
            holder.join()
        metadata = tree.find("m/v1").metadata
        assert (metadata["winner"], "skewed" in metadata) == (True, False)

    # -- item 19 smaller: lost replies --------------------------------------------------
    def test_lost_create_reply_is_adopted_only_with_proof(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_timeout=2)
        self._lease_lock(tree)
        lost = StorageError("lock", "injected: the reply was lost")
        with self._failing_lock_write(tree, lost, lands=True):
            tree.find("m/v1").update(adopted=True)  # its own create won: adopted, committed
        assert tree.find("m/v1").metadata["adopted"] is True
        assert tree.lock_status() is None  # and released as usual
        with (
            self._failing_lock_write(tree, lost, lands=False),
            pytest.raises(StorageError, match="injected"),
        ):
            tree.find("m/v1").update(never=True)  # nothing landed: the error stands
        assert "never" not in tree.find("m/v1").metadata

    def test_lost_renewal_reply_is_recovered(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_ttl=self.lease_ttl, lock_timeout=5)
        lock = self._lease_lock(tree)
        original = lock.store.replace
        calls: list[bool] = []

        def lose_first_reply(*args: Any, **kwargs: Any) -> Any:
            version = original(*args, **kwargs)
            calls.append(True)
            if len(calls) == 1:
                raise StorageError(lock.name, "injected: the renewal's reply was lost")
            return version

        with tree.transaction():
            lock.store.replace = lose_first_reply  # type: ignore[method-assign]
            tree.find("m/v1").update(renewed=True)
            time.sleep(1.4 * self.lease_ttl)  # renewals: the first landed without a reply
        del lock.store.replace
        assert len(calls) >= 3
        assert tree.find("m/v1").metadata["renewed"] is True
        assert tree.lock_status() is None

    @pytest.mark.parametrize("write", ["create", "renewal"])
    def test_a_landed_write_whose_retry_was_refused_is_ours(
        self, storage: Storage, write: str
    ) -> None:
        """A write that landed, its reply lost, retried by the client and refused (412).

        gcsfs and the S3 and Azure SDKs retry a request whose reply was lost: the retry of
        a conditional write that had landed is refused, and the store says "lost" with no
        error. The lease read that as another writer's: a renewal ended in a false
        LockLostError with our lease left behind; a create waited out its own lease. The
        stored body tells: ours is adopted.
        """
        tree = self._seeded(storage, lock_ttl=self.lease_ttl, lock_timeout=5)
        lock = self._lease_lock(tree)
        original = getattr(lock.store, write if write == "create" else "replace")
        calls: list[bool] = []

        def landed_but_refused(*args: Any, **kwargs: Any) -> Any:
            version = original(*args, **kwargs)
            calls.append(True)
            return None if len(calls) == 1 and version is not None else version

        taken_over: list[bool] = []
        replace = lock.store.replace

        def taking_over(version: Any, body: bytes, *, owned: bool) -> Any:
            taken_over.append(not owned)
            return replace(version, body, owned=owned)

        if write == "create":
            lock.store.replace = taking_over  # type: ignore[method-assign]
        setattr(lock.store, write if write == "create" else "replace", landed_but_refused)
        try:
            with tree.transaction():
                tree.find("m/v1").update(renewed=True)
                if write == "renewal":
                    time.sleep(1.4 * self.lease_ttl)  # renewals: the first refused, landed
        finally:
            delattr(lock.store, write if write == "create" else "replace")
            if write == "create":
                del lock.store.replace
        assert calls
        assert not any(taken_over)  # our own lease adopted, not waited out and taken over
        assert tree.find("m/v1").metadata["renewed"] is True
        assert tree.lock_status() is None  # released: not left for ttl to block others

    # -- item 19 smaller: planted lease bodies ------------------------------------------
    @pytest.mark.parametrize("case", sorted(CORRUPT_BODIES))
    def test_corrupt_lease_is_foreign_with_a_reason(self, storage: Storage, case: str) -> None:
        tree = self._seeded(storage, lock_timeout=0.3)
        storage.write_atomic(LOCK, CORRUPT_BODIES[case])
        status = tree.lock_status()
        assert status is not None
        assert status.owner == "foreign"
        with pytest.raises(LockTimeout, match="did not write") as info:
            tree.find("m/v1").update(early=True)
        assert "taken over after" in info.value.holder
        taker = Metatree(storage, lock_timeout=10)
        taker._db.lock.foreign_ttl = 0.3  # type: ignore[attr-defined]
        taker.find("m/v1").update(taken=True)
        metadata = tree.find("m/v1").metadata
        assert (metadata["taken"], "early" in metadata) == (True, False)

    def test_lease_without_expiry_is_taken_over(self, storage: Storage) -> None:
        tree = self._seeded(storage)
        body = orjson.loads(_lease(expires=0, pid=os.getpid()))  # alive: only expiry at stake
        del body["ttl"]  # as an older writer stored it
        storage.write_atomic(LOCK, orjson.dumps(body))
        taker = Metatree(storage, lock_timeout=10)
        taker._db.lock.foreign_ttl = 0.3  # type: ignore[attr-defined]
        taker.find("m/v1").update(taken=True)  # expires 0 does not mean "held forever"
        assert tree.find("m/v1").metadata["taken"] is True

    def test_fencing_token_grows_over_take_overs(self, storage: Storage) -> None:
        tree = self._seeded(storage)
        ahead = time.time_ns() + 10**15  # written by a holder whose clock runs days ahead
        storage.write_atomic(LOCK, _lease(token=ahead))  # and whose pid is gone
        tokens = []
        for _ in range(2):  # a take-over, then a fresh lock after a release
            with tree.transaction():
                status = tree.lock_status()
                assert status is not None
                tokens.append(status.token)
        assert ahead < tokens[0] < tokens[1]

    # -- item 9 clear errors ------------------------------------------------------------
    @pytest.mark.parametrize(
        "options",
        [
            {"lock_ttl": 0},
            {"lock_ttl": -1},
            {"lock_ttl": math.nan},
            {"lock_ttl": math.inf},
            {"lock_ttl": True},
            {"lock_ttl": "30"},
            {"lock_timeout": math.nan},
            {"lock_timeout": "60"},
        ],
        ids=repr,
    )
    def test_bad_lock_options_are_refused_before_any_write(
        self, storage: Storage, options: dict[str, Any]
    ) -> None:
        with pytest.raises(DatabaseError, match="lock_"):
            Metatree(storage, KEYS, **options)
        assert snapshot(storage) == {}

    def test_infinite_lock_timeout_waits_forever(self, storage: Storage) -> None:
        tree = self._seeded(storage, lock_timeout=math.inf)
        assert tree._db.lock.timeout < 0
        tree.find("m/v1").update(ok=True)

    def test_timeout_advice_matches_what_break_lock_can_do(self, storage: Storage) -> None:
        self._seeded(storage)
        with held_elsewhere(storage):
            waiter = Metatree(storage, lock_timeout=0.2)
            with pytest.raises(LockTimeout) as info:
                waiter.find("m/v1").update(late=True)
            try:
                broken = waiter.break_lock(force=True)
            except LockError:
                broken = False
            assert ("break_lock" in info.value.advice) == broken
            assert ("cannot" in info.value.advice or "no other process" in info.value.advice) == (
                not broken
            )
