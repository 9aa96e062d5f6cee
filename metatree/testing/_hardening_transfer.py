"""Interrupted and concurrent transfers: aborted uploads, torn reads, fenced writes, timeouts (issues 9, 19).

Part of the conformance suite (mixed into `BackendConformance`): every test runs on every
backend, and skips itself only when the backend lacks a capability it needs.
"""

from __future__ import annotations

import io
import os
import threading
from typing import IO, TYPE_CHECKING, Any, cast

import pytest
from fsspec.callbacks import Callback

from metatree.backends import MISSING
from metatree.errors import AlreadyExistsError, ConflictError, NotFoundError, StorageError
from metatree.testing._helpers import snapshot, unchanged

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from metatree._storage import Storage
    from metatree._tree import Metatree

__all__ = ["TransferHardeningTests"]

_MIB = 2**20
BIG = 9 * _MIB
"""Over one 8 MiB chunk: progress is reported mid-transfer, and S3 uploads in parts."""


class _Raising(Callback):  # type: ignore[misc]
    """A progress callback that raises `error` on its first update (a progress bar's Ctrl-C)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def call(self, *args: Any, **kwargs: Any) -> None:
        if self.value:
            raise self.error


class _Once(Callback):  # type: ignore[misc]
    """A progress callback that runs `action` at the first update (mid-transfer)."""

    def __init__(self, action: Callable[[], object]) -> None:
        super().__init__()
        self.action: Callable[[], object] | None = action

    def call(self, *args: Any, **kwargs: Any) -> None:
        if self.value and self.action is not None:
            action, self.action = self.action, None
            action()


class _FailingStream(io.RawIOBase):
    """A source that gives `good` bytes, then fails as a broken disk or network would."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if self.left <= 0:
            raise OSError(5, "Input/output error (injected)")
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"n" * n


def _source(good: int) -> IO[bytes]:
    return cast("IO[bytes]", _FailingStream(good))


