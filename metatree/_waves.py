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

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Wave"]

T = TypeVar("T")


class Wave(Generic[T]):
    """Jobs (one request each) started together when `width` > 1; results asked by index.

    A job's exception is kept and raised by `result`, for that job only: one failed read
    never hides the others. Nothing outlives the constructor: it returns once every job
    sent has finished (an interrupt waits for the ones running and drops the rest).
    """

    def __init__(self, jobs: Sequence[Callable[[], T]], width: int) -> None:
        self._jobs = list(jobs)
        self._outcome: dict[int, tuple[bool, T | Exception]] = {}
        if width > 1 and len(self._jobs) > 1:
            pool = ThreadPoolExecutor(min(width, len(self._jobs)))
            try:
                for index, outcome in enumerate(pool.map(_outcome, self._jobs)):
                    self._outcome[index] = outcome
            finally:  # on an interrupt too: nothing this wave started runs on after it
                pool.shutdown(wait=True, cancel_futures=True)

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


def _outcome(job: Callable[[], T]) -> tuple[bool, T | Exception]:
    try:
        return True, job()
    except Exception as exc:  # noqa: BLE001 - kept: raised by `Wave.result` for this job only
        return False, exc
