from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

from metatree import Metatree, Storage, as_storage
from metatree.errors import AlreadyExistsError, ConflictError, StorageError
from metatree.testing import BackendTests
from metatree.testing._stateful import StatefulTests
from metatree.testing.conformance import BackendConformance

if TYPE_CHECKING:
    from collections.abc import Iterator

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

    @pytest.fixture
    def storage(self, azure_container: str, azurite_server: AzuriteServer) -> Storage:
        return as_storage(
            f"az://{azure_container}/{uuid.uuid4().hex}/db", **azurite_server.options()
        )

    @pytest.fixture
    def client(self, azurite_server: AzuriteServer, azure_container: str) -> Iterator[Any]:
        """A raw client of the container: another tool, a backup job, a careless admin."""
        from azure.storage.blob import BlobServiceClient

        from metatree.testing.azurite import connection_string

        url = connection_string(azurite_server.endpoint_url)
        with BlobServiceClient.from_connection_string(url) as service:
            yield service.get_container_client(azure_container)

    @staticmethod
    def blob_name(storage: Storage, rel: str) -> str:
        return storage.abs(rel).partition("/")[2]

    def test_snapshots_do_not_stop_a_release_or_a_removal(
        self, storage: Storage, client: Any
    ) -> None:
        """Azure refuses to delete a blob with snapshots (409 ``SnapshotsPresent``).

        A backup tool's snapshot of the lock blob failed every release after its commit
        (the write stored, the caller told it failed); of a file, every removal. A blob's
        snapshots now go with it.
        """
        tree = Metatree(storage, ("a", "b"))
        tree.put("m/v", b"x", name="f")
        with tree.transaction():
            tree.find("m/v").update(score=1)
            client.get_blob_client(self.blob_name(storage, ".lock")).create_snapshot()
        assert storage.kind(".lock") is None
        client.get_blob_client(self.blob_name(storage, "m/v/f")).create_snapshot()
        tree.remove("m/v", recursive=True)
        assert not tree.exists("m/v")
        prefix = self.blob_name(storage, "m/v/")
        assert list(client.list_blobs(name_starts_with=prefix, include=["snapshots"])) == []
        tree.put("m/v", b"again", name="f")
        assert b"".join(tree.get("m/v/f")) == b"again"

    def test_blocks_staged_by_another_client_do_not_stop_a_large_put(
        self, storage: Storage, client: Any
    ) -> None:
        """Azure wants one length for every block id of a blob, another client's included.

        Uncommitted blocks of another tool's failed upload (kept up to a week) refused every
        put over 8 MiB to that name (400 ``InvalidBlobOrBlock``); the put now names its
        blocks as they do.
        """
        tree = Metatree(storage, ("a", "b"))
        tree.put("m/v", b"x", name="small")
        data = bytes(range(256)) * (9 * 2**20 // 256)
        for foreign in ("abcd", "a-much-longer-block-id-of-another-tool"):
            blob = client.get_blob_client(self.blob_name(storage, f"m/v/{len(foreign)}"))
            blob.stage_block(foreign, b"junk")
            tree.put("m/v", data, name=str(len(foreign)))
            assert b"".join(tree.get(f"m/v/{len(foreign)}")) == data

    def test_a_stalled_listing_times_out(
        self, azure_container: str, azurite_server: AzuriteServer, monkeypatch: Any
    ) -> None:
        """Every List Blobs page is one request within `AzureBackend.timeout`.

        Only the first page was: a stalled server held `listdir`, `find` and every removal
        for as long as it stalled.
        """
        from metatree.backends.azure import AzureBackend
        from metatree.testing.azurite import HoldingProxy, azure_options

        proxy = HoldingProxy(azurite_server.port)
        try:
            storage = as_storage(
                f"az://{azure_container}/{uuid.uuid4().hex}/db",
                **azure_options(proxy.endpoint_url()),
            )
            storage.write_atomic("d/f", b"x")
            monkeypatch.setattr(AzureBackend, "timeout", 0.5)
            proxy.hold()
            for call in (
                lambda: storage.listdir("d"),
                lambda: list(storage.walk_files("")),
                lambda: storage.remove_tree("d"),
            ):
                with pytest.raises(StorageError, match=r"no answer within 0\.5s"):
                    call()
            proxy.release()
            assert storage.listdir("d") == {"f": "file"}
        finally:
            proxy.close()

    def test_a_missing_container_holds_nothing(self, azurite_server: AzuriteServer) -> None:
        """Below a container that does not exist there is nothing, as below a missing prefix.

        Listing it raised NotFoundError, so `kind` and `listdir` of any path in it did.
        """
        storage = as_storage(f"az://missing-{uuid.uuid4().hex[:12]}/db", **azurite_server.options())
        assert storage.kind("x") is None
        assert storage.listdir("") == {}
        assert list(storage.walk_files("")) == []
