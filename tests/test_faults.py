"""Server faults mid-operation: retried where safe, else a typed error; the tree stays whole.

"Whole" means: walking the tree reads every listed node (an index entry without its node
would raise), the lock is released, and the data is either the old or the new.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from metatree import Metatree, StorageError
from metatree.testing.servers import s3_options

if TYPE_CHECKING:
    from metatree.testing.servers import MotoS3Server, S3Request
    from metatree.testing.webhdfs_server import WebHDFSServer

KEYS = ("a", "b")


def assert_whole(tree: Metatree) -> list[tuple[str, ...]]:
    paths = [node.path for node, _ in tree.walk()]
    assert tree.storage.kind(".lock") is None
    return paths


@pytest.mark.s3
class TestS3Faults:
    @pytest.fixture
    def tree(self, moto_server: MotoS3Server, s3_bucket: str) -> Metatree:
        tree = Metatree(
            f"s3://{s3_bucket}/{uuid.uuid4().hex}",
            KEYS,
            **s3_options(moto_server.endpoint_url),
        )
        tree.put("m/v1", b"one", name="f")
        return tree

    def test_transient_500s_are_retried(self, tree: Metatree, moto_server: MotoS3Server) -> None:
        moto_server.fail_next(2)
        tree.put("m/v2", b"two", name="f")
        moto_server.fail_next(2)
        assert b"".join(tree.get("m/v2/f")) == b"two"
        assert assert_whole(tree) == [(), ("m",), ("m", "v1"), ("m", "v2")]

    def test_failing_index_write_leaves_old_tree(
        self, tree: Metatree, moto_server: MotoS3Server
    ) -> None:
        def index_put(request: S3Request) -> bool:
            return request.method == "PUT" and request.path.endswith("/m/metadata.json")

        moto_server.fail_next(20, match=index_put)  # more than botocore's retries
        with pytest.raises(StorageError):
            tree.put("m/v2", b"two", name="f")
        moto_server.clear_faults()
        assert assert_whole(tree) == [(), ("m",), ("m", "v1")]  # v2 is an unlisted orphan
        tree.put("m/v2", b"again", name="f")  # and the retry by the user just works
        assert b"".join(tree.get("m/v2/f")) == b"again"


@pytest.mark.webhdfs
class TestWebHDFSFaults:
    @pytest.fixture
    def tree(self, webhdfs_server: WebHDFSServer) -> Metatree:
        tree = Metatree(
            f"webhdfs:///tmp/{uuid.uuid4().hex}",
            KEYS,
            host=webhdfs_server.host,
            port=webhdfs_server.port,
            user="test",
        )
        tree.put("m/v1", b"one", name="f")
        webhdfs_server.clear_faults()
        return tree

    def test_dropped_reads_are_retried(self, tree: Metatree, webhdfs_server: WebHDFSServer) -> None:
        webhdfs_server.fail_next(1, op="OPEN", drop=True)
        webhdfs_server.fail_next(1, op="OPEN", status=503)
        assert tree.find("m/v1").path == ("m", "v1")
        assert b"".join(tree.get("m/v1/f")) == b"one"

    def test_failed_rename_is_a_storage_error(
        self, tree: Metatree, webhdfs_server: WebHDFSServer
    ) -> None:
        node = tree.find("m/v1")
        node.update(n=1)
        webhdfs_server.fail_next(1, op="RENAME", status=500)  # the lock's exclusive RENAME
        with pytest.raises(StorageError):
            node.update(n=2)
        webhdfs_server.clear_faults()
        assert node.metadata == {"n": 1}
        assert assert_whole(tree) == [(), ("m",), ("m", "v1")]

    def test_server_down_is_a_storage_error(
        self, tree: Metatree, webhdfs_server: WebHDFSServer
    ) -> None:
        webhdfs_server.fail_next(10, drop=True)
        with pytest.raises(StorageError):
            tree.find("m/v1")
        webhdfs_server.clear_faults()
        assert assert_whole(tree) == [(), ("m",), ("m", "v1")]
