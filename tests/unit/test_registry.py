"""The one registry: which backend serves a filesystem, and what a backend without a lock gets."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from metatree import Metatree, MetatreeWarning
from metatree.backends import Backend, backend_for, register_backend
from metatree.backends import _registry as registry
from metatree.backends.local import LocalBackend
from metatree.backends.memory import MemoryBackend

if TYPE_CHECKING:
    from collections.abc import Iterator


class SubclassedMemory(MemoryFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """A user's filesystem built on a registered one."""

    protocol = "submemory"


class SubclassedLocal(LocalFileSystem):  # type: ignore[misc]  # fsspec is untyped
    protocol = "sublocal"


class NoLockBackend(Backend):
    """A third party's backend written without a lock of its own."""


@pytest.fixture
def registered() -> Iterator[None]:
    """Register the backends of this module, and forget them afterwards."""
    saved = dict(registry._REGISTRY._entries)
    register_backend(f"{__name__}.SubclassedMemory", f"{__name__}.NoLockBackend")
    register_backend(f"{__name__}.SubclassedLocal", f"{__name__}.NoLockBackend")
    yield
    registry._REGISTRY._entries = saved


@pytest.mark.usefixtures("registered")
def test_the_most_specific_registration_wins() -> None:
    """A backend registered for a subclass serves it, though its base registered first."""
    assert type(backend_for(SubclassedMemory())) is NoLockBackend
    assert type(backend_for(SubclassedLocal())) is NoLockBackend
    assert type(backend_for(MemoryFileSystem())) is MemoryBackend  # the base keeps its own
    assert type(backend_for(LocalFileSystem())) is LocalBackend


def test_registering_twice_needs_clobber() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backend("fsspec.implementations.memory.MemoryFileSystem", f"{__name__}.X")


@pytest.mark.usefixtures("registered")
def test_a_backend_without_a_lock_works_with_the_in_process_one() -> None:
    """No `lease_store`: the tree opens and writes, and a warning says what the lock is not."""
    fs = SubclassedMemory()
    root = f"/{uuid.uuid4().hex}/db"
    with pytest.warns(
        MetatreeWarning, match=r"no lock of its own for SubclassedMemory \(NoLockBackend\)"
    ):
        tree = Metatree(root, keys=("model",), fs=fs)
    assert tree.put("m", b"y", name="f") is True
    assert b"".join(tree.get("m/f")) == b"y"
