"""Request economy, counted at the servers: exact where a time is not.

Bounds from the S3/WebHDFS issue: find at depth 3 <= 3 requests, get of a small file <= 4,
update <= 2 plus the lock's own 2, put of a new leaf <= 8 including the lock. The S3 tests
assert the exact request sequence, which also proves that no object is read twice, that no
``exists`` precedes a read, and that an index already listing a child is not rewritten.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from metatree import DataStore, Metatree, ModelStore, as_storage
from metatree.errors import NotFoundError
from metatree.testing.azurite import AzuriteServer, make_container
from metatree.testing.gcs_server import GCSServer
from metatree.testing.servers import s3_options

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree.testing.servers import MotoS3Server
    from metatree.testing.webhdfs import WebHDFSServer

KEYS = ("a", "b", "c")
INDEXES = ["GET metadata.json", "GET x/metadata.json", "GET x/y/metadata.json"]
"""The index chain to the node x/y/z, root first: what every read of it starts with."""


@pytest.mark.s3
class TestS3Requests:
    @pytest.fixture
    def tree(self, moto_server: MotoS3Server, s3_bucket: str) -> Metatree:
        tree = Metatree(
            f"s3://{s3_bucket}/{uuid.uuid4().hex}",
            KEYS,
            **s3_options(moto_server.endpoint_url),
        )
        tree.put("x/y/z", b"data", name="f")
        tree.find("x").update(active="y")
        tree.find("x/y/z").update(model_file="f")
        return tree

    @pytest.fixture
    def record(self, counting: MotoS3Server, tree: Metatree) -> Recorder:
        return Recorder(counting, tree.storage.root, reset=False)

    def test_open(self, tree: Metatree, record: Recorder) -> None:
        Metatree(tree.storage, KEYS)
        assert record() == ["GET .metatree"]

    def test_find_depth_3(self, tree: Metatree, record: Recorder) -> None:
        tree.find("x/y/z")
        # the indexes on the way at once; the last one, the answer, after the one that
        # lists it (docs/format.md, "Reads in waves")
        assert record.waves() == [INDEXES[:2], INDEXES[2:]]

    def test_find_with_placeholder(self, tree: Metatree, record: Recorder) -> None:
        tree.find("x/<active>/z")
        # x's <active> names the next level: x is read after the root's index lists it
        assert record.waves() == [INDEXES[:1], INDEXES[1:2], INDEXES[2:]]

    def test_get_small_file(self, tree: Metatree, record: Recorder) -> None:
        assert b"".join(tree.get("x/y/z/f")) == b"data"
        # the indexes at once; then, after the one listing z, the file's record and the file
        # (its first 256 KiB: a small file whole), checked against the record before use
        assert record.waves() == [INDEXES, ["GET x/y/z/f", "GET x/y/z/metadata.json"]]

    def test_get_unverified(self, tree: Metatree, record: Recorder) -> None:
        assert b"".join(tree.get("x/y/z/f", verify=False)) == b"data"
        assert record.waves() == [INDEXES, ["GET x/y/z/f"]]

    def test_get_to_a_local_file(self, tree: Metatree, record: Recorder, tmp_path: Path) -> None:
        tree.get("x/y/z/f", tmp_path / "f")
        assert (tmp_path / "f").read_bytes() == b"data"
        assert record.waves() == [INDEXES, ["GET x/y/z/f", "GET x/y/z/metadata.json"]]

    def test_get_of_a_missing_file(self, tree: Metatree, record: Recorder) -> None:
        with pytest.raises(NotFoundError):
            tree.get("x/y/z/nothing")
        # no record, and not there when read after the index listing z: not read again
        assert record.waves() == [INDEXES, ["GET x/y/z/metadata.json", "GET x/y/z/nothing"]]

    def test_stat(self, tree: Metatree, record: Recorder) -> None:
        assert tree.stat("x/y/z/f").size == 4
        assert record.waves() == [INDEXES, ["GET x/y/z/metadata.json"]]

    def test_get_through_placeholders(self, tree: Metatree, record: Recorder) -> None:
        assert b"".join(tree.get("x/<active>/z/<model_file>")) == b"data"
        # each node a <key> is read in after the index that lists it: one at a time
        assert record.waves() == [
            INDEXES[:1],
            INDEXES[1:2],
            INDEXES[2:],
            ["GET x/y/z/metadata.json"],
            ["GET x/y/z/f"],
        ]

    def test_missing_node_costs_no_more_waves(self, tree: Metatree, record: Recorder) -> None:
        with pytest.raises(NotFoundError):
            tree.find("x/q/z")
        # x's index does not list q: the read of x/q, the next wave, is never sent
        assert record.waves() == [["GET metadata.json", "GET x/metadata.json"]]

    def test_large_file_is_read_again_after_its_record(
        self, tree: Metatree, record: Recorder
    ) -> None:
        data = bytes(range(256)) * 1025  # over the 256 KiB read ahead
        tree.put("x/y/z", data, name="big")
        record.clear()
        assert b"".join(tree.get("x/y/z/big")) == data
        assert record.waves() == [
            INDEXES,
            ["GET x/y/z/big", "GET x/y/z/metadata.json"],
            ["GET x/y/z/big"],  # streamed, pinned to one version, checked as it streams
        ]

    def test_update(self, tree: Metatree, record: Recorder, moto_server: MotoS3Server) -> None:
        node = tree.find("x/y/z")
        record.clear()
        node.update(score=0.5)
        assert record.waves() == [
            ["PUT .lock"],
            ["GET x/y/z/metadata.json"],
            ["PUT x/y/z/metadata.json"],
            ["DELETE .lock"],
        ]

    def test_datastore_values_load_lazily_one_get_each(
        self, tree: Metatree, record: Recorder, moto_server: MotoS3Server
    ) -> None:
        node = tree.find("x/y/z")
        node.update(results=DataStore(a=b"1", b={"k": 2}))
        moto_server.reset_counters()
        results = node.metadata["results"]
        assert record() == ["GET x/y/z/metadata.json"]  # references and file records
        assert (results.a, results.b) == (b"1", {"k": 2})
        files = [r.split(".")[1] for r in record()[1:]]
        assert files == ["a", "b"]  # one GET per value, checked against the records read
        assert all(r.startswith("GET x/y/z/results.") for r in record()[1:])

    def test_catalog_reads_each_node_once(
        self, tree: Metatree, record: Recorder, moto_server: MotoS3Server
    ) -> None:
        pytest.importorskip("pyarrow")
        with tree.transaction():
            for version in ("y", "w"):
                for leaf in ("v", "u", "t"):
                    tree.put(f"x/{version}/{leaf}", b"d", name="f")
            tree.put("q/y/z", b"d", name="f")
            tree.find("x/y/v").update(score=1)
        moto_server.reset_counters()
        assert tree.catalog().num_rows == 13
        leaves = [f"x/y/{leaf}" for leaf in "zvut"] + [f"x/w/{leaf}" for leaf in "vut"]
        assert sorted(record()) == sorted(
            ["GET metadata.json", "GET x/metadata.json", "GET q/metadata.json"]
            + [f"GET {p}/metadata.json" for p in ("x/y", "x/w", "q/y", "q/y/z", *leaves)]
        )  # one GET per node and the root's: no HEAD, no LIST, nothing twice
        moto_server.reset_counters()
        assert tree.search({"score": 1}, under="x/<active>", depth=3).paths == ["x/y/v"]
        requests = record()  # x's metadata names the active version: only its leaves are read
        assert requests[:3] == ["GET metadata.json", "GET x/metadata.json", "GET x/y/metadata.json"]
        assert sorted(requests[3:]) == sorted(f"GET x/y/{leaf}/metadata.json" for leaf in "zvut")

    def test_put_new_leaf(self, tree: Metatree, record: Recorder) -> None:
        tree.put("x/y/w", b"new", name="f")
        assert record.waves() == [
            ["PUT .lock"],
            # the indexes, and the listing of x/y/w/: an orphan there would be cleared first
            # (docs/format.md); sent together, under the lock
            sorted(["GET (list)", *INDEXES]),
            # with the file's record (size, sha256, provenance: a small file is hashed
            # first), before the file: it marks what a crash leaves as an orphan
            ["PUT x/y/w/metadata.json"],
            ["PUT x/y/w/f"],
            ["PUT x/y/metadata.json"],  # the commit point
            ["DELETE .lock"],
        ]

    def test_put_new_model_and_leaf(self, tree: Metatree, record: Recorder) -> None:
        """Below a new top node, the leaf is written once, after the file, with its record.

        The walk reads ahead as for a new leaf: x/n's metadata and the listing of x/n/w/
        are sent for nothing (x does not list n), and x/n/ is listed after.
        """
        tree.put("x/n/w", b"new", name="f")
        assert record.waves() == [
            ["PUT .lock"],
            ["GET (list)", "GET metadata.json", "GET x/metadata.json", "GET x/n/metadata.json"],
            ["GET (list)"],
            ["PUT x/n/metadata.json"],
            ["PUT x/n/w/f"],
            ["PUT x/n/w/metadata.json"],
            ["PUT x/metadata.json"],
            ["DELETE .lock"],
        ]

    def test_put_into_existing_node_does_not_rewrite_index(
        self, tree: Metatree, record: Recorder
    ) -> None:
        tree.put("x/y/z", b"more", name="g")
        assert record.waves() == [
            ["PUT .lock"],
            # the listing of x/y/z/ read ahead says that no g is there (a file or directory)
            sorted(["GET (list)", *INDEXES]),
            ["GET x/y/z/metadata.json"],  # read-modify-write of the node's records
            ["PUT x/y/z/g"],
            ["PUT x/y/z/metadata.json"],  # the record, conditional on the version read
            ["DELETE .lock"],
        ]

    def test_walk_reads_siblings_together(self, tree: Metatree, record: Recorder) -> None:
        with tree.transaction():
            for leaf in ("u", "v"):
                tree.put(f"x/y/{leaf}", b"d", name="f")
        record.clear()
        assert len(list(tree.walk())) == 6
        leaves = [f"GET x/y/{leaf}/metadata.json" for leaf in ("u", "v", "z")]
        assert record.waves() == [[INDEXES[0]], [INDEXES[1]], [INDEXES[2]], leaves]

    def test_small_uploads_do_not_wait_for_100_continue(
        self, tree: Metatree, record: Recorder, moto_server: MotoS3Server
    ) -> None:
        """botocore asks for ``Expect: 100-continue`` on every upload: a round trip more.

        Up to 2 MiB the body goes with the headers (the lock, metadata.json, small files);
        above, the server may still refuse before the body is sent.
        """
        tree.put("x/y/z", b"s" * 10, name="g")
        tree.put("x/y/z", b"b" * (2 * 2**20 + 1), name="big")
        expect = {
            (r.path.rsplit("/", 1)[-1], r.length): r.headers.get("expect")
            for r in moto_server.requests
            if r.method == "PUT"
        }
        assert {key for key, value in expect.items() if value} == {("big", 2 * 2**20 + 1)}
        assert {name for name, _ in expect} == {".lock", "g", "big", "metadata.json"}

    def test_put_replacing_a_file(self, tree: Metatree, record: Recorder) -> None:
        tree.put("x/y/z", b"other", name="f", force=True)
        assert record.waves() == [
            ["PUT .lock"],
            sorted(["GET (list)", *INDEXES]),
            ["GET x/y/z/metadata.json"],
            ["HEAD x/y/z/f"],  # listed: a file, or a key beside a prefix? kind() tells
            ["PUT x/y/z/f"],
            ["PUT x/y/z/metadata.json"],
            ["DELETE .lock"],
        ]


@pytest.mark.webhdfs
class TestWebHDFSRequests:
    """WebHDFS needs two HTTP requests per CREATE and OPEN (the 307 to a data node)."""

    @pytest.fixture
    def tree(self, webhdfs_server: WebHDFSServer) -> Iterator[Metatree]:
        tree = Metatree(
            f"webhdfs:///tmp/{uuid.uuid4().hex}",
            KEYS,
            host=webhdfs_server.host,
            port=webhdfs_server.port,
            user="test",
        )
        tree.put("x/y/z", b"data", name="f")
        webhdfs_server.count_waves(QUIET)  # the server is the session's: for this test only
        webhdfs_server.reset_counters()
        yield tree
        webhdfs_server.count_waves(None)

    def ops(self, server: WebHDFSServer) -> list[str]:
        """The name node's operations, wave by wave (in name order within one)."""
        return [
            r.op for r in sorted(server.requests, key=lambda r: (r.wave, r.op)) if not r.datanode
        ]

    def waves(self, server: WebHDFSServer) -> int:
        """The length of the chain of round trips (an OPEN or CREATE takes two: the 307)."""
        numbers = {r.wave for r in server.requests}
        assert numbers == set(range(min(numbers), max(numbers) + 1))
        return len(numbers)

    def test_find_depth_3(self, tree: Metatree, webhdfs_server: WebHDFSServer) -> None:
        tree.find("x/y/z")
        assert self.ops(webhdfs_server) == ["OPEN"] * 3
        assert len(webhdfs_server.requests) == 6
        assert self.waves(webhdfs_server) == 4  # root and x together, then x/y: 2 HTTP each

    def test_get_small_file(self, tree: Metatree, webhdfs_server: WebHDFSServer) -> None:
        assert b"".join(tree.get("x/y/z/f")) == b"data"
        assert self.ops(webhdfs_server) == ["OPEN"] * 5  # 3 indexes, the record, the file
        assert len(webhdfs_server.requests) == 10
        assert self.waves(webhdfs_server) == 4  # through the thread pool, as on S3

    def test_get_unverified_and_stat(self, tree: Metatree, webhdfs_server: WebHDFSServer) -> None:
        assert b"".join(tree.get("x/y/z/f", verify=False)) == b"data"
        assert self.ops(webhdfs_server) == ["OPEN"] * 4
        assert self.waves(webhdfs_server) == 4
        webhdfs_server.reset_counters()
        assert tree.stat("x/y/z/f").size == 4
        assert self.ops(webhdfs_server) == ["OPEN"] * 4
        assert len(webhdfs_server.requests) == 8
        assert self.waves(webhdfs_server) == 4

    def test_put_into_existing_leaf(self, tree: Metatree, webhdfs_server: WebHDFSServer) -> None:
        tree.put("x/y/z", b"more", name="g")
        assert self.ops(webhdfs_server) == [
            "CREATE",
            "RENAME",  # lock
            "LISTSTATUS",  # x/y/z, sent with the indexes: is g there already?
            "OPEN",
            "OPEN",
            "OPEN",  # root, x, x/y
            "OPEN",  # x/y/z/metadata.json: read-modify-write of its records
            "CREATE",
            "RENAME",  # the file
            "OPEN",  # verify the lease
            "CREATE",
            "OPEN",  # conditional: x/y/z/metadata.json re-read just before the RENAME
            "RENAME",  # x/y/z/metadata.json with g's record: the commit point
            "RENAME",
            "OPEN",
            "DELETE",  # unlock
        ]
        assert len(webhdfs_server.requests) == 26
        assert self.waves(webhdfs_server) == 21  # 26 in a row before

    def test_update(self, tree: Metatree, webhdfs_server: WebHDFSServer) -> None:
        node = tree.find("x/y/z")
        webhdfs_server.reset_counters()
        node.update(score=0.5)
        # lock: CREATE temp + RENAME; read: OPEN; verify the lease before committing: OPEN
        # (HDFS has no conditional write: metatree/_locking/_webhdfs.py); write: CREATE temp +
        # RENAME, conditional: the file is re-read (OPEN) just before the RENAME
        # (docs/hardening-transfers.md); unlock, conditional on the lease still being ours:
        # RENAME to a tomb, OPEN it, DELETE it
        assert self.ops(webhdfs_server) == [
            "CREATE",
            "RENAME",
            "OPEN",
            "OPEN",
            "CREATE",
            "OPEN",
            "RENAME",
            "RENAME",
            "OPEN",
            "DELETE",
        ]
        assert self.waves(webhdfs_server) == 16  # each request waits for the one before

    def test_put_new_leaf(self, tree: Metatree, webhdfs_server: WebHDFSServer) -> None:
        tree.put("x/y/w", b"new", name="f")
        assert self.ops(webhdfs_server) == [
            "CREATE",
            "RENAME",  # lock
            "LISTSTATUS",  # x/y/w: an orphan there would be cleared first (docs/format.md)
            "OPEN",
            "OPEN",
            "OPEN",  # root, x, x/y: sent with the listing
            "CREATE",
            "RENAME",  # x/y/w/metadata.json with the file's record: the orphan marker
            "OPEN",  # the lease, before the file goes into the new node (docs/locking.md)
            "CREATE",
            "RENAME",  # the file
            "OPEN",  # verify the lease
            "CREATE",
            "OPEN",  # conditional commit: re-read x/y/metadata.json before the RENAME
            "RENAME",  # x/y/metadata.json: the commit point
            "RENAME",
            "OPEN",
            "DELETE",  # unlock: only if the lock object is still our lease (tomb)
        ]
        assert self.waves(webhdfs_server) == 24  # 29 in a row before


