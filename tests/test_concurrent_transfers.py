"""Concurrent transfers (issue 16): proved with barriers and request counts, never a clock.

A barrier holds each matching request (or upload) until K of them are in flight at once:
code that sends them one after another never gets there, the barrier breaks after its
generous timeout, and the test fails. The conformance suite proves the rest on every backend
(the same results, rollbacks, records); `BackendTests` proves `put_many`'s own promises.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from metatree import Metatree
from metatree._core import transaction
from metatree.backends import aio
from metatree.backends.s3 import S3Backend
from metatree.backends.webhdfs import WebHDFSBackend
from metatree.errors import (
    ConflictError,
    NotFoundError,
    PathError,
    StorageError,
    TransactionAbortedError,
)
from metatree.testing.servers import s3_options

if TYPE_CHECKING:
    from pathlib import Path

    from metatree._transfer import Upload
    from metatree.testing.servers import MotoS3Server, S3Request
    from metatree.testing.webhdfs import WebHDFSServer

K = 4
"""Uploads that must be in flight together."""


def _file_put(request: S3Request) -> bool:
    """An upload of one of the tests' files (named f), not a metadata.json."""
    return request.method == "PUT" and request.path.endswith("/f")


def _fill(tree: Metatree, n: int, width: int) -> None:
    """Put m/v1..m/v<n>, each with a file f, in one transaction of `width` uploads at once."""
    with tree.transaction(concurrency=width):
        for i in range(1, n + 1):
            tree.put(f"m/v{i}", b"x", name="f")


