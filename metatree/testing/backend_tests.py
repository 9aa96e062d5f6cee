"""The primitive-level suite every backend runs: `BackendTests` (as zarr's ``StoreTests``).

`metatree.testing.conformance` tests the database on a backend; this suite tests the
backend's own primitives (`Backend.read`, `write_if`, `create_exclusive`, `replace_tree`...)
directly, one promise of their docstrings per test, so that a new backend (GCS, Azure) is
judged before the database is built on it and a broken promise is named where it is broken.

A backend's test module subclasses `BackendTests` and overrides the `storage` fixture to
return a fresh, empty `Storage` on that backend (the same fixture the conformance suite
takes). The suite takes the filesystem and the root from it, and the backend from
`backend_for`. Tests needing a promise the backend does not make skip by its `Capabilities`;
`concurrency_safe = False` marks a *server* (moto) whose conditional writes are not atomic
under contention, though the backend's requests are right. See docs/backends.md.

Races run in separate processes (forkserver, else spawn: s3fs clients are unusable after a
fork), each given the filesystem pickled (fsspec filesystems pickle by their constructor
options); on a filesystem held in this process's memory they run as threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing as mp
import queue
import threading
import uuid
from typing import IO, TYPE_CHECKING, Any, ClassVar, Protocol, cast

import pytest
from fsspec.callbacks import Callback

from metatree._transfer import Transfer
from metatree.backends import MISSING, Backend, Capabilities, Changed
from metatree.errors import AlreadyExistsError, ConflictError, NotFoundError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.context import ForkServerContext, SpawnContext
    from pathlib import Path

    from metatree._storage import Storage
    from metatree._types import Source

__all__ = ["BackendTests"]

_WAIT = 120.0
"""Seconds a racer waits for the others at the start line (a hang, not a measurement)."""
_KINDS = ("file", "directory")


class _Queue(Protocol):
    def put(self, item: Any) -> None: ...

    def get(self, block: bool = ..., timeout: float | None = ...) -> Any: ...


class _Barrier(Protocol):
    def wait(self, timeout: float | None = ...) -> int: ...


class _Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...


# -- process bodies (module level: spawned and forkserver processes import them) -----------
def _race(
    storage: Storage,
    racer: int,
    rounds: list[tuple[str, str, object]],
    start: _Barrier,
    results: _Queue,
) -> None:
    """For each round, wait for every racer, then try once to write this racer's body.

    A round is ``(path, mode, version)``: mode ``"create"`` is `create_exclusive`,
    ``"missing"`` is `write_if` with `MISSING` (which does not survive pickling as itself),
    ``"version"`` is `write_if` with `version`. Reports (round, body, won) or the error.
    """
    backend = storage.backend  # the backend the test runs, registered or not in this process
    for number, (path, mode, version) in enumerate(rounds):
        body = _racer_body(racer, number)
        try:
            start.wait(_WAIT)
            if mode == "create":
                won: object = backend.create_exclusive(path, body)
            else:
                won = backend.write_if(path, body, MISSING if mode == "missing" else version)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails naming it
            won = repr(exc)
        results.put((number, body, won))


def _racer_body(racer: int, number: int) -> bytes:
    return f"racer {racer} round {number}".encode()


def _put(
    backend: Backend, source: Source, path: str, callback: Callback, digest: str | None = None
) -> str | None:
    """Put as `Storage.put` does: the bytes move through a `Transfer` (progress, hashing)."""
    with Transfer(callback, digest) as transfer, transfer.source(source) as upload:
        backend.put(upload, path)
    return transfer.hexdigest()


def _get(
    backend: Backend, path: str, out: IO[bytes], callback: Callback, digest: str | None = None
) -> str | None:
    """Get as `Storage.get` does, through a `Transfer`."""
    with Transfer(callback, digest) as transfer:
        download = transfer.sink(out, "<test>")
        backend.get(path, download)
        download.finish()
    return transfer.hexdigest()


def _write_many(storage: Storage, path: str, size: int, count: int, done: _Event) -> None:
    """Replace `path` `count` times with uniform bodies, alternating `write_atomic` and `put`."""
    from fsspec.callbacks import DEFAULT_CALLBACK

    backend = storage.backend
    try:
        for i in range(count):
            body = _uniform(i, size)
            if i % 2:
                _put(backend, body, path, DEFAULT_CALLBACK)
            else:
                backend.write_atomic(path, body)
    finally:
        done.set()


def _uniform(i: int, size: int) -> bytes:
    """Body number `i`: one byte value throughout, so a mix of two bodies shows."""
    return bytes([i % 251 + 1]) * size


def _context() -> ForkServerContext | SpawnContext:
    """Forkserver where there is one (cheap children of a clean process), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(["metatree", __name__])
        return context
    return mp.get_context("spawn")


