"""The one registry: which backend serves a filesystem, and what a backend without a lock gets."""

from __future__ import annotations

import multiprocessing as mp
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from metatree import Metatree, MetatreeWarning, Storage, as_storage
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


def _backend_name(storage: Storage) -> str:
    return type(storage.backend).__name__


@pytest.mark.usefixtures("registered")
def test_a_storage_keeps_its_backend_in_another_process() -> None:
    """A spawned process has not registered the backend: the storage brings its class along."""
    storage = as_storage(f"/{uuid.uuid4().hex}/db", fs=SubclassedMemory())
    assert type(storage.backend) is NoLockBackend
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        assert pool.submit(_backend_name, storage).result() == "NoLockBackend"


def test_a_later_registration_under_another_spelling_wins() -> None:
    """``s3fs.S3FileSystem`` and ``s3fs.core.S3FileSystem`` are one class: the user's entry wins."""
    pytest.importorskip("s3fs")
    saved = dict(registry._REGISTRY._entries)
    try:
        register_backend("s3fs.S3FileSystem", f"{__name__}.NoLockBackend")
        import s3fs

        fs = s3fs.S3FileSystem(anon=True, skip_instance_cache=True)
        assert type(backend_for(fs)) is NoLockBackend
    finally:
        registry._REGISTRY._entries = saved


def test_gcsfs_gets_the_gcs_backend_without_a_lock_of_its_own() -> None:
    """gcsfs gets `GCSBackend`; its lock is the opt-in `GCSGenerationLockBackend`."""
    gcsfs = pytest.importorskip("gcsfs")
    from metatree.backends.gcs import GCSBackend

    fs = gcsfs.GCSFileSystem(token="anon", skip_instance_cache=True)
    backend = backend_for(fs)
    assert type(backend) is GCSBackend
    assert backend.lease_store is None


def test_adlfs_gets_the_azure_backend_and_its_lease() -> None:
    """adlfs gets `AzureBackend`, whose lock is a lease on Azure's conditional writes."""
    adlfs = pytest.importorskip("adlfs")
    from metatree.backends.azure import AzureBackend, AzureLeaseStore
    from metatree.testing.azurite import azure_options

    fs = adlfs.AzureBlobFileSystem(**azure_options("http://127.0.0.1:9"), skip_instance_cache=True)
    backend = backend_for(fs)
    assert type(backend) is AzureBackend
    assert backend.lease_store is AzureLeaseStore


PUBLIC = {"metatree.backends", "metatree.backends.aio"}
"""What a backend added from outside the core may import of metatree (docs/backends.md)."""


@pytest.mark.parametrize("module", ["metatree.backends.azure", "metatree.backends.gcs"])
def test_backend_added_through_the_public_api_imports_nothing_else(module: str) -> None:
    """Azure's and GCS's backends are written as a third party would: the public API only.

    Each name they import from metatree must be one of the public modules' ``__all__``.
    """
    import ast
    import importlib

    source = importlib.import_module(module).__file__
    assert source is not None
    with open(source) as stream:
        tree = ast.parse(stream.read())
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("metatree")
        for alias in node.names
    ]
    assert imported, "no import of metatree at all: the check would prove nothing"
    for origin, name in imported:
        assert origin in PUBLIC, f"{module} imports from {origin}, not the public API"
        assert name in importlib.import_module(origin).__all__, f"{origin}.{name} is private"
    plain = [n for n in ast.walk(tree) if isinstance(n, ast.Import)]
    assert not [a.name for n in plain for a in n.names if a.name.startswith("metatree")]
