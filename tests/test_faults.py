"""Server faults mid-operation: retried where safe, else a typed error; the tree stays whole.

"Whole" means: walking the tree reads every listed node (an index entry without its node
would raise), the lock is released, and the data is either the old or the new.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import requests

from metatree import Metatree, StorageError
from metatree.testing.servers import s3_options

if TYPE_CHECKING:
    from metatree.testing.servers import MotoS3Server, S3Request
    from metatree.testing.webhdfs import WebHDFSServer

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

    @pytest.mark.parametrize("status", [200, 307])
    def test_redirect_without_location_is_a_storage_error(
        self, tree: Metatree, webhdfs_server: WebHDFSServer, status: int
    ) -> None:
        webhdfs_server.fail_next(10, op="CREATE", status=status, datanode=False)  # > retries
        with pytest.raises(StorageError, match="Location"):
            tree.put("m/v1", b"two", name="g")
        webhdfs_server.clear_faults()
        assert_whole(tree)
        assert tree.find("m/v1").list() == ["f"]

    def test_forked_child_has_its_own_connections(self, tree: Metatree) -> None:
        """A child forked after the parent used the tree must not read the parent's replies."""
        import os

        tree.find("m/v1").update(n=0)
        backend = tree.storage.backend
        parent_session = backend._session()  # type: ignore[attr-defined]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            try:
                child_session = backend._session()  # type: ignore[attr-defined]
                ok = child_session is not parent_session and tree.find("m/v1").metadata["n"] == 0
                os._exit(0 if ok else 1)
            except BaseException:  # noqa: BLE001 - anything at all is a failure of the child
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert backend._session() is parent_session  # type: ignore[attr-defined]

    @pytest.mark.parametrize("nth", [1, 2])
    @pytest.mark.parametrize("fault", ["error", "lost reply"])
    def test_directory_replace_survives_a_failed_rename(
        self, tree: Metatree, monkeypatch: pytest.MonkeyPatch, fault: str, nth: int
    ) -> None:
        """RENAME is not idempotent: the old directory stays visible whatever the reply."""
        storage = tree.storage
        storage.write_atomic("m/v1/d/a", b"old")
        storage.write_atomic("m/v1/.metatree.staging.x/a", b"new")
        backend = storage.backend
        original = backend._rename_new  # type: ignore[attr-defined]
        calls: list[str] = []

        def flaky(src: str, dst: str) -> bool:
            calls.append(src)
            if len(calls) != nth:
                return bool(original(src, dst))
            if fault == "lost reply":
                original(src, dst)
                raise requests.ConnectionError("the reply was lost")
            raise OSError("HTTP 500")

        monkeypatch.setattr(backend, "_rename_new", flaky)
        try:
            storage.replace_tree("m/v1/.metatree.staging.x", "m/v1/d", "directory")
        except StorageError:
            assert fault == "error"  # a lost reply is judged by what is there afterwards
        monkeypatch.undo()
        assert storage.read_bytes("m/v1/d/a") in (b"old", b"new")
        assert storage.kind("m/v1/d") == "directory"
