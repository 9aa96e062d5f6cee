from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from metatree import Metatree, Storage, as_storage
from metatree.errors import AlreadyExistsError, ConflictError, StorageError
from metatree.testing import BackendTests
from metatree.testing._stateful import StatefulTests
from metatree.testing.conformance import BackendConformance

if TYPE_CHECKING:
    from metatree.testing.azurite import AzuriteServer


class _Storage:
    """Where every test of this module stores: Azurite's Blob service."""

    @pytest.fixture
    def storage(self, azure_container: str, azurite_server: AzuriteServer) -> Storage:
        return as_storage(
            f"az://{azure_container}/{uuid.uuid4().hex}/db", **azurite_server.options()
        )


@pytest.mark.azure
class TestAzure(_Storage, BackendConformance):
    """Every behaviour on Azurite, the lock suites included: its conditional writes are
    atomic under contention (docs/backends.md), so the races run here with 8 writers.

    Sizes as on SeaweedFS, the writers still overlapping; the benchmark runs the full sizes.
    """

    # every step is a few HTTP requests: fewer programs, same length
    state_machine_settings = settings(StatefulTests.state_machine_settings, max_examples=4)
    bulk_puts = 200  # the lock is taken once whatever the size; 1000 runs on local disk
    updates_per_writer = 40
    puts_per_writer = 20
    torn_write_trials = 40
    uploads_per_writer = 2  # one named id and one uuid4 each; 3 on local disk
    switches_per_writer = 2
    alias_kill_trials = 4


@pytest.mark.azure
class TestBackend(_Storage, BackendTests):
    """The primitives on Azurite, the races included."""

    failed_put_size = 9 * 2**20  # past the first 8 MiB block: the upload is never committed


@pytest.mark.azure
class TestAzureOnly:
    """What only Azure has: blob leases held by other clients."""

    def test_a_node_leased_by_another_client_is_a_storage_error(
        self, azure_container: str, azurite_server: AzuriteServer
    ) -> None:
        """Azure refuses a write to a blob another client leases (412 ``LeaseIdMissing``).

        That is a failure of the store, not a lost race: read as one, it said "something of
        that name is in the way" (AlreadyExistsError). Nothing is written, the DB lock is
        released, and the node reads as before.
        """
        from azure.storage.blob import BlobServiceClient

        from metatree.testing.azurite import connection_string

        storage = as_storage(
            f"az://{azure_container}/{uuid.uuid4().hex}/db", **azurite_server.options()
        )
        tree = Metatree(storage, ("a", "b"))
        tree.put("m/v", b"x", name="f")
        client = BlobServiceClient.from_connection_string(
            connection_string(azurite_server.endpoint_url)
        )
        with client:
            blob = client.get_blob_client(azure_container, storage.abs("m/v/metadata.json"))
            blob = client.get_blob_client(azure_container, blob.blob_name.partition("/")[2])
            lease = blob.acquire_lease(lease_duration=-1)
            try:
                before = storage.read_bytes("m/v/metadata.json")
                with pytest.raises(StorageError) as caught:
                    tree.find("m/v").update(score=1)
                assert not isinstance(caught.value, AlreadyExistsError | ConflictError)
                assert "LeaseIdMissing" in str(caught.value)
                assert storage.read_bytes("m/v/metadata.json") == before
                assert storage.kind(".lock") is None  # released
            finally:
                lease.release()
        tree.find("m/v").update(score=1)
        assert tree.find("m/v").metadata["score"] == 1
