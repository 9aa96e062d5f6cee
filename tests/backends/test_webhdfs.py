from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from metatree import Storage, as_storage
from metatree.testing import BackendTests
from metatree.testing._stateful import StatefulTests
from metatree.testing.conformance import BackendConformance

if TYPE_CHECKING:
    from metatree.testing.webhdfs import WebHDFSServer


class _Storage:
    """Where every test of this module stores: the fake WebHDFS server."""

    @pytest.fixture
    def storage(self, webhdfs_server: WebHDFSServer) -> Storage:
        return as_storage(
            f"webhdfs:///tmp/{uuid.uuid4().hex}/db",
            host=webhdfs_server.host,
            port=webhdfs_server.port,
            user="test",
        )


@pytest.mark.webhdfs
class TestWebHDFS(_Storage, BackendConformance):
    # every step is a few HTTP requests: fewer programs, same length
    state_machine_settings = settings(StatefulTests.state_machine_settings, max_examples=6)
    # each locked write is a dozen HTTP requests: CI sizes, the writers still overlap; the
    # benchmark runs 8 x 200 and 8 x 100
    updates_per_writer = 25
    puts_per_writer = 12
    bulk_puts = 200
    torn_write_trials = 60  # 200 on local disk


@pytest.mark.webhdfs_real
class TestRealWebHDFS(BackendConformance):
    """The same suite on a real cluster: METATREE_WEBHDFS=host:port[:user] (opt-in)."""

    @pytest.fixture
    def storage(self) -> Storage:
        target = os.environ.get("METATREE_WEBHDFS")
        if not target:
            pytest.skip("set METATREE_WEBHDFS=host:port[:user] to run against a real cluster")
        host, port, *user = target.split(":")
        return as_storage(
            f"webhdfs:///tmp/metatree-tests/{uuid.uuid4().hex}/db",
            host=host,
            port=int(port),
            user=user[0] if user else None,
        )


@pytest.mark.webhdfs
class TestBackend(_Storage, BackendTests):
    """The primitives on the fake WebHDFS server."""