@pytest.mark.s3
class TestS3ModelRequests:
    """The model store's requests on S3 (issue 12): each operation in an exact sequence.

    Each is at its floor: an alias switch is the lock, the two indexes it checks, one write,
    the unlock; a download the two indexes, the version's metadata (record and file records)
    and the file; `list_models` the two indexes, whatever the number of versions.
    """

    @pytest.fixture
    def store(self, moto_server: MotoS3Server, s3_bucket: str) -> ModelStore:
        store = ModelStore(
            f"s3://{s3_bucket}/{uuid.uuid4().hex}", **s3_options(moto_server.endpoint_url)
        )
        store.upload("d", b"weights v1", model_id="v1")
        store.upload("d", b"weights v2", model_id="v2")
        store.set_alias("d", "production", "v1")
        return store

    @pytest.fixture
    def record(self, counting: MotoS3Server, store: ModelStore) -> Recorder:
        return Recorder(counting, store.tree.storage.root, reset=True)

    def test_set_alias(
        self, store: ModelStore, record: Recorder, moto_server: MotoS3Server
    ) -> None:
        store.set_alias("d", "production", "v2")
        (commit,) = [
            r
            for r in moto_server.requests
            if r.method == "PUT" and r.path.endswith("/d/metadata.json")
        ]
        headers = {k.lower() for k in commit.headers}
        assert "if-match" in headers  # conditional on the version read: the lease's fence
        assert record() == [
            "PUT .lock",
            "GET metadata.json",  # the root's index: is there such a domain?
            "GET d/metadata.json",  # the domain: its models, aliases and history
            "PUT d/metadata.json",  # alias and history entry together: the commit point
            "DELETE .lock",
        ]
        store.set_alias("d", "production", "v2")  # already so: nothing is written
        assert record() == ["PUT .lock", "GET metadata.json", "GET d/metadata.json", "DELETE .lock"]

    def test_download_latest(self, store: ModelStore, record: Recorder, tmp_path: Path) -> None:
        path = store.download("d", local_path=tmp_path)
        assert Path(path).read_bytes() == b"weights v2"
        assert record() == [
            "GET metadata.json",
            "GET d/metadata.json",  # latest: v2
            "GET d/v2/metadata.json",  # v2's record and its file records, read once
            "GET d/v2/model.bin",
        ]

    def test_list_models_in_a_state(self, store: ModelStore, record: Recorder) -> None:
        store.create_model_state("reviewed")
        store.set_model_state("d", "v1", "reviewed")
        record()
        assert store.list_models("d", state="reviewed") == ["v1"]
        assert record() == ["GET metadata.json", "GET d/metadata.json"]  # the root read once

    def test_list_models_of_1000_versions(self, store: ModelStore, record: Recorder) -> None:
        """Two requests whatever the count: the domain's metadata lists its models in order.

        The 1 000 versions are written straight into the domain's index (uploading them
        would take minutes of moto): `list_models` reads the index, never a version node.
        """
        assert store.list_models("d") == ["v2", "v1"]
        few = record()
        storage = store.tree.storage
        metadata = orjson.loads(storage.read_bytes("d/metadata.json"))
        metadata["children"] = [f"v{i}" for i in range(1, 1001)]
        metadata[".metatree.models"]["models"] = metadata["children"]  # the store's own list
        metadata["latest"] = "v1000"
        storage.write_atomic("d/metadata.json", orjson.dumps(metadata))
        record()
        listed = store.list_models("d")
        assert listed == [f"v{i}" for i in range(1000, 0, -1)]
        assert record() == few == ["GET metadata.json", "GET d/metadata.json"]

    def test_upload_new_version(self, store: ModelStore, record: Recorder) -> None:
        store.upload("d", b"weights v3", model_id="v3")
        assert record() == [
            "PUT .lock",
            "GET metadata.json",
            "GET d/metadata.json",  # the ids taken (in any letter case)
            "GET (list)",  # d/v3/: an orphan there would be cleared first
            "PUT d/v3/metadata.json",  # marks what a crash leaves as an orphan
            "PUT d/v3/model.bin",
            "PUT d/v3/metadata.json",  # the file's record and the model's record, together
            "PUT d/metadata.json",  # index entry, latest and its history entry: the commit
            "DELETE .lock",
        ]
        assert store.list_models("d")[0] == "v3"


