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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Wave"]

T = TypeVar("T")


class Wave(Generic[T]):
    """Jobs (one request each) started together when `width` > 1; results asked by index.

    A job's exception is kept and raised by `result`, for that job only: one failed read
    never hides the others. Nothing outlives the constructor: it returns once every job
    sent has finished (an interrupt waits for the ones running and drops the rest). The
    threads are the process's (`_pool`): starting threads for each wave cost 1 ms a wave.
    """

    def __init__(self, jobs: Sequence[Callable[[], T]], width: int) -> None:
        self._jobs = list(jobs)
        self._outcome: dict[int, tuple[bool, T | Exception]] = {}
        if width > 1 and len(self._jobs) > 1:
            self._send(width)

    def _send(self, width: int) -> None:
        """Run every job, `width` at a time, on the process's pool; return when all ended."""
        pool = _pool()
        gate = threading.Semaphore(width)
        stopped = threading.Event()

        def gated(job: Callable[[], T]) -> tuple[bool, T | Exception]:
            with gate:
                if stopped.is_set():  # the wave was interrupted before this job's turn
                    return False, RuntimeError("not sent: the wave was interrupted")
                return _outcome(job)

        futures: list[Future[tuple[bool, T | Exception]]] = []
        try:
            futures.extend(pool.submit(gated, job) for job in self._jobs)
            for index, future in enumerate(futures):
                self._outcome[index] = future.result()
        except BaseException:  # an interrupt: drop what has not started, wait for the rest
            stopped.set()
            for future in futures:
                future.cancel()
            wait(futures)
            raise

    def __len__(self) -> int:
        return len(self._jobs)

    def sent(self, index: int) -> bool:
        """Whether job `index` has run (a lazy wave runs a job only when asked)."""
        return index in self._outcome

    def result(self, index: int) -> T:
        """Return job `index`'s result (running it now if the wave is lazy), or raise its error."""
        if index not in self._outcome:
            self._outcome[index] = _outcome(self._jobs[index])
        ok, value = self._outcome[index]
        if not ok:
            assert isinstance(value, Exception)
            raise value
        return value  # type: ignore[return-value]


POOL_SIZE = 64
"""Threads of the process's pool: waves of every thread share it (a wave holds `width`)."""

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Return this process's pool, made on first use.

    One per process: a forked child's copy of its parent's pool has no threads, and would
    never run a job.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="metatree-wave"))
        return _POOL[1]


def _outcome(job: Callable[[], T]) -> tuple[bool, T | Exception]:
    try:
        return True, job()
    except Exception as exc:  # noqa: BLE001 - kept: raised by `Wave.result` for this job only
        return False, exc
