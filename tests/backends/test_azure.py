from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from metatree import Storage, as_storage
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
