from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from metatree import Storage, as_storage
from metatree.testing.conformance import BackendConformance

if TYPE_CHECKING:
    from metatree.testing.webhdfs_server import WebHDFSServer


@pytest.mark.webhdfs
class TestWebHDFS(BackendConformance):
    @pytest.fixture
    def storage(self, webhdfs_server: WebHDFSServer) -> Storage:
        return as_storage(
            f"webhdfs:///tmp/{uuid.uuid4().hex}/db",
            host=webhdfs_server.host,
            port=webhdfs_server.port,
            user="test",
        )
