"""Waves (issue 17): reads sent together, then checked in order as if read one at a time.

The request and wave counts per operation are asserted at the servers (tests/test_requests.py);
these tests pin the rules that make reading ahead safe, on a memory tree made to read
concurrently (its backend's ``read_concurrency`` raised), where a read can be made to answer
what a racing writer would have left.
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from metatree import Metatree
from metatree._waves import Wave
from metatree.errors import AlreadyExistsError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable

KEYS = ("a", "b", "c")


class TestWave:
    def test_lazy_wave_runs_only_what_is_asked_in_order(self) -> None:
        ran: list[int] = []

        def job(i: int) -> Callable[[], int]:
            def run() -> int:
                ran.append(i)
                return i

            return run

        wave = Wave([job(i) for i in range(3)], 1)
        assert ran == []
        assert wave.result(2) == 2
        assert wave.result(0) == 0
        assert (ran, wave.sent(1)) == ([2, 0], False)

    def test_concurrent_wave_sends_all_at_once(self) -> None:
        barrier = threading.Barrier(3, timeout=10)  # breaks unless all three are in flight

        def job(i: int) -> Callable[[], int]:
            def run() -> int:
                barrier.wait()
                return i

            return run

        wave = Wave([job(i) for i in range(3)], 8)
        assert [wave.sent(i) for i in range(3)] == [True] * 3
        assert [wave.result(i) for i in range(3)] == [0, 1, 2]
        assert not barrier.broken

    def test_one_failure_is_raised_for_its_job_only(self) -> None:
        def fail() -> int:
            raise NotFoundError("x", "file")

        wave = Wave([lambda: 1, fail, lambda: 3], 4)
        with pytest.raises(NotFoundError):
            wave.result(1)
        assert (wave.result(0), wave.result(2)) == (1, 3)


@pytest.fixture
def tree() -> Metatree:
    tree = Metatree(f"memory://waves-{uuid.uuid4().hex}", KEYS)
    tree.put("x/y/z", b"v1", name="f")
    tree.storage.backend.read_concurrency = 4  # type: ignore[misc]  # this instance: waves
    return tree


def _answering(tree: Metatree, rel: str, answer: Callable[[], Any]) -> list[str]:
    """Make the first read of `rel` give `answer()` (what a racing writer left); log reads."""
    storage = tree.storage
    real = storage.read_versioned
    reads: list[str] = []
    first = [True]

    def read_versioned(path: str, limit: int | None = None) -> Any:
        reads.append(path)
        if path == rel and first[0]:
            first[0] = False
            return answer()
        return real(path, limit)

    storage.read_versioned = read_versioned  # type: ignore[assignment]
    return reads


def test_reads_are_sent_in_one_wave_and_give_the_same_answers(tree: Metatree) -> None:
    reads = _answering(tree, "", lambda: None)
    assert tree.find("x/y/z").path == ("x", "y", "z")
    assert b"".join(tree.get("x/y/z/f")) == b"v1"
    assert tree.stat("x/y/z/f").size == 2
    assert reads.count("x/y/z/f") == 1  # read ahead, used: not read again


def test_a_file_read_before_its_record_is_read_again_not_reported(tree: Metatree) -> None:
    """The wave may read the file before a forced put replaces it, and the record after.

    Those old bytes differ from the new record: read in order (record, then file) that
    cannot happen, so the file is read again after the record: no `IntegrityError`.
    """
    tree.put("x/y/z", b"v2 new", name="f", force=True)
    reads = _answering(tree, "x/y/z/f", lambda: (b"v1", None))  # what it held before
    assert b"".join(tree.get("x/y/z/f")) == b"v2 new"
    assert reads.count("x/y/z/f") == 1  # the read ahead was faked: the second is real


def test_a_file_read_before_its_record_downloads_the_new_bytes(
    tree: Metatree, tmp_path: Any
) -> None:
    tree.put("x/y/z", b"v2 new", name="f", force=True)
    _answering(tree, "x/y/z/f", lambda: (b"v1", None))
    tree.get("x/y/z/f", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"v2 new"


def test_a_node_read_before_its_parent_listed_it_is_read_again(tree: Metatree) -> None:
    """A node's metadata.json missing in the wave, yet listed by its parent: read it again.

    A put writes the node before the index that lists it (invariant 2), so a read after
    the parent's sees it; the wave may have read it first.
    """

    def absent() -> Any:
        raise NotFoundError("x/y/metadata.json", "file")

    reads = _answering(tree, "x/y/metadata.json", absent)
    assert tree.find("x/y/z").path == ("x", "y", "z")
    assert reads.count("x/y/metadata.json") == 2


def test_a_large_file_is_not_read_ahead_whole(tree: Metatree) -> None:
    data = b"\x01" * (256 * 2**10 + 1)
    tree.put("x/y/z", data, name="big")
    assert b"".join(tree.get("x/y/z/big")) == data
    assert b"".join(tree.get("x/y/z/big", verify=False)) == data


def test_a_partial_listing_is_not_trusted(tree: Metatree) -> None:
    """A listing read ahead that did not come whole (S3 pages at 1 000) is listed again."""
    storage = tree.storage
    listed: list[str] = []
    real = storage.listdir

    def listdir(rel: str) -> dict[str, str]:
        listed.append(rel)
        return real(rel)

    storage.list_first = lambda rel: ({}, False)  # type: ignore[method-assign]
    storage.listdir = listdir  # type: ignore[method-assign]
    tree.put("x/y/w", b"new", name="f")  # claim lists x/y/w itself
    assert "x/y/w" in listed
    tree.put("x/y/z", b"g", name="g")  # the target's kind is asked for again
    with pytest.raises(AlreadyExistsError):
        tree.put("x/y/z", b"g", name="g")


def test_a_listed_directory_is_asked_again(tree: Metatree) -> None:
    """The listing says a directory: S3 may also hold a key of that name, which wins."""
    src = tree.storage
    src.fs.pipe_file(f"{src.root}/x/y/z/d/inner", b"1")  # a directory d, not stored by put
    with pytest.raises(AlreadyExistsError, match="directory"):
        tree.put("x/y/z", b"g", name="d", force=True)


def test_walk_reads_each_sibling_group_in_waves(tree: Metatree) -> None:
    for leaf in ("u", "v", "w"):
        tree.put(f"x/y/{leaf}", b"d", name="f")
    reads = _answering(tree, "", lambda: None)
    walked = [(n.path, m) for n, m in tree.walk()]
    assert len(reads) == 7  # each node once
    tree.storage.backend.read_concurrency = 1  # type: ignore[misc]
    assert walked == [(n.path, m) for n, m in tree.walk()]  # the same nodes, order, metadata
    assert [p for p, _ in walked][-4:] == [("x", "y", c) for c in ("z", "u", "v", "w")]


def test_walk_reads_a_group_when_it_reaches_it(tree: Metatree) -> None:
    """A wave is sent when the walk reaches its first node: stopping early reads no more."""
    for i in range(10):
        tree.put(f"x/y/v{i}", b"d", name="f")
    reads = _answering(tree, "", lambda: None)
    walk = tree.walk()
    for _ in range(4):  # the root, x, y, the first leaf
        next(walk)
    leaves = [r for r in reads if r.startswith("x/y/") and r.count("/") == 3]
    assert len(leaves) == 4  # one wave of read_concurrency (4) leaves, not all 11


def test_a_wave_runs_in_a_forked_child() -> None:
    """The pool is the process's: a child forked after a wave makes its own (no threads)."""
    import os

    Wave([lambda: 1, lambda: 2], 4)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports by its exit status
        wave = Wave([lambda: 1, lambda: 2], 4)
        os._exit(0 if (wave.result(0), wave.result(1)) == (1, 2) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_interrupted_wave_starts_nothing_more() -> None:
    """Ctrl-C while a wave's result is awaited: its jobs not started never start.

    The reads in flight are not waited for (a wave only reads: a late answer changes
    nothing); on S3 they are aborted (`metatree.backends.aio.abortable`).
    """
    import signal
    import time

    started = threading.Event()
    finished: list[int] = []

    def slow(i: int) -> Callable[[], int]:
        def run() -> int:
            started.set()
            time.sleep(0.2)
            finished.append(i)
            return i

        return run

    def interrupt() -> None:  # a real SIGINT: it breaks the main thread's wait, as Ctrl-C does
        started.wait(5)
        time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    wave = Wave([slow(i) for i in range(6)], 2)  # two at a time: four wait their turn
    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        wave.result(5)
    time.sleep(1.0)  # the two in flight end; none of the others starts
    assert len(finished) <= 2


def test_a_result_waits_for_its_own_job_only() -> None:
    """A miss decided by an earlier level does not wait for the reads sent after it."""
    release = threading.Event()

    def stalled() -> int:
        release.wait(10)
        return 2

    wave = Wave([lambda: 1, stalled], 4)
    try:
        assert wave.result(0) == 1  # returns while the second read is still in flight
        assert not release.is_set()
    finally:
        release.set()
    assert wave.result(1) == 2


def _orphan_tree(root: str) -> tuple[Metatree, Metatree]:
    """Return a reader (reading concurrently) and a writer on one tree with an orphan x/y/z.

    The orphan is what a put killed before its commit leaves: x/y/z with its record and its
    file f, unlisted by x/y.
    """
    reader = Metatree(root, KEYS)
    reader.put("x/y/q", b"other", name="f")
    reader.put("x/y/z", b"ORPHAN, never committed", name="f")
    metadata = orjson.loads(reader.storage.read_bytes("x/y/metadata.json"))
    metadata["children"] = ["q"]  # the killed put never listed z
    reader.storage.write_atomic("x/y/metadata.json", orjson.dumps(metadata))
    reader.storage.backend.read_concurrency = 4  # type: ignore[misc]
    return reader, Metatree(root, KEYS)  # a Storage of its own: not patched below


def _racing(reader: Metatree, parent: str, child: str, write: Callable[[], object]) -> None:
    """Run `write` while the reader's read of `parent` is in flight.

    Before it runs, it waits (0.5 s at most) for the reader's read of `child`, if the reader
    sends that in the same wave: the order a slow answer gives. A reader that reads `child`
    only after `parent` never sends it meanwhile.
    """
    storage = reader.storage
    real = storage.read_versioned
    child_read = threading.Event()
    ran = [False]

    def read_versioned(path: str, limit: int | None = None) -> Any:
        if path == parent and not ran[0]:
            ran[0] = True
            child_read.wait(0.5)
            write()
        got = real(path, limit)
        if path == child:
            child_read.set()
        return got

    storage.read_versioned = read_versioned  # type: ignore[assignment]


def test_a_get_never_returns_an_orphan_replaced_meanwhile() -> None:
    """A put re-creates x/y/z over a killed put's orphan while a get of x/y/z/f reads.

    The node's metadata.json and its file are read only after the index that lists the
    node: the orphan, deleted before the new node was listed, is never returned.
    """
    reader, writer = _orphan_tree(f"memory://waves-orphan-{uuid.uuid4().hex}")
    write = lambda: writer.put("x/y/z", b"honest", name="f")
    _racing(reader, "x/y/metadata.json", "x/y/z/metadata.json", write)
    assert b"".join(reader.get("x/y/z/f")) == b"honest"


def test_a_stat_never_returns_an_orphan_record() -> None:
    reader, writer = _orphan_tree(f"memory://waves-orphan-{uuid.uuid4().hex}")
    write = lambda: writer.put("x/y/z", b"honest", name="g")
    _racing(reader, "x/y/metadata.json", "x/y/z/metadata.json", write)
    with pytest.raises(NotFoundError):
        reader.stat("x/y/z/f")  # the new z has g only


def test_a_find_never_finds_through_an_orphan() -> None:
    """find x/y/z/w: the orphan x/y/z lists w; the new x/y/z (put meanwhile) does not."""
    root = f"memory://waves-orphan-{uuid.uuid4().hex}"
    reader = Metatree(root, (*KEYS, "d"))
    reader.put("x/y/z/w", b"orphan", name="f")
    metadata = orjson.loads(reader.storage.read_bytes("x/y/metadata.json"))
    metadata["children"] = []
    reader.storage.write_atomic("x/y/metadata.json", orjson.dumps(metadata))
    reader.storage.backend.read_concurrency = 4  # type: ignore[misc]
    writer = Metatree(root, (*KEYS, "d"))
    write = lambda: writer.put("x/y/z/v", b"honest", name="f")
    _racing(reader, "x/y/metadata.json", "x/y/z/metadata.json", write)
    with pytest.raises(NotFoundError):
        reader.find("x/y/z/w")


def _reindex_before_listing(reader: Metatree, concurrency: int) -> list[str]:
    """Make another writer reindex x/y to format 1 just before the reader lists its log.

    Returns the list of logs listed that way (empty until it happened).
    """
    writer = Metatree(reader.storage.url, KEYS)
    storage = reader.storage
    storage.backend.read_concurrency = concurrency  # type: ignore[misc]
    real = storage.listdir
    ran: list[str] = []

    def listdir(rel: str) -> dict[str, str]:
        if ".metatree.index" in rel and not ran:
            ran.append(rel)
            writer.reindex("x/y", format=1)  # deletes the log just about to be listed
        return real(rel)

    storage.listdir = listdir  # type: ignore[method-assign]
    return ran


@pytest.mark.parametrize("cold", [False, True])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_read_racing_a_reindex_reads_the_node_again(concurrency: int, cold: bool) -> None:
    """A reindex replaces a v2 node's log between a read of its metadata.json and its listing.

    The log then holds less than metadata.json says: the node is read again, never reported
    corrupt or missing its children.
    """
    root = f"memory://waves-reindex-{uuid.uuid4().hex}"
    reader = Metatree(root, KEYS, index_threshold=1)
    for leaf in ("z", "u", "v"):
        reader.put(f"x/y/{leaf}", b"data", name="f")
    if cold:  # nothing of the log cached: it reads as empty once deleted
        reader = Metatree(root, KEYS)
    ran = _reindex_before_listing(reader, concurrency)
    assert b"".join(reader.get("x/y/v/f")) == b"data"
    assert ran


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_reindex_of_a_fresh_log_is_not_read_as_empty(concurrency: int) -> None:
    """A node just turned format 2 (its marker at log number 0) reindexed under a read.

    The log, deleted before the reader lists it, lists empty: that is a log of no pieces
    only if metadata.json still names it (one more read, only for an empty log).
    """
    root = f"memory://waves-reindex0-{uuid.uuid4().hex}"
    reader = Metatree(root, KEYS)
    for leaf in ("z", "v"):
        reader.put(f"x/y/{leaf}", b"data", name="f")
    reader.reindex("x/y", format=2)  # marker at log number 0, z and v in its mirror
    reader.put("x/y/u", b"data", name="f")  # in piece 1 only: metadata.json is not rewritten
    reader = Metatree(root, KEYS)  # nothing cached
    ran = _reindex_before_listing(reader, concurrency)
    assert reader.find("x/y/u").path == ("x", "y", "u")
    assert ran


def test_a_miss_stops_the_reads_sent_after_it() -> None:
    """A find answered by the root's index stops the reads of its wave not yet started."""
    tree = Metatree(f"memory://waves-miss-{uuid.uuid4().hex}", (*KEYS, "d", "e"))
    tree.put("x/y/z/w/v", b"d", name="f")
    storage = tree.storage
    real = storage.read_versioned
    release = threading.Event()
    reads: list[str] = []

    def read_versioned(path: str, limit: int | None = None) -> Any:
        reads.append(path)
        if path != "metadata.json":  # every level below the root answers late
            release.wait(10)
        return real(path, limit)

    storage.read_versioned = read_versioned  # type: ignore[assignment]
    storage.backend.read_concurrency = 2  # type: ignore[misc]  # two reads at a time
    try:
        with pytest.raises(NotFoundError):
            tree.find("q/y/z/w/v")  # the root does not list q: answered at once
    finally:
        release.set()
    import time

    time.sleep(0.3)
    # the root, q, and maybe the one started as the root's read ended; never all five levels
    assert {"metadata.json", "q/metadata.json"} <= set(reads)
    assert set(reads) <= {"metadata.json", "q/metadata.json", "q/y/metadata.json"}


def test_a_stalled_store_holds_only_its_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads stalled on one filesystem (WebHDFS cannot abort them) never delay another's."""
    from metatree import _waves

    monkeypatch.setattr(_waves, "POOL_SIZE", 2)
    release = threading.Event()
    stalled_owner, other_owner = object(), object()
    stalled = Wave([lambda: release.wait(10)] * 4, 2, stalled_owner)  # fills its 2 threads
    try:
        done = threading.Event()
        other = Wave([lambda: 1, lambda: 2], 2, other_owner)

        def ask() -> None:
            other.result(1)
            done.set()

        threading.Thread(target=ask, daemon=True).start()
        assert done.wait(5)  # not behind the stalled reads
    finally:
        release.set()
    assert stalled.result(3) is True


def test_a_pool_let_go_still_runs_its_waves_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past `POOLS_KEPT` filesystems the oldest pool is shut down; its waves still finish."""
    from metatree import _waves

    monkeypatch.setattr(_waves, "POOLS_KEPT", 1)
    release = threading.Event()
    first = Wave([lambda: release.wait(10), lambda: 2, lambda: 3], 1 + 1, object())
    Wave([lambda: 1, lambda: 1], 2, object())  # a second filesystem: the first pool goes
    release.set()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.extend(first.result(i) for i in range(3)))
    reader.daemon = True
    reader.start()
    reader.join(5)  # a job left waiting for a pool that is gone would never end
    assert got == [True, 2, 3]
