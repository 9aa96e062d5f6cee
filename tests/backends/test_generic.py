"""The generic backend on filesystems no backend is registered for (fsspec's DirFileSystem).

Two kinds of generic filesystem: one with real directories (DirFileSystem over local disk,
without ``auto_mkdir``: a write below a missing directory fails) and one whose directories
are key prefixes (DirFileSystem over memory). Both suites run on each (about 50 s in all).

The generic backend describes these two as what they are (names exclusive; memory:
`data_in_memory`). A filesystem it does not know gets ``exclusive_names=False``, which the
suites read as "a key and a prefix can share a name": on real directories four conformance
tests that plant both would fail (docs/backends.md, "Generic filesystems").
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import TYPE_CHECKING

import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from metatree import Metatree, PathError, Storage, StorageError, as_storage
from metatree.backends import backend_for
from metatree.backends.generic import GenericBackend
from metatree.testing import BackendTests
from metatree.testing.conformance import KEYS, BackendConformance
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# opening a tree here warns that the DB lock is in-process only; checked once below
pytestmark = pytest.mark.filterwarnings(
    "ignore:no lock of its own for:metatree.warnings.MetatreeWarning"
)


class _OnDisk:
    """DirFileSystem over local disk: real directories, no ``auto_mkdir``."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return as_storage("db", fs=DirFileSystem(path=str(tmp_path), fs=LocalFileSystem()))


class _InMemory:
    """DirFileSystem over fsspec's memory filesystem: directories are key prefixes."""

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        base = f"/{uuid.uuid4().hex}"
        memory = MemoryFileSystem()
        yield as_storage("db", fs=DirFileSystem(path=base, fs=memory))
        if memory.exists(base):
            memory.rm(base, recursive=True)


class _Generic:
    """What only the generic backend promises: it is picked, and it warns about its lock."""

    def test_the_generic_backend_serves_it(self, storage: Storage) -> None:
        """DirFileSystem has no registered backend: the registry falls back to the generic one."""
        assert isinstance(backend_for(storage.fs), GenericBackend)
        assert isinstance(storage.backend, GenericBackend)
        capabilities = storage.capabilities  # what it cannot know stays unpromised
        assert not capabilities.atomic_exclusive_create
        assert not capabilities.conditional_write
        assert not capabilities.real_directories

    def test_opening_warns_that_the_lock_is_in_process(self, storage: Storage) -> None:
        """The warning this module filters is emitted: the DB lock excludes no other process."""
        with pytest.warns(MetatreeWarning, match="no lock of its own for DirFileSystem"):
            Metatree(storage, KEYS)


class TestDiskConformance(_OnDisk, BackendConformance):
    """Every behaviour of the database on a generic filesystem with real directories."""

    # The generic backend's exclusive create checks then writes, its write_if does not
    # compare, and its DB lock excludes only this process's threads: writers in several
    # processes are not excluded (the warning says so), so the process races skip.
    concurrency_safe = False


class TestDiskBackend(_OnDisk, _Generic, BackendTests):
    """The primitives on a generic filesystem with real directories."""


class TestMemoryConformance(_InMemory, BackendConformance):
    """Every behaviour of the database on a generic filesystem of keys."""


class TestMemoryBackend(_InMemory, _Generic, BackendTests):
    """The primitives on a generic filesystem of keys."""


def test_a_removed_node_frees_its_name_with_auto_mkdir(tmp_path: Path) -> None:
    """With ``auto_mkdir`` the emptied directory of a removed node used to stay, its name taken."""
    fs = DirFileSystem(path=str(tmp_path), fs=LocalFileSystem(auto_mkdir=True))
    tree = Metatree(as_storage("db", fs=fs), ["a", "b"])
    tree.put("x/y", b"1", name="f")
    tree.remove("x/y", recursive=True)
    assert not tree.exists("x/y")
    assert sorted(p.name for p in (tmp_path / "db" / "x").iterdir()) == ["metadata.json"]
    tree.put("x/y", b"2", name="f")  # was AlreadyExistsError for ever
    assert b"".join(tree.get("x/y/f")) == b"2"


@pytest.fixture
def disk_tree(tmp_path: Path) -> Metatree:
    fs = DirFileSystem(path=str(tmp_path / "root"), fs=LocalFileSystem(auto_mkdir=True))
    tree = Metatree(as_storage("db", fs=fs), ["a", "b"])
    tree.put("k/v", b"1", name="f.bin")
    return tree


def test_a_planted_directory_link_is_refused(disk_tree: Metatree, tmp_path: Path) -> None:
    """A node's directory linked outside the root: no put or remove goes through the link."""
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "thesis.tex").write_text("years of work")
    node = tmp_path / "root" / "db" / "k" / "v"
    shutil.rmtree(node)
    node.symlink_to(outside)
    with pytest.raises(PathError, match="symbolic link"):
        disk_tree.remove("k/v", recursive=True)
    with pytest.raises(PathError, match="symbolic link"):
        disk_tree.put("k/v", b"2", name="new.bin", force=True)
    assert sorted(p.name for p in outside.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize("planted", ["f.bin", "metadata.json"])
def test_a_planted_fifo_is_refused_not_waited_on(
    disk_tree: Metatree, tmp_path: Path, planted: str
) -> None:
    """A FIFO where a file is read would block the reader forever: a `StorageError` at once."""
    target = tmp_path / "root" / "db" / "k" / "v" / planted
    target.unlink()
    os.mkfifo(target)
    read = (
        (lambda: b"".join(disk_tree.get("k/v/f.bin")))
        if planted == "f.bin"
        else (lambda: disk_tree.find("k/v").metadata)
    )
    with pytest.raises(StorageError, match="not a regular file"):
        read()