class _Recorder(Callback):  # type: ignore[misc]  # fsspec is untyped
    """A progress callback that remembers what it was told."""


class _Broken(Exception):
    """Raised by a source or a callback in the middle of a transfer."""


class _FailingSource(io.RawIOBase):
    """A stream that gives `size` bytes (at most `n` per read), then fails mid-upload."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self.left:
            raise _Broken("the source broke")
        chunk = b"n" * (self.left if n < 0 else min(n, self.left))
        self.left -= len(chunk)
        return chunk


class _FailingCallback(Callback):  # type: ignore[misc]  # fsspec is untyped
    """A progress callback that raises on the first progress it is told of."""

    def relative_update(self, inc: int = 1) -> None:
        raise _Broken("the callback broke")


class BackendTests:
    """The promises of each `Backend` primitive. Override `storage`.

    Class settings a backend's test class may change: `concurrency_safe` (False for a server
    whose conditional writes are not atomic under contention), `racers` (processes per race),
    `race_rounds`, `visible_writes` and `visible_size` (the whole-or-nothing visibility test),
    `failed_put_size`, and `known_failures`.
    """

    known_failures: ClassVar[dict[str, str]] = {}
    """Test name (``test_x``, or ``test_x[param]`` for one case) -> why this backend breaks
    that promise: run as ``xfail(strict=True)``, so the suite stays green while the break is
    named, and fails once the backend is fixed (then the entry is removed)."""
    concurrency_safe: ClassVar[bool] = True
    """Whether the server's exclusive creates and conditional writes are atomic under contention."""
    racers: ClassVar[int] = 4
    race_rounds: ClassVar[int] = 10
    visible_writes: ClassVar[int] = 24
    visible_size: ClassVar[int] = 256 * 2**10
    failed_put_size: ClassVar[int] = 64 * 2**10
    """Bytes a failing put sends before it breaks: above a multipart threshold, the failure
    lands between parts (S3 sets 9 MiB: one part of 8 MiB is uploaded, then aborted)."""

    @pytest.fixture
    def storage(self) -> Storage:
        """Return a fresh, empty storage root; each backend's test class overrides this."""
        raise NotImplementedError("override `storage` in the backend's test class")

    @pytest.fixture(autouse=True)
    def _known_failure(self, request: pytest.FixtureRequest) -> None:
        node = request.node
        reason = self.known_failures.get(node.name) or self.known_failures.get(node.originalname)
        if reason is not None:
            request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))

    @pytest.fixture
    def backend(self, storage: Storage) -> Backend:
        """Return the storage's backend (`backend_for` its filesystem, or the one it was given)."""
        return storage.backend

    @pytest.fixture
    def root(self, storage: Storage) -> str:
        """Return the storage root as a path of the filesystem (every test writes below it)."""
        return storage.root

    @pytest.fixture
    def other(self, storage: Storage) -> Backend:
        """Return a backend on a second instance of the filesystem: own caches, same store."""
        fs = storage.fs
        twin = type(fs)(*fs.storage_args, **fs.storage_options, skip_instance_cache=True)
        assert twin is not fs
        return type(storage.backend)(twin)

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _trash(root: str) -> str:
        return f"{root}/.metatree.trash.{uuid.uuid4().hex}"

    def _race(
        self, storage: Storage, backend: Backend, mode: str, seed: bytes | None = None
    ) -> None:
        """Race `racers` writers of distinct bodies for `race_rounds` fresh paths.

        Each round must have exactly one winner, and the stored body must be the winner's.
        The same processes run every round (one barrier per round): rounds are cheap, and a
        race lost only sometimes is caught by one of them.
        """
        if not self.concurrency_safe:
            pytest.skip("this server's conditional writes are not atomic under contention")
        rounds: list[tuple[str, str, object]] = []
        for number in range(self.race_rounds):
            path = f"{storage.root}/race-{number}"
            version = None
            if seed is not None:
                backend.write_atomic(path, seed)
                version = backend.read_versioned(path)[1]
            rounds.append((path, mode, version))
        results: _Queue
        start: _Barrier
        if storage.capabilities.data_in_memory:  # other processes would not see it: threads
            results, start = queue.Queue(), threading.Barrier(self.racers)
            workers: list[Any] = [
                threading.Thread(target=_race, args=(storage, i, rounds, start, results))
                for i in range(self.racers)
            ]
        else:
            context = _context()
            results, start = context.Queue(), context.Barrier(self.racers)
            workers = [
                context.Process(target=_race, args=(storage, i, rounds, start, results))
                for i in range(self.racers)
            ]
        for worker in workers:
            worker.start()
        try:
            outcomes = [results.get(timeout=2 * _WAIT) for _ in range(len(rounds) * len(workers))]
        finally:
            for worker in workers:
                worker.join(_WAIT)
        assert [won for _, _, won in outcomes if not isinstance(won, bool)] == []
        winners = [
            [body for n, body, won in outcomes if n == r and won] for r in range(len(rounds))
        ]
        assert [len(w) for w in winners] == [1] * len(rounds)  # winners in each round
        for (path, _, _), (body,) in zip(rounds, winners, strict=True):
            assert backend.read(path) == body  # the stored body is the winner's

    # -- reads --------------------------------------------------------------------------
    def test_read_returns_what_was_written(self, backend: Backend, root: str) -> None:
        """`read` returns the whole file, empty ones included."""
        backend.write_atomic(f"{root}/f", b"hello")
        assert backend.read(f"{root}/f") == b"hello"
        backend.write_atomic(f"{root}/empty", b"")
        assert backend.read(f"{root}/empty") == b""

    @pytest.mark.parametrize("size", [0, 1, 7, 64, 65])
    def test_iter_chunks_are_bounded_and_whole(
        self, backend: Backend, root: str, size: int
    ) -> None:
        """`iter_chunks` yields non-empty chunks of at most `chunk_size` that make the file."""
        body = bytes(range(size))
        backend.write_atomic(f"{root}/f", body)
        chunks = list(backend.iter_chunks(f"{root}/f", 16))
        assert b"".join(chunks) == body
        assert all(0 < len(chunk) <= 16 for chunk in chunks)

    def test_read_versioned_limit_reads_one_byte_more(self, backend: Backend, root: str) -> None:
        """With `limit`, at most ``limit + 1`` bytes: enough to tell a file is too large."""
        backend.write_atomic(f"{root}/f", b"0123456789")
        assert backend.read_versioned(f"{root}/f", 4)[0] == b"01234"  # > limit: too large
        assert backend.read_versioned(f"{root}/f", 10)[0] == b"0123456789"
        assert backend.read_versioned(f"{root}/f", 100)[0] == b"0123456789"
        assert backend.read_versioned(f"{root}/f")[0] == b"0123456789"
        backend.write_atomic(f"{root}/empty", b"")
        assert backend.read_versioned(f"{root}/empty", 4)[0] == b""

    def test_read_versioned_gives_a_version_only_with_conditional_writes(
        self, backend: Backend, root: str
    ) -> None:
        """A version is what `write_if` compares; None where it cannot (`conditional_write`)."""
        backend.write_atomic(f"{root}/f", b"one")
        version = backend.read_versioned(f"{root}/f")[1]
        if backend.capabilities.conditional_write:
            assert version is not None
        else:
            assert version is None  # Storage then writes unconditionally

    def test_missing_file_raises_file_not_found(self, backend: Backend, root: str) -> None:
        """A missing file is `FileNotFoundError` to readers and movers, absent to listings."""
        missing = f"{root}/missing"
        with pytest.raises(FileNotFoundError):
            backend.read(missing)
        with pytest.raises(FileNotFoundError):
            backend.read_versioned(missing)
        with pytest.raises(FileNotFoundError):
            backend.read_versioned(missing, 10)
        with pytest.raises(FileNotFoundError):
            list(backend.iter_chunks(missing, 16))
        with pytest.raises(FileNotFoundError):
            _get(backend, missing, io.BytesIO(), _Recorder())
        with pytest.raises(FileNotFoundError):
            backend.rename(missing, f"{root}/dst")
        with contextlib.suppress(FileNotFoundError):  # or nothing: S3 deletes a missing key
            backend.remove_file(missing)  # with success, and a HEAD first would cost a request
        assert backend.kind(missing) is None
        assert backend.listdir(missing) == {}
        assert backend.find(missing) == []

    @pytest.mark.parametrize("trash", [True, False], ids=["trash", "in-place"])
    def test_remove_missing_tree_raises_file_not_found(
        self, backend: Backend, root: str, trash: bool
    ) -> None:
        """Removing a tree that is not there says so (Storage makes removal idempotent)."""
        backend.write_atomic(f"{root}/keep", b"k")  # the root exists; the tree does not
        with pytest.raises(FileNotFoundError):
            backend.remove_tree(f"{root}/missing", self._trash(root) if trash else None)

    def test_reading_a_directory_is_an_error(self, backend: Backend, root: str) -> None:
        """A directory read as a file is an error Storage maps to `NotFoundError`."""
        backend.write_atomic(f"{root}/d/f", b"x")
        with pytest.raises((FileNotFoundError, IsADirectoryError)):
            backend.read(f"{root}/d")

    # -- writes -------------------------------------------------------------------------
    def test_write_atomic_replaces(self, backend: Backend, root: str) -> None:
        """`write_atomic` replaces the file and leaves no temp file beside it."""
        backend.write_atomic(f"{root}/f", b"old")
        backend.write_atomic(f"{root}/f", b"new")
        assert backend.read(f"{root}/f") == b"new"
        assert backend.listdir(root) == {"f": "file"}  # no temp file left beside it

    def test_create_exclusive_creates_once(self, backend: Backend, root: str) -> None:
        """`create_exclusive` writes only where nothing is, and keeps the first body."""
        assert backend.create_exclusive(f"{root}/f", b"first") is True
        assert backend.create_exclusive(f"{root}/f", b"second") is False
        assert backend.read(f"{root}/f") == b"first"
        assert backend.listdir(root) == {"f": "file"}

    def test_write_if_missing_creates_only_if_absent(self, backend: Backend, root: str) -> None:
        """`write_if` with `MISSING` is an exclusive create."""
        assert backend.write_if(f"{root}/f", b"first", MISSING) is True
        assert backend.write_if(f"{root}/f", b"second", MISSING) is False
        assert backend.read(f"{root}/f") == b"first"

    def test_write_if_compares_the_version(self, backend: Backend, root: str) -> None:
        """`write_if` writes only over the version it was given: not a newer or removed file."""
        if not backend.capabilities.conditional_write:
            pytest.skip("this backend's write_if cannot compare (it writes unconditionally)")
        path = f"{root}/f"
        backend.write_atomic(path, b"v1")
        _, v1 = backend.read_versioned(path)
        assert backend.write_if(path, b"v2", v1) is True
        assert backend.read(path) == b"v2"
        assert backend.write_if(path, b"stale", v1) is False  # v1 is gone
        assert backend.read(path) == b"v2"
        _, v2 = backend.read_versioned(path)
        backend.remove_file(path)
        assert backend.write_if(path, b"stale", v2) is False  # removed since it was read
        assert backend.kind(path) is None
        assert backend.listdir(root) == {}

    def test_writing_below_a_file_is_refused(self, backend: Backend, root: str) -> None:
        """Where names are exclusive, a file cannot become a directory: `FileExistsError`."""
        if not backend.capabilities.exclusive_names:
            pytest.skip("a key and a key prefix may share a name on this backend")
        backend.write_atomic(f"{root}/f", b"a file")
        for write in (
            lambda: backend.write_atomic(f"{root}/f/g", b"x"),
            lambda: backend.create_exclusive(f"{root}/f/g", b"x"),
        ):
            with pytest.raises(FileExistsError):
                write()
        assert backend.read(f"{root}/f") == b"a file"

    def test_sync_after_deferred_writes(self, backend: Backend, root: str) -> None:
        """`sync` makes ``durable=False`` writes durable; a path removed since needs none."""
        backend.write_atomic(f"{root}/a", b"a", durable=False)
        backend.write_if(f"{root}/b", b"b", MISSING, durable=False)
        backend.sync([f"{root}/a", f"{root}/b", f"{root}/removed-since"])
        assert (backend.read(f"{root}/a"), backend.read(f"{root}/b")) == (b"a", b"b")

    # -- put and get --------------------------------------------------------------------
    @pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
    def test_put_and_get_report_progress(
        self, backend: Backend, root: str, tmp_path: Path, kind: str
    ) -> None:
        """`put` and `get` move the whole body from any source and report every byte."""
        body = bytes(range(256)) * 300
        local = tmp_path / "source"
        local.write_bytes(body)
        sources: dict[str, Callable[[], Any]] = {
            "bytes": lambda: body,
            "path": lambda: str(local),
            "stream": lambda: io.BytesIO(body),
        }
        backend.write_atomic(f"{root}/f", b"old")
        sent = _Recorder()
        sent_digest = _put(backend, sources[kind](), f"{root}/f", sent, "sha256")
        assert backend.read(f"{root}/f") == body
        assert sent.value == len(body)
        assert backend.listdir(root) == {"f": "file"}  # no temp object left
        received = _Recorder()
        with open(tmp_path / "out", "wb") as out:
            received_digest = _get(backend, f"{root}/f", out, received, "sha256")
        assert (tmp_path / "out").read_bytes() == body
        assert received.value == len(body)
        # every byte passed the transfer's hashing hook, both ways
        assert sent_digest == received_digest == hashlib.sha256(body).hexdigest()

    @pytest.mark.parametrize("fails", ["source", "callback"])
    def test_failed_put_keeps_the_old_file(self, backend: Backend, root: str, fails: str) -> None:
        """A put whose source or callback fails leaves the old file and no temp object."""
        backend.write_atomic(f"{root}/f", b"old")
        if fails == "source":
            # a failure to read the source is the source's: a StorageError naming it
            source = cast("IO[bytes]", _FailingSource(self.failed_put_size))
            with pytest.raises(StorageError, match="the source broke"):
                _put(backend, source, f"{root}/f", _Recorder())
        else:
            with pytest.raises(_Broken):
                _put(backend, b"n" * self.failed_put_size, f"{root}/f", _FailingCallback())
        assert backend.read(f"{root}/f") == b"old"
        assert backend.listdir(root) == {"f": "file"}  # no temp object left

    # -- rename and removal -------------------------------------------------------------
    def test_rename_moves_over_an_existing_file(self, backend: Backend, root: str) -> None:
        """`rename` replaces an existing destination, or creates it, and removes the source."""
        backend.write_atomic(f"{root}/src", b"new")
        backend.write_atomic(f"{root}/dst", b"old")
        backend.rename(f"{root}/src", f"{root}/dst")
        assert backend.read(f"{root}/dst") == b"new"
        assert backend.kind(f"{root}/src") is None
        assert backend.listdir(root) == {"dst": "file"}
        backend.rename(f"{root}/dst", f"{root}/fresh")  # onto nothing
        assert backend.listdir(root) == {"fresh": "file"}

    def test_remove_file_removes_only_it(self, backend: Backend, root: str) -> None:
        """`remove_file` is literal: names sharing its prefix stay."""
        for name in ("a", "ab", "a.txt"):
            backend.write_atomic(f"{root}/{name}", name.encode())
        backend.remove_file(f"{root}/a")
        assert backend.listdir(root) == {"ab": "file", "a.txt": "file"}

    @pytest.mark.parametrize("trash", [True, False], ids=["trash", "in-place"])
    def test_remove_tree_removes_exactly_the_subtree(
        self, backend: Backend, root: str, trash: bool
    ) -> None:
        """`remove_tree` removes ``a/`` and what is below it, never ``ab`` or ``a.txt``."""
        for rel in ("a/metadata.json", "a/x", "a/sub/y", "ab/z", "a.txt", "b/a/w"):
            backend.write_atomic(f"{root}/{rel}", rel.encode())
        backend.remove_tree(f"{root}/a", self._trash(root) if trash else None)
        assert backend.kind(f"{root}/a") is None
        assert backend.find(root) == sorted(f"{root}/{r}" for r in ("ab/z", "a.txt", "b/a/w"))
        assert backend.listdir(root) == {"ab": "directory", "a.txt": "file", "b": "directory"}

    @pytest.mark.parametrize("old", [*_KINDS, None], ids=["over-file", "over-dir", "over-nothing"])
    @pytest.mark.parametrize("new", _KINDS, ids=["file", "dir"])
    def test_replace_tree(self, backend: Backend, root: str, new: str, old: str | None) -> None:
        """`replace_tree` puts a staged file or directory in place of a file, directory or nothing."""
        dst, src = f"{root}/dst", f"{root}/.metatree.stage.{uuid.uuid4().hex}"
        if old == "file":
            backend.write_atomic(dst, b"old file")
        elif old == "directory":
            backend.write_atomic(f"{dst}/old", b"old")
            backend.write_atomic(f"{dst}/both", b"old")
            backend.write_atomic(f"{dst}/deep/old", b"old")
        if new == "file":
            backend.write_atomic(src, b"new file")
        else:
            backend.write_atomic(f"{src}/new", b"new")
            backend.write_atomic(f"{src}/both", b"new")
        backend.write_atomic(f"{root}/dstx", b"sibling")  # shares the prefix
        assert backend.kind(dst) == old
        backend.replace_tree(src, dst, self._trash(root), old)
        assert backend.kind(dst) == new
        if new == "file":
            assert backend.read(dst) == b"new file"
        else:
            assert backend.find(dst) == [f"{dst}/both", f"{dst}/new"]
            assert backend.read(f"{dst}/both") == b"new"
        assert backend.listdir(root) == {"dst": new, "dstx": "file"}  # no stage, no trash
        assert backend.read(f"{root}/dstx") == b"sibling"

    def test_tree_version_shows_a_replaced_directory(self, backend: Backend, root: str) -> None:
        """`tree_version` is stable while nothing happens and changes on replacement."""
        backend.write_atomic(f"{root}/d/f", b"old")
        before = backend.tree_version(f"{root}/d")
        assert backend.tree_version(f"{root}/d") == before  # nothing happened: the same
        src = f"{root}/.metatree.stage.{uuid.uuid4().hex}"
        backend.write_atomic(f"{src}/f", b"new")
        backend.replace_tree(src, f"{root}/d", self._trash(root), "directory")
        after = backend.tree_version(f"{root}/d")
        if before is None:
            assert after is None  # this backend cannot identify a directory
        else:
            assert after != before

    def test_confine_accepts_plain_paths(self, backend: Backend, root: str) -> None:
        """`confine` refuses only what leads outside the root; plain paths pass."""
        backend.write_atomic(f"{root}/d/f", b"x")
        for rel in ("d", "d/f", "d/new", "new/deeper/still"):
            backend.confine(root, f"{root}/{rel}")  # refuses only planted links (local)

    def test_confine_many_and_read_many_answer_each_path(self, backend: Backend, root: str) -> None:
        """A batch answers per path, in order: a missing file does not hide the others."""
        backend.write_atomic(f"{root}/d/a", b"1")
        backend.write_atomic(f"{root}/d/b", b"22")
        paths = [f"{root}/d/a", f"{root}/d/missing", f"{root}/d/b"]
        assert backend.confine_many(root, paths) == [None, None, None]
        for width in (1, 4):
            got = backend.read_many(paths, None, width)
            assert got[0] == b"1"
            assert isinstance(got[1], FileNotFoundError)
            assert got[2] == b"22"
        assert backend.read_many(paths[:1], 0, 1) == [b"1"]  # limit 0: one byte more at most
        assert backend.read_many([], None, 4) == []

    def test_put_many_stores_each_file_and_stops_at_the_first_failure(
        self, backend: Backend, root: str
    ) -> None:
        """`put_many` stores each file as `put` would; one that fails stops the batch.

        The failed file's entry is its exception; every other entry is None (stored, with
        its bytes) or `Stopped` (never stored), at one at a time and several in flight.
        """
        from metatree.backends.base import Stopped

        def opener(data: bytes | None) -> Callable[[], contextlib.AbstractContextManager[Any]]:
            @contextlib.contextmanager
            def open_source() -> Any:
                if data is None:
                    raise OSError("the source could not be opened")
                with Transfer().source(data) as upload:
                    yield upload

            return open_source

        for width in (1, 4):
            paths = [f"{root}/w{width}/f{i}" for i in range(6)]
            bodies = [f"body {i}".encode() * (i + 1) for i in range(6)]
            got = backend.put_many(list(zip(map(opener, bodies), paths, strict=True)), width)
            assert got == [None] * 6
            assert [backend.read(path) for path in paths] == bodies
            failing = [opener(None if i == 1 else b"new") for i in range(6)]
            fresh = [f"{root}/w{width}/g{i}" for i in range(6)]
            got = backend.put_many(list(zip(failing, fresh, strict=True)), width)
            assert isinstance(got[1], OSError)
            assert "could not be opened" in str(got[1])
            for path, entry in zip(fresh, got, strict=True):
                if entry is None:
                    assert backend.read(path) == b"new"
                elif isinstance(entry, Stopped):
                    assert backend.kind(path) is None  # never stored, not even partly
            if width == 1:  # one at a time: what comes after the failure never starts
                assert all(isinstance(entry, Stopped) for entry in got[2:])
        assert backend.put_many([], 4) == []

    def test_put_many_interrupted_by_a_source_raises_in_the_caller(
        self, backend: Backend, root: str
    ) -> None:
        """A source raising KeyboardInterrupt (Ctrl-C in its reader) stops the batch.

        The interrupt reaches the caller, and the backend still works: read on an async
        backend's event-loop thread, it once ended that thread, and every later request of
        the process (every filesystem on fsspec's loop) failed.
        """

        class Interrupting(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                raise KeyboardInterrupt

        def opener(data: bytes | None) -> Callable[[], contextlib.AbstractContextManager[Any]]:
            @contextlib.contextmanager
            def open_source() -> Any:
                source: Any = Interrupting() if data is None else data
                with Transfer().source(source) as upload:
                    yield upload

            return open_source

        paths = [f"{root}/k{i}" for i in range(3)]
        items = [opener(None if i == 1 else b"data") for i in range(3)]
        for width in (1, 3):
            with pytest.raises(KeyboardInterrupt):
                backend.put_many(list(zip(items, paths, strict=True)), width)
        assert backend.kind(paths[1]) is None  # nothing of the interrupted source
        backend.write_atomic(f"{root}/after", b"still works")
        assert backend.read(f"{root}/after") == b"still works"

    # -- listing ------------------------------------------------------------------------
    def test_listing_kinds(self, backend: Backend, root: str) -> None:
        """`kind`, `listdir` and `find` agree on files and directories."""
        backend.write_atomic(f"{root}/d/f", b"x")
        backend.write_atomic(f"{root}/d/sub/g", b"y")
        assert backend.kind(f"{root}/d") == "directory"
        assert backend.kind(f"{root}/d/f") == "file"
        assert backend.listdir(f"{root}/d") == {"f": "file", "sub": "directory"}
        assert backend.listdir(f"{root}/d/f") == {}  # a file is not a directory
        assert backend.find(f"{root}/d") == [f"{root}/d/f", f"{root}/d/sub/g"]
        assert backend.find(f"{root}/d/f") == []  # only what is strictly below

    def test_listing_is_never_stale(self, backend: Backend, other: Backend, root: str) -> None:
        """Listings see writes and removals at once, through this and another instance."""
        views = (backend, other)
        path = f"{root}/d/new"

        def seen(view: Backend) -> tuple[object, ...]:
            return view.kind(path), view.listdir(f"{root}/d"), view.find(f"{root}/d")

        backend.write_atomic(f"{root}/d/old", b"x")
        for view in views:  # fill whatever listing caches the instances keep
            assert seen(view) == (None, {"old": "file"}, [f"{root}/d/old"])
        backend.write_atomic(path, b"y")
        for view in views:
            assert seen(view) == (
                "file",
                {"new": "file", "old": "file"},
                [path, f"{root}/d/old"],
            )
        other.remove_file(path)
        for view in views:
            assert seen(view) == (None, {"old": "file"}, [f"{root}/d/old"])
        other.remove_tree(f"{root}/d", self._trash(root))
        for view in views:
            assert view.kind(f"{root}/d") is None
            assert view.listdir(root) == {}

    # -- contention ---------------------------------------------------------------------
    def test_exclusive_create_over_a_directory_loses(self, backend: Backend, root: str) -> None:
        """A name held by a directory is taken: nothing is created, nothing moves into it.

        (A plain WebHDFS RENAME onto a directory moves the file into it and answers true.)
        """
        if not backend.capabilities.exclusive_names:
            pytest.skip("a key and a key prefix may share a name on this backend")
        backend.write_atomic(f"{root}/d/inner", b"x")
        attempts: list[Callable[[], bool]] = [
            lambda: backend.create_exclusive(f"{root}/d", b"new"),
            lambda: backend.write_if(f"{root}/d", b"new", MISSING),
        ]
        for attempt in attempts:
            try:
                won = attempt()
            except (FileExistsError, IsADirectoryError):
                won = False
            assert not won
            assert backend.listdir(f"{root}/d") == {"inner": "file"}
            assert backend.kind(f"{root}/d") == "directory"

    def test_create_exclusive_has_one_winner(self, storage: Storage, backend: Backend) -> None:
        """Of racers creating one path from several processes, exactly one wins."""
        if not backend.capabilities.atomic_exclusive_create:
            pytest.skip("this backend's exclusive create is not atomic")
        self._race(storage, backend, "create")

    def test_write_if_missing_has_one_winner(self, storage: Storage, backend: Backend) -> None:
        """The same race through `write_if` with `MISSING`."""
        if not backend.capabilities.atomic_exclusive_create:
            pytest.skip("this backend's exclusive create is not atomic")
        self._race(storage, backend, "missing")

    def test_conditional_replace_has_one_winner(self, storage: Storage, backend: Backend) -> None:
        """Of racers replacing one version, exactly one wins (the lease's fence)."""
        if not backend.capabilities.atomic_conditional_write:
            pytest.skip("this backend's write_if does not compare and replace in one step")
        self._race(storage, backend, "version", seed=b"seed")

    def test_writes_are_seen_whole_or_not_at_all(
        self, storage: Storage, backend: Backend, root: str
    ) -> None:
        """A reader polling during replacements never sees a partial or mixed body.

        `iter_chunks` reads in several requests where the backend ranges: it may raise
        `Changed` instead, never yield the start of one body and the end of another.
        """
        path, size = f"{root}/f", self.visible_size
        backend.write_atomic(path, _uniform(0, size))
        done: _Event
        if storage.capabilities.data_in_memory:
            done = threading.Event()
            writer: Any = threading.Thread(
                target=_write_many, args=(storage, path, size, self.visible_writes, done)
            )
        else:
            context = _context()
            done = context.Event()
            writer = context.Process(
                target=_write_many, args=(storage, path, size, self.visible_writes, done)
            )
        writer.start()
        torn: list[int] = []
        try:
            while not done.is_set():
                seen = [backend.read(path), backend.read_versioned(path)[0]]
                with contextlib.suppress(Changed):  # a replacement seen mid-read is refused
                    seen.append(b"".join(backend.iter_chunks(path, size // 4)))
                torn.extend(len(d) for d in seen if len(d) != size or d != d[:1] * size)
        finally:
            writer.join(_WAIT)
        assert torn == []
        assert backend.read(path) == _uniform(self.visible_writes - 1, size)
        assert backend.listdir(root) == {"f": "file"}

    # -- errors -------------------------------------------------------------------------
    def test_storage_translates_the_errors(self, storage: Storage, backend: Backend) -> None:
        """Through `Storage`, the primitives' errors become typed metatree errors."""
        with pytest.raises(NotFoundError):
            storage.read_bytes("missing")
        with pytest.raises(NotFoundError):
            storage.read_versioned("missing", 10)
        with pytest.raises(NotFoundError):
            storage.iter_bytes("missing")
        with pytest.raises(NotFoundError):
            storage.rename("missing", "dst")
        storage.write_atomic("d/f", b"x")
        with pytest.raises(NotFoundError):
            storage.read_bytes("d")  # a directory is not a file
        with pytest.raises(ConflictError):
            storage.write_atomic("d/f", b"y", expect=MISSING)
        if backend.capabilities.conditional_write:
            _, version = storage.read_versioned("d/f")
            storage.write_atomic("d/f", b"z")
            with pytest.raises(ConflictError):
                storage.write_atomic("d/f", b"stale", expect=version)
        if backend.capabilities.exclusive_names:
            with pytest.raises(AlreadyExistsError):
                storage.write_atomic("d/f/g", b"below a file")
        assert storage.read_bytes("d/f") == (
            b"z" if backend.capabilities.conditional_write else b"x"
        )

    def test_capabilities_are_declared(self, backend: Backend) -> None:
        """A backend declares its promises on its class, as `Capabilities`."""
        assert isinstance(backend.capabilities, Capabilities)
        assert isinstance(type(backend).capabilities, Capabilities)  # a class-level promise
