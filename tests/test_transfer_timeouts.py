"""Every backend request has a bounded time (issue 19 item 8), on a server that never answers.

Stalling needs control of the server, so this lives beside the conformance suite rather than
in it: local disk and memory make no network requests.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from metatree import Metatree, as_storage
from metatree.backends.s3 import S3Backend
from metatree.backends.webhdfs import WebHDFSBackend
from metatree.errors import StorageError
from metatree.testing.servers import s3_options

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from metatree._storage import Storage
    from metatree.testing.servers import MotoS3Server
    from metatree.testing.webhdfs import WebHDFSServer


@pytest.fixture
def storage(webhdfs_server: WebHDFSServer) -> Iterator[Storage]:
    yield as_storage(
        f"webhdfs:///tmp/{uuid.uuid4().hex}/db",
        host=webhdfs_server.host,
        port=webhdfs_server.port,
        user="test",
    )
    webhdfs_server.release()


@pytest.mark.webhdfs
@pytest.mark.parametrize("op", ["OPEN", "GETFILESTATUS", "CREATE", "RENAME"])
def test_a_stalled_request_times_out(
    storage: Storage,
    webhdfs_server: WebHDFSServer,
    monkeypatch: pytest.MonkeyPatch,
    op: str,
) -> None:
    storage.write_atomic("f", b"data")
    monkeypatch.setattr(WebHDFSBackend, "timeout", 0.3)
    webhdfs_server.stall(op)
    calls: dict[str, Callable[[], object]] = {
        "OPEN": lambda: storage.read_bytes("f"),
        "GETFILESTATUS": lambda: storage.kind("f"),
        "CREATE": lambda: storage.write_atomic("f", b"new"),
        "RENAME": lambda: storage.write_atomic("f", b"new"),
    }
    with pytest.raises(StorageError, match=r"no answer within 0\.3s") as caught:
        calls[op]()
    assert caught.value.path == storage.url_of("f")
    webhdfs_server.release()
    assert storage.read_bytes("f") == b"data"


@pytest.mark.webhdfs
def test_a_stalled_lock_times_out(
    storage: Storage, webhdfs_server: WebHDFSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lock_timeout=2`` against a server that never answers: an error, not a hang."""
    tree = Metatree(storage, ("a", "b"), lock_timeout=2)
    monkeypatch.setattr(WebHDFSBackend, "timeout", 0.3)
    webhdfs_server.stall("RENAME")
    with pytest.raises(StorageError, match="no answer"):
        tree.put("x/y", b"data", name="f")


@pytest.fixture
def s3_storage(moto_server: MotoS3Server, s3_bucket: str) -> Iterator[Storage]:
    yield as_storage(
        f"s3://{s3_bucket}/{uuid.uuid4().hex}/db", **s3_options(moto_server.endpoint_url)
    )
    moto_server.release()


@pytest.mark.s3
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_stalled_s3_request_times_out(
    s3_storage: Storage,
    moto_server: MotoS3Server,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    """The request is cancelled client-side after `S3Backend.timeout`.

    A PUT whose body the server already holds may still be applied by the server once it
    answers: no client can recall it, which is why commits are conditional (``If-Match``).
    """
    storage = s3_storage
    storage.write_atomic("f", b"data")
    monkeypatch.setattr(S3Backend, "timeout", 0.5)
    moto_server.stall(lambda r: r.method == method)
    call = (
        (lambda: storage.read_bytes("f"))
        if method == "GET"
        else (lambda: storage.write_atomic("f", b"new"))
    )
    with pytest.raises(StorageError, match=r"no answer within 0\.5s") as caught:
        call()
    assert caught.value.path == storage.url_of("f")