QUIET = 0.1
"""Seconds without a new request before the server answers (`Waves`): requests sent
together share a wave however the client's threads are scheduled."""


class Recorder:
    """The requests made since it was made, ``METHOD key`` (keys under the root), in waves.

    A wave is a set of requests in flight together (counted at the server: `Waves`); within
    one, requests are listed in name order (they have none of their own). With `reset`,
    each call starts the next count from zero; without, counts accumulate.
    """

    def __init__(self, server: MotoS3Server, root: str, *, reset: bool) -> None:
        self.server, self.reset = server, reset
        self.prefix = root.split("/", 1)[1] + "/"
        server.count_waves(QUIET)
        server.reset_counters()

    def waves(self) -> list[list[str]]:
        """Return the requests made since, wave by wave (numbered from the first one's)."""
        out: dict[int, list[str]] = {}
        requests = list(self.server.requests)
        first = requests[0].wave if requests else 0
        for r in requests:
            key = r.path.split("/", 2)[-1]
            key = key[len(self.prefix) :] if key.startswith(self.prefix) else "(list)"
            out.setdefault(r.wave - first, []).append(f"{r.method} {key}")
        if self.reset:
            self.server.reset_counters()
        assert sorted(out) == list(range(len(out))), "a wave without requests: not a chain"
        return [sorted(out[wave]) for wave in sorted(out)]

    def __call__(self) -> list[str]:
        """Return the requests made since, in waves, flat."""
        return [request for wave in self.waves() for request in wave]

    def clear(self) -> None:
        """Forget the requests made so far."""
        self.server.reset_counters()