@pytest.mark.s3
class TestS3:
    @pytest.fixture
    def tree(self, moto_server: MotoS3Server, s3_bucket: str) -> Metatree:
        url = f"s3://{s3_bucket}/{uuid.uuid4().hex}"
        tree = Metatree(url, ("m", "v"), **s3_options(moto_server.endpoint_url))
        tree.put("m/v0", b"0", name="f")
        return tree

    def test_a_transactions_uploads_are_in_flight_together(
        self, tree: Metatree, moto_server: MotoS3Server
    ) -> None:
        gate = moto_server.gate(K, _file_put)
        try:
            with tree.transaction(concurrency=K):
                for i in range(1, K + 1):
                    tree.put(f"m/v{i}", f"body {i}".encode(), name="f")
        finally:
            moto_server.clear_gates()
        assert not gate.broken  # K uploads were held at once
        assert tree.find("m").children == [f"v{i}" for i in range(K + 1)]
        for i in range(1, K + 1):
            assert b"".join(tree.get(f"m/v{i}/f")) == f"body {i}".encode()  # records exact

    def test_concurrency_1_sends_one_at_a_time(
        self, tree: Metatree, moto_server: MotoS3Server
    ) -> None:
        gate = moto_server.gate(2, _file_put, timeout=1.0)
        try:
            with tree.transaction(concurrency=1):
                for i in range(1, 3):
                    tree.put(f"m/v{i}", b"x", name="f")
        finally:
            moto_server.clear_gates()
        assert gate.broken  # never two in flight: the barrier gave up
        assert tree.find("m").children == ["v0", "v1", "v2"]

    def test_a_transaction_sends_fewer_requests_for_being_concurrent(
        self, moto_server: MotoS3Server, s3_bucket: str
    ) -> None:
        counts = []
        for width in (1, 8):
            url = f"s3://{s3_bucket}/{uuid.uuid4().hex}"
            tree = Metatree(url, ("m", "v"), **s3_options(moto_server.endpoint_url))
            tree.put("m/v0", b"0", name="f")
            moto_server.reset_counters()
            with tree.transaction(concurrency=width):
                for i in range(1, 9):
                    tree.put(f"m/v{i}", b"x", name="f")
            requests = list(moto_server.requests)
            counts.append(len(requests))
            # the claims of 8 new children: one LIST of the first name, then one of m/
            assert sum(r.method == "GET" and "list-type" in r.query for r in requests) == 2
        # the same requests: a new node's metadata is written once, final (a small file is
        # hashed first), whether the puts wait for a flush or not
        assert counts[0] == counts[1]

    def test_one_failed_upload_fails_the_transaction_and_shows_nothing(
        self, tree: Metatree, moto_server: MotoS3Server
    ) -> None:
        before = sorted(tree.storage.walk_files(""))
        index = b"".join(tree.get("m/v0/f"))
        moto_server.fail_next(1, status=403, match=lambda r: r.path.endswith("/v3/f"))
        try:
            with pytest.raises(StorageError, match="v3/f"):
                _fill(tree, 6, K)
        finally:
            moto_server.clear_faults()
        assert tree.find("m").children == ["v0"]  # the index is unchanged
        assert b"".join(tree.get("m/v0/f")) == index
        with pytest.raises(NotFoundError):
            tree.find("m/v1")
        assert sorted(tree.storage.walk_files("")) == before  # rolled back: nothing left

    def test_a_file_that_changed_after_its_hash_fails_the_transaction(
        self, tree: Metatree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = transaction._measured

        def stale(uploads: list[Any]) -> Any:
            records = real(uploads)
            if records and uploads[0][1].endswith("/v2/f"):  # as if hashed before a change
                sub, moved = records[0]
                records[0] = (sub, moved._replace(digest="0" * 64))
            return records

        before = sorted(tree.storage.walk_files(""))
        monkeypatch.setattr(transaction, "_measured", stale)
        with pytest.raises(ConflictError, match="changed while it was stored"):
            _fill(tree, 3, K)
        assert tree.find("m").children == ["v0"]
        assert sorted(tree.storage.walk_files("")) == before  # rolled back

    def test_a_local_file_gone_before_the_flush_fails_the_transaction(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        source = tmp_path / "model.bin"
        source.write_bytes(b"weights")
        before = sorted(tree.storage.walk_files(""))
        with pytest.raises(StorageError, match=r"model\.bin"), tree.transaction():  # noqa: PT012
            tree.put("m/v1", str(source))  # deferred: read when its batch is sent
            source.unlink()
        assert tree.find("m").children == ["v0"]
        assert sorted(tree.storage.walk_files("")) == before

    def test_a_failed_transaction_never_commits_part_of_itself(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        """A caught failed flush, then a re-put of a removed name: still nothing committed."""
        tree.put("old/1", b"o", name="o")
        source = tmp_path / "f"
        before = sorted(tree.storage.walk_files(""))

        def block() -> None:
            with tree.transaction():
                tree.remove("old", recursive=True)
                tree.put("a/1", b"good", name="g")
                source.write_bytes(b"data")
                tree.put("a/2", str(source))
                source.unlink()
                with pytest.raises(StorageError):
                    tree.exists("a/1")  # flushes: the upload of a/2 fails
                tree.put("old/1", b"new", name="o")  # would commit up to here

        with pytest.raises(TransactionAbortedError):
            block()
        assert tree.find("").children == ["m", "old"]
        assert sorted(tree.storage.walk_files("")) == before

    def test_a_failure_before_the_first_index_write_rolls_back(
        self, tree: Metatree, moto_server: MotoS3Server
    ) -> None:
        """The new nodes' metadata fails at the commit: nothing is listed, nothing is left."""
        before = sorted(tree.storage.walk_files(""))
        seen: list[str] = []

        def second_write(r: S3Request) -> bool:  # the flush's is the first, the commit's next
            if r.method == "PUT" and r.path.endswith("/v2/metadata.json"):
                seen.append(r.path)
            return len(seen) == 2

        def block() -> None:
            with tree.transaction(concurrency=K):
                for i in range(1, 4):
                    tree.put(f"m/v{i}", b"x", name="f")
                tree.find("m/v2").update(k=1)  # v2's metadata.json is written again at the end

        moto_server.fail_next(1, status=403, match=second_write)
        try:
            with pytest.raises(StorageError):
                block()
        finally:
            moto_server.clear_faults()
        assert len(seen) == 2
        assert tree.find("m").children == ["v0"]
        assert sorted(tree.storage.walk_files("")) == before

    def test_a_source_replaced_by_a_fifo_before_the_flush_is_refused(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        source = tmp_path / "model.bin"
        source.write_bytes(b"weights")
        before = sorted(tree.storage.walk_files(""))

        def block() -> None:
            with tree.transaction():
                tree.put("m/v1", str(source))  # deferred: read when its batch is sent
                source.unlink()
                os.mkfifo(source)  # opening it to read would wait for a writer forever

        with pytest.raises(PathError, match="no longer a regular file"):
            block()
        assert tree.find("m").children == ["v0"]
        assert sorted(tree.storage.walk_files("")) == before

    def test_an_interrupt_mid_batch_cancels_the_rest(
        self, tree: Metatree, moto_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        started = threading.Event()
        fired = threading.Event()
        real_aput, real_wait = S3Backend._aput, aio._wait

        async def marking(self: S3Backend, source: Upload, path: str) -> None:
            if path.endswith("/f"):
                started.set()
            await real_aput(self, source, path)

        def interrupting(done: threading.Event, timeout: float | None) -> bool:
            if started.is_set() and not fired.is_set():
                fired.set()
                moto_server.set_delay(0)  # the requests already held still wait theirs
                raise KeyboardInterrupt
            return real_wait(done, 0.05 if timeout is None else min(timeout, 0.05))

        monkeypatch.setattr(S3Backend, "_aput", marking)
        monkeypatch.setattr(aio, "_wait", interrupting)
        moto_server.reset_counters()
        moto_server.set_delay(0.2)  # the batch is still in flight when the interrupt lands
        try:
            with pytest.raises(KeyboardInterrupt):
                _fill(tree, 8, 2)
        finally:
            moto_server.set_delay(0)
        assert fired.is_set()
        assert sum(map(_file_put, moto_server.requests)) < 8  # the rest never started
        assert tree.find("m").children == ["v0"]
        with pytest.raises(NotFoundError):
            tree.find("m/v1")

    def test_a_recursive_put_and_get_move_files_together(
        self, tree: Metatree, moto_server: MotoS3Server, tmp_path: Path
    ) -> None:
        folder = tmp_path / "d"
        folder.mkdir()
        for i in range(K):
            (folder / f"{i}").mkdir()
            (folder / f"{i}" / "f").write_bytes(f"file {i}".encode())
        gate = moto_server.gate(K, _file_put)
        try:
            tree.put("m/v1", str(folder), recursive=True)
        finally:
            moto_server.clear_gates()
        assert not gate.broken
        gate = moto_server.gate(K, lambda r: r.method == "GET" and r.path.endswith("/f"))
        try:
            tree.get("m/v1/d", outfile=str(tmp_path / "out"), recursive=True)
        finally:
            moto_server.clear_gates()
        assert not gate.broken
        for i in range(K):
            assert (tmp_path / "out" / f"{i}" / "f").read_bytes() == f"file {i}".encode()

    def test_concurrency_must_be_a_positive_int(self, tree: Metatree) -> None:
        for bad in (0, -1, True, 2.0, "4"):
            with pytest.raises(PathError, match="concurrency"), tree.transaction(bad):  # type: ignore[arg-type]
                pass


@pytest.mark.webhdfs
def test_a_thread_pool_backend_uploads_together(
    webhdfs_server: WebHDFSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WebHDFS has no async API: its uploads run in a thread pool (`Backend.put_many`)."""
    tree = Metatree(
        f"webhdfs:///tmp/{uuid.uuid4().hex}",
        ("m", "v"),
        host=webhdfs_server.host,
        port=webhdfs_server.port,
        user="test",
    )
    tree.put("m/v0", b"0", name="f")
    barrier = threading.Barrier(K, timeout=30)
    real_put = WebHDFSBackend.put

    def held(self: WebHDFSBackend, source: Upload, path: str, **options: Any) -> None:
        if path.endswith("/f"):
            barrier.wait()  # BrokenBarrierError unless K uploads wait here together
        real_put(self, source, path, **options)

    monkeypatch.setattr(WebHDFSBackend, "put", held)
    with tree.transaction():
        for i in range(1, K + 1):
            tree.put(f"m/v{i}", b"x", name="f")
    assert not barrier.broken
    assert tree.find("m").children == [f"v{i}" for i in range(K + 1)]
