"""Google Cloud Storage: the conformance suite, BackendTests and the lock suites on gcsfs.

The server is gcp-storage-emulator behind metatree's precondition layer
(`metatree.testing.gcs_server`): the emulator ignores ``ifGenerationMatch``, the layer enforces
it under one lock as GCS documents. So the races here prove that the backend sends the right
preconditions and reads 412 right, not that GCS is atomic; the lock suites run on the opt-in
`GCSGenerationLockBackend` for that reason (the registered `GCSBackend` has no lock of its own).
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import settings

from metatree import Storage, as_storage
from metatree.backends.gcs import GCSGenerationLockBackend
from metatree.testing import BackendTests
from metatree.testing._stateful import StatefulTests
from metatree.testing.conformance import BackendConformance
from metatree.testing.gcs_server import GCSServer, gcs_options, make_gcs_bucket


def _open(server: GCSServer, bucket: str) -> Storage:
    """A fresh root on the server, through gcsfs's `GCSFileSystem` itself.

    Not ``gs://``'s default class, gcsfs's experimental `ExtendedGcsFileSystem`: its own
    methods (``pipe_file``, ``open``: the suites plant objects with them) first ask the
    endpoint over gRPC whether the bucket is zonal, and against an emulator that retries for
    60 s per call. The backend's requests (gcsfs's ``_call``) are the same on both classes.
    """
    from gcsfs.core import GCSFileSystem

    fs = GCSFileSystem(**gcs_options(server.endpoint_url))
    return as_storage(f"gs://{bucket}/{uuid.uuid4().hex}/db", fs=fs)


class _Storage:
    """Where every test of this module stores: the GCS test server, the registered backend."""

    @pytest.fixture
    def storage(self, gcs_server: GCSServer, gcs_bucket: str) -> Storage:
        return _open(gcs_server, gcs_bucket)


class _LockedStorage:
    """The GCS test server through the opt-in `GCSGenerationLockBackend` (a DB lock of its own).

    The registered `GCSBackend` has none: its lock would exclude only this process's threads
    (with a warning), and the suites race processes.
    """

    @pytest.fixture
    def storage(self, gcs_server: GCSServer, gcs_bucket: str) -> Storage:
        opened = _open(gcs_server, gcs_bucket)
        return Storage(opened.fs, opened.root, GCSGenerationLockBackend)


@pytest.mark.gcs
class TestGCS(_LockedStorage, BackendConformance):
    """Every behaviour of the database on `GCSGenerationLockBackend`, the lock suites included.

    The conformance suite holds `LockTests`, `LockHardeningTests` and `ModelStoreLockTests`
    (8 writers, kill -9 of the holder, kills during writes): they run here, on the opt-in
    lock, with the sizes of the SeaweedFS run (writers still overlap; the server serves one
    request at a time under its precondition lock).
    """

    # every step is a few HTTP requests: fewer programs, same length
    state_machine_settings = settings(StatefulTests.state_machine_settings, max_examples=4)
    bulk_puts = 200  # the lock is taken once whatever the size; 1000 runs on local disk
    updates_per_writer = 20
    puts_per_writer = 10
    torn_write_trials = 40
    uploads_per_writer = 2  # one named id and one uuid4 each; 3 on local disk
    switches_per_writer = 2
    alias_kill_trials = 4


@pytest.mark.gcs
class TestBackend(_Storage, BackendTests):
    """The primitives on the registered `GCSBackend`, races included (the layer's lock)."""

    race_rounds = 3
    failed_put_size = 9 * 2**20  # past the first 8 MiB chunk: the resumable upload is cancelled


@pytest.mark.gcs
@pytest.mark.parametrize("enforce", [True, False])
def test_the_layer_is_what_refuses_a_second_create(enforce: bool) -> None:
    """Without the precondition layer the emulator lets a second exclusive create win too.

    So the single winner of every race in this module is the layer's doing (as on GCS, which
    documents it), and the races could fail: they are not green by construction.
    """
    with GCSServer(enforce_preconditions=enforce) as server:
        bucket = make_gcs_bucket(server.endpoint_url)
        storage = as_storage(f"gs://{bucket}/db", **gcs_options(server.endpoint_url))
        backend, path = storage.backend, storage.abs("x")
        assert backend.create_exclusive(path, b"one")
        assert backend.create_exclusive(path, b"two") is not enforce
        body, version = backend.read_versioned(path)
        assert body == (b"one" if enforce else b"two")
        backend.write_atomic(path, b"three")
        assert backend.write_if(path, b"four", version) is not enforce