@pytest.fixture
def counting(moto_server: MotoS3Server) -> Iterator[MotoS3Server]:
    """The moto server, counting waves for this test only (the server is the session's)."""
    yield moto_server
    moto_server.count_waves(None)


@pytest.mark.s3
class TestS3LargeNodeRequests:
    """Issue 16: a put into a format v2 node costs the same at 10 and at 10 000 siblings.

    Both nodes are planted as a compaction leaves them (a snapshot, no pieces after it), so
    the only difference is the number of names; a fresh tree reads each (nothing cached).
    """

    @pytest.fixture
    def root(self, moto_server: MotoS3Server, s3_bucket: str) -> str:
        return f"s3://{s3_bucket}/{uuid.uuid4().hex}"

    def _plant(self, moto_server: MotoS3Server, root: str, siblings: int) -> Metatree:
        tree = Metatree(root, KEYS, **s3_options(moto_server.endpoint_url))
        tree.put("x/first/z", b"data", name="f")
        tree.reindex("x", format=2)  # "first" inline (the mirror), the others in the log
        marker = orjson.loads(tree.storage.read_bytes("x/metadata.json"))[".metatree.index"]
        names = [f"s{i:05d}" for i in range(siblings - 1)]
        tree.storage.write_atomic(
            f"x/.metatree.index/{marker['generation']}/snapshot-{1:020d}.json",
            orjson.dumps({"seq": 1, "children": names}),
        )
        return Metatree(root, **s3_options(moto_server.endpoint_url))

    def _put(self, moto_server: MotoS3Server, tree: Metatree) -> list[tuple[str, int]]:
        moto_server.reset_counters()
        tree.put("x/new/z", b"data", name="f")
        prefix = tree.storage.root.split("/", 1)[1] + "/"
        out = []
        for r in moto_server.requests:
            key = r.path.split("/", 2)[-1]
            key = key[len(prefix) :] if key.startswith(prefix) else "(list)"
            key = re.sub("[0-9a-f]{32}", "<generation>", key)
            out.append((r.wave, f"{r.method} {key}", r.length if r.method == "PUT" else 0))
        return [(request, length) for _, request, length in sorted(out)]  # by wave, then name

    def test_put_cost_does_not_grow_with_siblings(self, counting: MotoS3Server, root: str) -> None:
        moto_server = counting
        moto_server.count_waves(QUIET)
        small = self._put(moto_server, self._plant(moto_server, f"{root}/small", 10))
        large = self._put(moto_server, self._plant(moto_server, f"{root}/large", 10_000))
        assert [r for r, _ in small] == [r for r, _ in large]
        # the same bytes: records have fixed widths; the lease's (pid, expiry) do not
        assert [n for r, n in small if r != "PUT .lock"] == [
            n for r, n in large if r != "PUT .lock"
        ]
        assert sum(n for _, n in large) < 2_000  # the piece names one child, not 10 000
        log = "x/.metatree.index/<generation>"
        assert [r for r, _ in large] == [
            "PUT .lock",
            # read together: the indexes on the way, and (for a new leaf x/new/z) its listing
            "GET (list)",
            "GET metadata.json",
            "GET x/metadata.json",
            "GET x/new/metadata.json",  # sent before x's index says that new is not there
            "GET (list)",  # x's log: the snapshot, and the pieces after it (none)
            f"GET {log}/snapshot-{1:020d}.json",  # a fresh process: nothing cached yet
            "GET (list)",  # x/new/: an orphan there would be cleared first
            "PUT x/new/metadata.json",
            "PUT x/new/z/f",
            "PUT x/new/z/metadata.json",
            f"PUT {log}/{2:020d}.json",  # the commit point: a conditional create
            "GET (list)",  # no compaction folded that number meanwhile (a stalled writer)
            "DELETE .lock",
        ]
        assert "PUT x/metadata.json" not in [r for r, _ in large]  # the index is not rewritten


