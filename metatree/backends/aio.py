"""Run a coroutine on an async fsspec filesystem's event loop, and never leave it running.

fsspec's ``sync()`` (behind every blocking method of s3fs: ``pipe_file``, ``cat_file``,
``open``...) waits for the coroutine in a loop that a ``KeyboardInterrupt`` can break; the
coroutine then keeps running on fsspec's IO thread. A write interrupted by Ctrl-C during a
commit landed seconds later, after the lock it was made under had been released and another
writer had committed (issue 19). `run` is the one runner metatree uses for its S3 requests:
on any exception while waiting (KeyboardInterrupt, SystemExit, a timeout) it cancels the task
on the loop and waits, bounded by `CANCEL_WAIT`, until the task has really finished before it
re-raises. So once a call has returned or raised, nothing it started is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from contextlib import AbstractContextManager

    from metatree._transfer import Upload

__all__ = ["CANCEL_WAIT", "abortable", "run", "upload_each"]

T = TypeVar("T")

CANCEL_WAIT = 30.0
"""Seconds to wait for a cancelled request to unwind (aiohttp closes its socket at once)."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


ABORT_STEP = 0.05
"""Seconds between looks at an `abortable` request's stop event."""

_local = threading.local()


@contextlib.contextmanager
def abortable(stop: threading.Event) -> Iterator[None]:
    """Make `run` in this thread give up (cancelled, awaited) once `stop` is set.

    For a wave's reads (`metatree._waves`), which run in pool threads: an interrupt reaches
    the thread that waits for the wave only, and stops the requests it no longer waits for
    through `stop`.
    """
    _local.stop = stop
    try:
        yield
    finally:
        _local.stop = None


def _wait(done: threading.Event, timeout: float | None) -> bool:
    """Wait for `done`; a module function so that tests can inject an interrupt here."""
    return done.wait(timeout)


def run(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None = None
) -> T:
    """Run `coro` on `loop` (running in another thread) and return its result.

    Unlike ``fsspec.asyn.sync``, an exception raised in this thread while waiting cancels the
    task and waits for it to end before propagating: no request outlives the call. After
    `timeout` seconds the task is cancelled the same way and `TimeoutError` is raised.
    """
    done = threading.Event()
    box: dict[str, asyncio.Task[T]] = {}

    def start() -> None:
        task = loop.create_task(coro)
        task.add_done_callback(lambda _: done.set())
        box["task"] = task

    def cancel() -> None:
        box["task"].cancel()

    if loop.is_closed():
        coro.close()
        raise RuntimeError("the filesystem's event loop is closed")
    if _running_loop() is loop:  # waiting here would block the loop the task needs
        coro.close()
        raise RuntimeError("metatree's blocking API was called from the filesystem's own loop")
    loop.call_soon_threadsafe(start)
    deadline = None if timeout is None else time.monotonic() + timeout
    stop = getattr(_local, "stop", None)
    step = 1.0 if stop is None else ABORT_STEP
    try:
        while not _wait(done, step if deadline is None else min(step, timeout or step)):
            # short waits keep the thread responsive to signals
            if not loop.is_running():
                break  # its thread ended (an exception escaped a task): no answer will come
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no answer within {timeout:g}s")  # noqa: TRY301 - cancels too
            if stop is not None and stop.is_set():
                raise InterruptedError("the wave this request was sent in stopped")  # noqa: TRY301
    except BaseException:
        loop.call_soon_threadsafe(cancel)  # runs after `start`: the callbacks are FIFO
        _wait(done, CANCEL_WAIT)
        raise
    if not done.is_set():  # was a `timeout` per request, every request after
        if "task" not in box:
            coro.close()
        raise RuntimeError("the filesystem's event loop stopped running (its thread ended)")
    return box["task"].result()


def upload_each(
    loop: asyncio.AbstractEventLoop,
    items: list[tuple[Callable[[], AbstractContextManager[Upload]], str]],
    concurrency: int,
    put: Callable[[Upload, str], Coroutine[Any, Any, None]],
) -> list[Exception | None]:
    """`Backend.put_many` on an async filesystem: up to `concurrency` `put`s in flight on `loop`.

    One task per file under a semaphore: after the first failure the rest never start, and
    the uploads in flight finish (their entries say whether they were stored: a cancelled
    request may still land, so `Stopped` means "not stored"). The batch runs through `run`,
    so an interrupt of the caller cancels every request and returns only once they ended.
    Sources are read on the loop's thread (callers give bytes or local files): a source
    raising KeyboardInterrupt or SystemExit there stops the batch like a failure, and is
    raised again in the caller's thread once the batch is over; escaping a task, it ended
    the loop's thread, and with it every later request of every filesystem on that loop.
    """
    from metatree.backends.base import Stopped

    out: list[Exception | None] = [Stopped() for _ in items]
    gate = asyncio.Semaphore(max(1, concurrency))
    failed: list[BaseException] = []
    interrupts: list[BaseException] = []

    async def one(index: int) -> None:
        opener, path = items[index]
        async with gate:
            if failed:  # another upload failed: this one never starts
                return
            try:
                with opener() as upload:
                    await put(upload, path)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - returned in `out`
                out[index] = exc
                failed.append(exc)
                return
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                failed.append(exc)
                interrupts.append(exc)
                return
        out[index] = None

    async def every() -> None:
        await asyncio.gather(*(one(index) for index in range(len(items))))

    if items:
        run(loop, every())
    if interrupts:
        raise interrupts[0]
    return out