def _folder(tmp_path: Path) -> Path:
    """Return a fresh local folder for downloads (the local database lives in tmp_path)."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


def _temps(storage: Storage) -> list[str]:
    return [rel for rel in storage.walk_files("") if ".metatree.tmp" in rel]


class TransferHardeningTests:
    """Interrupted and concurrent transfers: aborted uploads, torn reads, fenced writes, timeouts (issues 9, 19)."""

    # -- issue 19 item 1: a failed put leaves the old file or none ----------------------
    @pytest.mark.parametrize("force", [True, False], ids=["replace", "new"])
    @pytest.mark.parametrize("failure", ["interrupt", "source"])
    def test_failed_put_leaves_old_file_or_none(
        self, tree: Metatree, storage: Storage, force: bool, failure: str
    ) -> None:
        tree.put("m/v1", b"keep", name="other")
        if force:
            tree.put("m/v1", b"old" * 1000, name="f")
        before = snapshot(storage)
        if failure == "interrupt":
            source: Any = io.BytesIO(b"n" * BIG)
            with pytest.raises(KeyboardInterrupt):
                tree.put(
                    "m/v1", source, name="f", force=force, callback=_Raising(KeyboardInterrupt())
                )
        else:
            with pytest.raises(StorageError) as caught:
                tree.put("m/v1", _source(BIG - _MIB), name="f", force=force)
            assert caught.value.path == "<file object>"
        assert snapshot(storage) == before
        assert sorted(tree.find("m/v1").list()) == (["f", "other"] if force else ["other"])
        if not force:
            with pytest.raises(NotFoundError):
                b"".join(tree.get("m/v1/f"))
        assert _temps(storage) == []

    def test_failed_put_from_a_local_file_keeps_old(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        source = tmp_path / "big.bin"
        source.write_bytes(b"n" * BIG)
        tree.put("m/v1", b"old", name="big.bin")
        with unchanged(storage), pytest.raises(KeyboardInterrupt):
            tree.put("m/v1", source, force=True, callback=_Raising(KeyboardInterrupt()))
        assert b"".join(tree.get("m/v1/big.bin")) == b"old"

    # -- issue 9, clear errors: a failing source is named as the source -------------------
    def test_failing_source_is_named(self, tree: Metatree, storage: Storage) -> None:
        tree.put("m/v1", b"x", name="other")
        with unchanged(storage), pytest.raises(StorageError) as caught:
            tree.put("m/v1", _source(0), name="f")
        assert caught.value.path == "<file object>"
        assert "reading the source failed" in caught.value.reason
        assert "Input/output error" in caught.value.reason

    def test_unreadable_local_source_is_named(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        folder = tmp_path / "a-directory"
        folder.mkdir()
        tree.put("m/v1", b"x", name="other")
        with unchanged(storage), pytest.raises(StorageError) as caught:
            storage.put(str(folder), "m/v1/f")  # a directory cannot be read as a file
        assert caught.value.path == str(folder)
        assert "opening the source failed" in caught.value.reason

    # -- issue 9 item 6: a read never mixes two versions ----------------------------------
    @pytest.mark.parametrize("new_size", [64, 200], ids=["same-size", "longer"])
    def test_stream_never_mixes_versions(self, storage: Storage, new_size: int) -> None:
        old = bytes(range(64))
        storage.write_atomic("f", old)
        chunks = storage.iter_bytes("f", chunk_size=4)
        first = next(chunks)
        storage.put(b"\xff" * new_size, "f")  # a forced put by another writer
        try:
            rest = b"".join(chunks)
        except ConflictError as exc:
            conflict: ConflictError | None = exc
        else:
            conflict = None
            assert first + rest == old
        assert conflict is None or conflict.path == storage.url_of("f")
        assert storage.read_bytes("f") == b"\xff" * new_size

    def test_interleaved_streams_of_one_file(self, storage: Storage) -> None:
        """Two readers of one file do not share a position (fsspec's memory files do)."""
        data = bytes(range(64))
        storage.write_atomic("f", data)
        a, b = storage.iter_bytes("f", chunk_size=4), storage.iter_bytes("f", chunk_size=4)
        got_a, got_b = [next(a)], [next(b)]
        for chunk_a, chunk_b in zip(a, b, strict=True):
            got_a.append(chunk_a)
            got_b.append(chunk_b)
        assert b"".join(got_a) == data
        assert b"".join(got_b) == data

    def test_stream_of_a_removed_file_is_whole_or_conflict(self, storage: Storage) -> None:
        old = bytes(range(64))
        storage.write_atomic("f", old)
        chunks = storage.iter_bytes("f", chunk_size=4)
        first = next(chunks)
        storage.remove_file("f")
        try:
            rest = b"".join(chunks)
        except ConflictError:
            pass
        else:
            assert first + rest == old

    def test_download_never_mixes_versions(self, storage: Storage, tmp_path: Path) -> None:
        folder = _folder(tmp_path)
        old, new = b"o" * BIG, b"n" * BIG
        storage.write_atomic("f", old)
        out = folder / "copy"
        replace = _Once(lambda: storage.put(new, "f"))
        try:
            storage.get("f", str(out), replace)
        except ConflictError:
            assert not out.exists()
        else:
            assert out.read_bytes() == old
        assert replace.action is None, "the replacement did not happen mid-download"
        assert os.listdir(folder) == (["copy"] if out.exists() else [])

    # -- issue 9 item 10: the download's temp file is fresh and exclusive -----------------
    def test_get_ignores_a_planted_symlink_of_the_old_side_name(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        folder = _folder(tmp_path)
        tree.put("m/v1", b"payload", name="f")
        victim = folder / "victim"
        victim.write_bytes(b"precious")
        out = folder / "dl"
        side = folder / "dl.metatree-partial"
        side.symlink_to(victim)
        assert b"".join(tree.get("m/v1/f", str(out))) == b"payload"
        assert victim.read_bytes() == b"precious"
        assert side.is_symlink()
        assert os.readlink(side) == str(victim)
        assert sorted(os.listdir(folder)) == ["dl", "dl.metatree-partial", "victim"]

    def test_failed_get_keeps_a_user_file_of_the_old_side_name(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        folder = _folder(tmp_path)
        tree.put("m/v1", b"payload", name="f")
        side = folder / "dl.metatree-partial"
        side.write_bytes(b"mine")
        with pytest.raises(NotFoundError):
            b"".join(tree.get("m/v1/missing", str(folder / "dl")))
        assert side.read_bytes() == b"mine"
        assert os.listdir(folder) == ["dl.metatree-partial"]

    def test_get_never_replaces_a_file_that_appeared(self, tree: Metatree, tmp_path: Path) -> None:
        """A file created at the outfile while the download ran is kept (no clobbering)."""
        folder = _folder(tmp_path)
        out = folder / "dl"
        tree.put("m/v1", b"x" * BIG, name="f")
        with pytest.raises(AlreadyExistsError):
            tree.get("m/v1/f", str(out), callback=_Once(lambda: out.write_bytes(b"theirs")))
        assert out.read_bytes() == b"theirs"
        assert os.listdir(folder) == ["dl"]

    def test_interrupted_get_leaves_nothing(self, tree: Metatree, tmp_path: Path) -> None:
        folder = _folder(tmp_path)
        tree.put("m/v1", b"x" * BIG, name="f")
        with pytest.raises(KeyboardInterrupt):
            tree.get("m/v1/f", str(folder / "dl"), callback=_Raising(KeyboardInterrupt()))
        assert os.listdir(folder) == []

    def test_download_reports_its_size(self, storage: Storage, tmp_path: Path) -> None:
        """Progress bars get the total: the pinned reads still report it."""
        storage.write_atomic("f", b"0123456789")
        progress = Callback()
        storage.get("f", str(_folder(tmp_path) / "dl"), progress)
        assert (progress.size, progress.value) == (10, 10)

    def test_full_local_disk_names_the_download(self, tree: Metatree, tmp_path: Path) -> None:
        """A download that cannot be written (a file size limit, as a full disk) names it."""
        import resource
        import signal

        folder = _folder(tmp_path)
        tree.put("m/v1", b"x" * BIG, name="f")
        out = str(folder / "dl")
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (_MIB, limits[1]))
        try:
            with pytest.raises(StorageError) as caught:
                tree.get("m/v1/f", out)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)
        assert caught.value.path == out
        assert "writing the download failed" in caught.value.reason
        assert os.listdir(folder) == []

    # -- issue 9 item 5: fencing primitives -----------------------------------------------
    def test_conditional_write_against_a_changed_file(self, storage: Storage) -> None:
        if not storage.capabilities.conditional_write:
            pytest.skip("this backend has no conditional write (the lock cannot expire)")
        storage.write_atomic("f", b"v1")
        data, version = storage.read_versioned("f")
        assert data == b"v1"
        assert version is not None
        storage.write_atomic("f", b"v2 by another writer")
        with unchanged(storage), pytest.raises(ConflictError) as caught:
            storage.write_atomic("f", b"stale", expect=version)
        assert caught.value.path == storage.url_of("f")
        data, version = storage.read_versioned("f")
        storage.write_atomic("f", b"v3", expect=version)
        assert storage.read_bytes("f") == b"v3"

    def test_conditional_write_against_a_removed_file(self, storage: Storage) -> None:
        if not storage.capabilities.conditional_write:
            pytest.skip("this backend has no conditional write (the lock cannot expire)")
        storage.write_atomic("f", b"v1")
        _, version = storage.read_versioned("f")
        storage.remove_file("f")
        with unchanged(storage), pytest.raises(ConflictError):
            storage.write_atomic("f", b"stale", expect=version)

    def test_conditional_create(self, storage: Storage) -> None:
        storage.write_atomic("d/f", b"first", expect=MISSING)
        with unchanged(storage), pytest.raises(ConflictError):
            storage.write_atomic("d/f", b"second", expect=MISSING)
        assert storage.read_bytes("d/f") == b"first"

    def test_read_versioned_returns_the_bytes(self, storage: Storage) -> None:
        storage.write_atomic("f", b"")
        assert storage.read_versioned("f")[0] == b""
        storage.write_atomic("f", b"abc")
        assert storage.read_versioned("f")[0] == b"abc"
        with pytest.raises(NotFoundError):
            storage.read_versioned("missing")

    def test_rename_replaces_the_destination(self, storage: Storage) -> None:
        storage.write_atomic("d/a", b"new")
        storage.write_atomic("d/b", b"old")
        storage.rename("d/a", "d/b")
        assert snapshot(storage) == {"d/b": b"new"}
        storage.rename("d/b", "d/c")
        assert snapshot(storage) == {"d/c": b"new"}
        with pytest.raises(NotFoundError):
            storage.rename("d/missing", "d/c")

    # -- issue 19 item 2: an interrupted request does not outlive the call ---------------
    @pytest.mark.parametrize("operation", ["write_atomic", "put", "create"])
    def test_interrupted_write_does_not_land_later(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch, operation: str
    ) -> None:
        """Ctrl-C while a write waits on fsspec's loop: the write is cancelled and awaited.

        The loop is held by a blocking callback, so the request cannot have started when the
        interrupt arrives; the runner must cancel it and wait for it (the second wait, which
        releases the loop). An exact check: the object is unchanged once the call raised,
        and the runner waited for the cancelled request to end.
        """
        if not storage.capabilities.background_io:
            pytest.skip("requests run in the calling thread: an interrupt stops them there")
        from metatree.backends import aio

        storage.write_atomic("f", b"old")
        gate = threading.Event()
        storage.fs.loop.call_soon_threadsafe(gate.wait, 60)  # hold fsspec's IO loop
        waits: list[bool] = []
        real_wait = aio._wait

        def interrupting_wait(done: threading.Event, timeout: float | None) -> bool:
            if not waits:
                waits.append(False)
                raise KeyboardInterrupt
            gate.set()  # the runner waits for the cancelled task: let the loop run it
            waits.append(real_wait(done, timeout))
            return waits[-1]

        writes: dict[str, Callable[[], object]] = {
            "write_atomic": lambda: storage.write_atomic("f", b"late"),
            "put": lambda: storage.put(io.BytesIO(b"late"), "f"),
            "create": lambda: storage.write_atomic("g", b"late", expect=MISSING),
        }
        monkeypatch.setattr(aio, "_wait", interrupting_wait)
        try:
            with pytest.raises(KeyboardInterrupt):
                writes[operation]()
        finally:
            gate.set()
        monkeypatch.undo()
        assert waits == [False, True], "the runner did not wait for the cancelled request"
        assert snapshot(storage) == {"f": b"old"}
        storage.write_atomic("f", b"new")  # the loop and the client still work
        assert storage.read_bytes("f") == b"new"

    def test_callback_error_is_the_callers_and_writes_nothing(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        """A progress bar that raises is the caller's bug: its exception, not a StorageError."""
        tree.put("m/v1", b"x", name="f")
        before = snapshot(storage)
        with pytest.raises(ValueError, match="progress bar broke"):
            tree.put(
                "n/v1", b"y" * 1000, name="g", callback=_Raising(ValueError("progress bar broke"))
            )
        with pytest.raises(ValueError, match="progress bar broke"):
            tree.put("m/v1", b"y", name="g", callback=_Raising(ValueError("progress bar broke")))
        with pytest.raises(ValueError, match="progress bar broke"):
            tree.get(
                "m/v1/f",
                outfile=str(tmp_path / "dl"),
                callback=_Raising(ValueError("progress bar broke")),
            )
        assert snapshot(storage) == before
        assert not (tmp_path / "dl").exists()