@pytest.fixture(scope="module")
def counting_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """An Azurite of its own that logs each request it receives (the count is the log's)."""
    with AzuriteServer(str(tmp_path_factory.mktemp("azurite-count")), count=True) as server:
        yield server


@pytest.mark.azure
class TestAzureRequests:
    """The same operations as on S3, counted at Azurite: the same requests, one for one.

    Azurite's log gives the order requests arrived in, not which were in flight together:
    the waves are planned by the core for every backend alike, and counted on S3 above. Here
    the requests of a wave, sent at once, are compared as a set; the lock's are first and last.
    """

    @pytest.fixture
    def tree(self, counting_azurite: AzuriteServer) -> Metatree:
        container = make_container(counting_azurite.endpoint_url)
        tree = Metatree(f"az://{container}/{uuid.uuid4().hex}", KEYS, **counting_azurite.options())
        tree.put("x/y/z", b"data", name="f")
        tree.find("x").update(active="y")
        tree.find("x/y/z").update(model_file="f")
        counting_azurite.reset_counters()
        return tree

    @staticmethod
    def record(server: AzuriteServer, tree: Metatree) -> list[str]:
        """The requests since the last call, ``METHOD key`` under the root, in arrival order."""
        prefix = tree.storage.root.split("/", 1)[1] + "/"
        out = []
        for r in server.requests():
            key = r.path.partition("/")[2]
            out.append(f"{r.method} {key.removeprefix(prefix) if key else '(list)'}")
        server.reset_counters()
        return out

    def test_reads(self, tree: Metatree, counting_azurite: AzuriteServer) -> None:
        Metatree(tree.storage, KEYS)
        assert self.record(counting_azurite, tree) == ["GET .metatree"]
        tree.find("x/y/z")
        assert sorted(self.record(counting_azurite, tree)) == INDEXES
        assert b"".join(tree.get("x/y/z/f")) == b"data"
        assert sorted(self.record(counting_azurite, tree)) == sorted(
            [*INDEXES, "GET x/y/z/f", "GET x/y/z/metadata.json"]
        )
        assert tree.stat("x/y/z/f").size == 4
        assert sorted(self.record(counting_azurite, tree)) == [
            *INDEXES, "GET x/y/z/metadata.json"
        ]  # fmt: skip

    def test_update(self, tree: Metatree, counting_azurite: AzuriteServer) -> None:
        node = tree.find("x/y/z")
        self.record(counting_azurite, tree)
        node.update(score=0.5)
        assert self.record(counting_azurite, tree) == [
            "PUT .lock",
            "GET x/y/z/metadata.json",
            "PUT x/y/z/metadata.json",
            "DELETE .lock",
        ]

    def test_put_new_leaf(self, tree: Metatree, counting_azurite: AzuriteServer) -> None:
        tree.put("x/y/w", b"new", name="f")
        requests = self.record(counting_azurite, tree)
        assert requests[0] == "PUT .lock"
        assert sorted(requests[1:5]) == sorted(["GET (list)", *INDEXES])  # one wave
        assert requests[5:] == [
            "PUT x/y/w/metadata.json",  # before the file: what a crash leaves is an orphan
            "PUT x/y/w/f",
            "PUT x/y/metadata.json",  # the commit point
            "DELETE .lock",
        ]

    def test_put_into_existing_leaf(self, tree: Metatree, counting_azurite: AzuriteServer) -> None:
        tree.put("x/y/z", b"more", name="g")
        requests = self.record(counting_azurite, tree)
        assert requests[0] == "PUT .lock"
        assert sorted(requests[1:5]) == sorted(["GET (list)", *INDEXES])
        assert requests[5:] == [
            "GET x/y/z/metadata.json",
            "PUT x/y/z/g",
            "PUT x/y/z/metadata.json",
            "DELETE .lock",
        ]

    def test_put_replacing_a_file(self, tree: Metatree, counting_azurite: AzuriteServer) -> None:
        tree.put("x/y/z", b"other", name="f", force=True)
        requests = self.record(counting_azurite, tree)
        assert requests[0] == "PUT .lock"
        assert sorted(requests[1:5]) == sorted(["GET (list)", *INDEXES])
        assert requests[5:] == [
            "GET x/y/z/metadata.json",
            "HEAD x/y/z/f",  # listed: a blob, or a blob beside a prefix? kind() tells
            "PUT x/y/z/f",
            "PUT x/y/z/metadata.json",
            "DELETE .lock",
        ]


