"""Waves: requests sent together, so that the user waits for one round trip instead of several.

On an object store every request is a network round trip, and an operation's latency is
the length of its chain of *dependent* requests, not their number. Many of an operation's
reads are known before the first answer (every level's metadata.json of ``a/b/c``), so
they go out together as one `Wave` and are then looked at in order, exactly as if they had
been read one after another.

Where concurrency does not pay (local disk, memory: a backend's ``read_concurrency`` of 1)
a wave is lazy: each request runs only when its result is first asked for, in the order
asked, so what is never needed is never read and those backends keep their old path.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from metatree.backends.aio import abortable
from metatree.errors import StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Later", "Wave"]

T = TypeVar("T")


class Wave(Generic[T]):
    """Jobs (one read each) started together when `width` > 1; results asked by index.

    `result` waits for its own job only: a read nobody needs (an earlier level said the node
    is not there) is never waited for. A job's exception is kept and raised by `result`,
    for that job only: one failed read never hides the others. Waves only read, so a read
    left running when the caller stops (an interrupt, a miss) changes nothing; an interrupt
    stops the jobs that have not started and aborts the S3 requests in flight
    (`metatree.backends.aio.abortable`). The threads are the filesystem's (`_pool`): starting
    threads for each wave cost 1 ms a wave.
    """

    def __init__(self, jobs: Sequence[Callable[[], T]], width: int, owner: object = None) -> None:
        self._jobs = list(jobs)
        self._owner = owner
        """Whose pool runs the jobs (`_pool`): the filesystem they read."""
        self._outcome: dict[int, tuple[bool, T | Exception]] = {}
        self._futures: list[Future[tuple[bool, T | Exception]]] = []
        self._stopped = threading.Event()
        if width > 1 and len(self._jobs) > 1:
            self._send(width)

    def _send(self, width: int) -> None:
        """Start the jobs on their filesystem's pool, `width` at a time (each starts the next).

        A job waiting for its turn holds no thread: only the reads in flight do.
        """
        pool = _pool(self._owner)
        stopped = self._stopped
        lock = threading.Lock()
        waiting = iter(range(len(self._jobs)))
        self._futures = [Future() for _ in self._jobs]

        def start_next() -> None:
            with lock:
                index = None if stopped.is_set() else next(waiting, None)
            if index is not None:
                try:
                    pool.submit(run, index)
                except RuntimeError:  # the pool was shut down (`POOLS_KEPT`): run it here
                    run(index)

        def run(index: int) -> None:
            future = self._futures[index]
            if future.set_running_or_notify_cancel():
                with abortable(stopped):
                    future.set_result(_outcome(self._jobs[index]))
            start_next()

        for _ in range(min(width, len(self._jobs))):
            start_next()

    def stop(self) -> None:
        """Start no more of its jobs, and abort its S3 requests in flight.

        Called when the caller no longer needs the wave (a miss, an error, an interrupt):
        its reads must not hold the process's threads.
        """
        self._stopped.set()
        for future in self._futures:
            future.cancel()  # only those not started: their `result` raises CancelledError

    def sent(self, index: int) -> bool:
        """Whether job `index` was sent (a lazy wave runs a job only when asked)."""
        return index in self._outcome or index < len(self._futures)

    def result(self, index: int) -> T:
        """Return job `index`'s result (running it now if the wave is lazy), or raise its error."""
        if index not in self._outcome:
            if index < len(self._futures):
                try:
                    self._outcome[index] = self._futures[index].result()
                except CancelledError:
                    stopped = StorageError(f"job {index}", "not read: its wave was stopped")
                    self._outcome[index] = (False, stopped)
                except BaseException:  # an interrupt while waiting: the others stop too
                    self.stop()
                    raise
            else:
                self._outcome[index] = _outcome(self._jobs[index])
        ok, value = self._outcome[index]
        if not ok:
            assert isinstance(value, Exception)
            raise value
        return value  # type: ignore[return-value]


class Later:
    """A `Wave` sent when one of its results is first asked for (or `send`), or never (`stop`)."""

    def __init__(self, jobs: Sequence[Callable[[], Any]], width: int, owner: object) -> None:
        self._jobs, self._width, self._owner = list(jobs), width, owner
        self._wave: Wave[Any] | None = None
        self._stopped = False

    def send(self) -> None:
        """Send the wave now (once)."""
        if self._wave is None and not self._stopped:
            self._wave = Wave(self._jobs, self._width, self._owner)

    def result(self, index: int) -> Any:
        """Return job `index`'s result, sending the wave first if it was not."""
        self.send()
        if self._wave is None:
            raise StorageError(f"job {index}", "not read: its wave was stopped before it was sent")
        return self._wave.result(index)

    def stop(self) -> None:
        """Stop the wave (`Wave.stop`); one not sent yet never will be."""
        self._stopped = True
        if self._wave is not None:
            self._wave.stop()


POOL_SIZE = 256
"""Threads of one filesystem's pool, made as needed: only reads in flight hold one (a wave
holds at most its `width`), so a stalled server delays its own reads only past this many."""

POOLS_KEPT = 16
"""Filesystems whose pools are kept; the least recently used one beyond is shut down."""

_POOLS: dict[tuple[int, int], tuple[object, ThreadPoolExecutor]] = {}
_POOLS_LOCK = threading.Lock()


def _pool(owner: object) -> ThreadPoolExecutor:
    """Return the pool of `owner` (a filesystem) in this process, made on first use.

    One per filesystem: reads stalled on one server (WebHDFS cannot abort a request in
    flight) never hold the threads another store's reads need. One per process: a forked
    child's copy of its parent's pool has no threads, and would never run a job. The pool
    keeps its owner alive (filesystems are few and cached by fsspec).
    """
    key = (os.getpid(), id(owner))
    with _POOLS_LOCK:
        found = _POOLS.pop(key, None)
        if found is None or found[0] is not owner:
            pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="metatree-wave")
            found = (owner, pool)
        _POOLS[key] = found  # the most recently used last
        while len(_POOLS) > POOLS_KEPT:  # the least recently used lets its threads go
            _, old = _POOLS.pop(next(iter(_POOLS)))
            old.shutdown(wait=False)
        return found[1]


def _outcome(job: Callable[[], T]) -> tuple[bool, T | Exception]:
    try:
        return True, job()
    except Exception as exc:  # noqa: BLE001 - kept: raised by `Wave.result` for this job only
        return False, exc
