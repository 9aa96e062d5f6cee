"""`metatree.backends.aio.run`: an interrupted wait cancels the request and waits for it to end."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pytest

from metatree.backends import aio as _aio

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in its own thread, as fsspec's IO loop does."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_returns_the_result(loop: asyncio.AbstractEventLoop) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert _aio.run(loop, answer()) == 42


def test_raises_the_coroutines_error(loop: asyncio.AbstractEventLoop) -> None:
    async def fail() -> None:
        raise OSError("boom")

    with pytest.raises(OSError, match="boom"):
        _aio.run(loop, fail())


def test_interrupt_in_flight_cancels_and_awaits(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the request is in flight: when `run` raises, the coroutine has ended.

    The coroutine blocks on an event nobody sets (a request that has not been answered); the
    interrupt arrives once it is in flight. fsspec's ``sync()`` would leave it running; `run`
    must have cancelled it, and its clean-up must have run, before the KeyboardInterrupt
    reaches the caller (an exact check: the record is read right after the raise).
    """
    started = threading.Event()
    record: list[str] = []

    async def request() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
            record.append("written")  # what an uncancelled write would do later
        except asyncio.CancelledError:
            record.append("cancelled")
            raise

    real_wait = _aio._wait
    calls: list[bool] = []

    def interrupting_wait(done: threading.Event, timeout: float | None) -> bool:
        if not calls:
            calls.append(False)
            assert started.wait(10)
            raise KeyboardInterrupt
        calls.append(real_wait(done, timeout))
        return calls[-1]

    monkeypatch.setattr(_aio, "_wait", interrupting_wait)
    with pytest.raises(KeyboardInterrupt):
        _aio.run(loop, request())
    assert record == ["cancelled"]
    assert calls == [False, True]


def test_timeout_cancels(loop: asyncio.AbstractEventLoop) -> None:
    record: list[str] = []

    async def request() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            record.append("cancelled")
            raise

    with pytest.raises(TimeoutError, match=r"no answer within 0\.05s"):
        _aio.run(loop, request(), timeout=0.05)
    assert record == ["cancelled"]


def test_refuses_to_run_on_its_own_loop(loop: asyncio.AbstractEventLoop) -> None:
    async def nothing() -> None:
        return None

    async def nested() -> None:
        _aio.run(loop, nothing())

    future = asyncio.run_coroutine_threadsafe(nested(), loop)
    with pytest.raises(RuntimeError, match="own loop"):
        future.result(10)


def test_a_loop_whose_thread_ended_fails_fast() -> None:
    """A loop stopped under its callers (its thread ended) fails each call within a step.

    Azure's backend once read a put's source on the loop's thread: a progress callback's
    KeyboardInterrupt ended that thread, and every later request waited its whole timeout.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()

    async def never() -> None:
        return None

    try:
        with pytest.raises(RuntimeError, match="stopped running"):
            _aio.run(loop, never(), timeout=60)
    finally:
        loop.close()