@pytest.fixture(scope="module")
def counting_gcs() -> Iterator[GCSServer]:
    """A GCS test server of its own (the emulator behind the precondition layer)."""
    with GCSServer() as server:
        yield server


@pytest.mark.gcs
class TestGCSRequests:
    """The same operations on GCS (the opt-in lock backend), counted at the test server.

    The same requests as on S3, one for one: an upload is a POST to the upload endpoint
    (the object's name is in its body, so it is counted as ``POST upload``), a read a media
    GET, a listing a GET of the bucket's objects.
    """

    @pytest.fixture
    def tree(self, counting_gcs: GCSServer) -> Metatree:
        from gcsfs.core import GCSFileSystem

        from metatree.backends.gcs import GCSGenerationLockBackend
        from metatree.testing.gcs_server import gcs_options, make_gcs_bucket

        bucket = make_gcs_bucket(counting_gcs.endpoint_url)
        fs = GCSFileSystem(**gcs_options(counting_gcs.endpoint_url))
        storage = as_storage(f"gs://{bucket}/{uuid.uuid4().hex}", fs=fs)
        storage.backend = GCSGenerationLockBackend(fs)
        tree = Metatree(storage, KEYS)
        tree.put("x/y/z", b"data", name="f")
        tree.find("x").update(active="y")
        tree.find("x/y/z").update(model_file="f")
        counting_gcs.reset_requests()
        return tree

    @staticmethod
    def record(server: GCSServer, tree: Metatree) -> list[str]:
        """The requests since the last call, ``METHOD key`` under the root, in arrival order."""
        prefix = tree.storage.root.split("/", 1)[1] + "/"
        out = []
        for r in list(server.requests):
            name = r.path.partition("/o/")[2]
            if r.path.startswith("/upload/"):
                out.append(f"{r.method} upload")
            else:
                out.append(f"{r.method} {name.removeprefix(prefix) if name else '(list)'}")
        server.reset_requests()
        return out

    def test_reads(self, tree: Metatree, counting_gcs: GCSServer) -> None:
        Metatree(tree.storage, KEYS)
        assert self.record(counting_gcs, tree) == ["GET .metatree"]
        tree.find("x/y/z")
        assert sorted(self.record(counting_gcs, tree)) == INDEXES
        assert b"".join(tree.get("x/y/z/f")) == b"data"
        assert sorted(self.record(counting_gcs, tree)) == sorted(
            [*INDEXES, "GET x/y/z/f", "GET x/y/z/metadata.json"]
        )

    def test_update(self, tree: Metatree, counting_gcs: GCSServer) -> None:
        node = tree.find("x/y/z")
        self.record(counting_gcs, tree)
        node.update(score=0.5)
        assert self.record(counting_gcs, tree) == [
            "POST upload",  # the lock (ifGenerationMatch=0)
            "GET x/y/z/metadata.json",
            "POST upload",  # ifGenerationMatch=<the generation read>
            "DELETE .lock",
        ]

    def test_put_new_leaf(self, tree: Metatree, counting_gcs: GCSServer) -> None:
        tree.put("x/y/w", b"new", name="f")
        requests = self.record(counting_gcs, tree)
        assert requests[0] == "POST upload"
        assert sorted(requests[1:5]) == sorted(["GET (list)", *INDEXES])  # one wave
        # the leaf's metadata.json, the file, the parent's index (the commit point)
        assert requests[5:] == ["POST upload"] * 3 + ["DELETE .lock"]
