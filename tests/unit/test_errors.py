"""Every error survives pickling: same type, message, ``args`` and public attributes.

Errors cross process boundaries (lock holders and test workers run in other processes), so the
classes are discovered by introspection (a new one cannot be forgotten) and each is sent both
through `pickle` and through a real worker process.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing as mp
import pickle
import threading
import typing
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from metatree import errors
from metatree.errors import ConflictError, MetatreeError, StorageError

if TYPE_CHECKING:
    from collections.abc import Iterator


class UserConflict(ConflictError):
    """A subclass as a user would write it: its own signature, keyword-only, an extra field."""

    def __init__(self, path: str, *, attempts: int) -> None:
        super().__init__(path, f"gave up after {attempts} attempts")
        self.attempts = attempts


class UserStorageError(StorageError):
    """A subclass without an ``__init__`` of its own, on the `OSError` branch."""


ERROR_CLASSES = sorted(
    (c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, MetatreeError)),
    key=lambda c: c.__name__,
)
SAMPLES: dict[Any, Any] = {str: "a/<b>", float: 2.5, int: 3}


def _build(cls: type[MetatreeError], *, defaults: bool) -> MetatreeError:
    """Instantiate `cls` from its signature: required arguments by position, others by name."""
    hints = typing.get_type_hints(cls.__init__)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, param in list(inspect.signature(cls).parameters.items()):
        value = SAMPLES[hints[name]]
        if isinstance(value, str):
            value = f"{value}-{name}"
        if param.default is not param.empty:
            if not defaults:
                kwargs[name] = value
        elif param.kind is param.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    return cls(*args, **kwargs)


CASES = [
    pytest.param(_build(cls, defaults=defaults), id=f"{cls.__name__}-{label}")
    for cls in [*ERROR_CLASSES, UserConflict, UserStorageError]
    for defaults, label in ((True, "defaults"), (False, "all-arguments"))
]


def _public(error: BaseException) -> dict[str, Any]:
    return {k: v for k, v in vars(error).items() if not k.startswith("_")}


def _assert_same(copy: BaseException, error: BaseException) -> None:
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert _public(copy) == _public(error)
    assert getattr(copy, "__notes__", None) == getattr(error, "__notes__", None)


def _raise(error: BaseException) -> None:
    """Run in a worker process: the error travels there and back pickled."""
    raise error


@pytest.fixture(scope="module")
def worker() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        yield pool


def test_every_error_class_is_exported() -> None:
    """The hierarchy is discovered from the module; `__all__` must name all of it."""
    assert sorted(errors.__all__) == [c.__name__ for c in ERROR_CLASSES]
    assert len(ERROR_CLASSES) >= 15


@pytest.mark.parametrize("error", CASES)
def test_pickle_round_trip(error: MetatreeError) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        _assert_same(pickle.loads(pickle.dumps(error, protocol)), error)


@pytest.mark.parametrize("error", CASES)
def test_process_round_trip(error: MetatreeError, worker: ProcessPoolExecutor) -> None:
    with pytest.raises(MetatreeError) as caught:
        worker.submit(_raise, error).result()
    _assert_same(caught.value, error)


def test_attributes_set_after_construction_survive() -> None:
    """Notes and fields added after ``__init__`` come back too, not only the arguments."""
    error = UserConflict("m/v1", attempts=4)
    error.add_note("while committing m/v1")
    error.holder = "pid 12"  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(error))
    _assert_same(copy, error)
    assert copy.holder == "pid 12"


def test_os_error_branch_keeps_its_builtin_fields() -> None:
    """An `OSError` subclass must not come back with its message split into errno/strerror."""
    copy = pickle.loads(pickle.dumps(StorageError("a/b", "boom")))
    assert (copy.errno, copy.strerror, copy.filename) == (None, None, None)
    assert copy.args == ("storage failure at 'a/b': boom",)


@dataclasses.dataclass
class UserDataclassError(MetatreeError):
    """A dataclass adds its ``__init__`` after `__init_subclass__` ran: nothing is recorded."""

    job: str
    code: int = 1

    def __post_init__(self) -> None:
        super().__init__(f"job {self.job} failed with {self.code}")


@dataclasses.dataclass
class UserBareDataclassError(MetatreeError):
    """A dataclass that never calls ``MetatreeError.__init__``: ``args`` stays empty."""

    job: str

    def __str__(self) -> str:
        return f"job {self.job} failed"


class UserUnpicklableArgument(MetatreeError):
    """A constructor argument that cannot be pickled (only its repr is in the message)."""

    def __init__(self, handle: object) -> None:
        super().__init__(f"bad handle {handle!r}")


def test_a_dataclass_error_comes_back_whole(worker: ProcessPoolExecutor) -> None:
    """Unpickling must not fail: in a pool it breaks the pool (`BrokenProcessPool`)."""
    error = UserDataclassError("j1", code=7)
    for copy in (pickle.loads(pickle.dumps(error)), _through(worker, error)):
        assert type(copy) is UserDataclassError
        assert (copy.job, copy.code, str(copy)) == ("j1", 7, "job j1 failed with 7")


def test_a_bare_dataclass_error_comes_back_whole(worker: ProcessPoolExecutor) -> None:
    error = UserBareDataclassError(job="j2")
    for copy in (pickle.loads(pickle.dumps(error)), _through(worker, error)):
        assert type(copy) is UserBareDataclassError
        assert (copy.job, str(copy)) == ("j2", "job j2 failed")


def test_an_unpicklable_attribute_stays_behind(worker: ProcessPoolExecutor) -> None:
    """The error arrives, of its type, without the attribute (not as a pickling error)."""
    error = UserConflict("m/v1", attempts=2)
    error.lock = threading.Lock()  # type: ignore[attr-defined]
    copy = _through(worker, error)
    assert type(copy) is UserConflict
    assert (copy.attempts, str(copy)) == (2, str(error))
    assert not hasattr(copy, "lock")


def test_an_unpicklable_constructor_argument_does_not_stop_the_error(
    worker: ProcessPoolExecutor,
) -> None:
    error = UserUnpicklableArgument(threading.Lock())
    copy = _through(worker, error)
    assert type(copy) is UserUnpicklableArgument
    assert str(copy) == str(error)


def _through(worker: ProcessPoolExecutor, error: MetatreeError) -> MetatreeError:
    """Raise `error` in the worker process and return what arrives here."""
    with pytest.raises(MetatreeError) as caught:
        worker.submit(_raise, error).result()
    return caught.value
