"""Hostile indexes, orphans, transactions, names on case-insensitive filesystems (issues 9, 19).

Part of the conformance suite (mixed into `BackendConformance`): every test runs on every
backend, and skips itself only when the backend lacks a capability it needs. Hostile stored
data is planted through the storage, as another client with write access would.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import threading
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from metatree import Metatree
from metatree._names import METADATA_FILE
from metatree.errors import (
    AlreadyExistsError,
    CorruptMetadataError,
    DatabaseError,
    LockError,
    LockLostError,
    NotFoundError,
    PathError,
    StorageError,
    TransactionAbortedError,
    UnresolvedPathError,
)
from metatree.testing._helpers import snapshot

if TYPE_CHECKING:
    from pathlib import Path

    from metatree._storage import Storage

__all__ = ["IndexHardeningTests"]

KEYS = ("model", "version", "stage")
HOSTILE_ENTRIES = ["../outside", "..", ".", "", "a/b", "metadata.json", ".lock", "x\x00y"]


class Broken(io.RawIOBase):
    """A source whose first read fails (a vanished network mount, a dying pipe)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise OSError("the source broke")


class IndexHardeningTests:
    """Stored data is input: indexes, orphans and configs written by anyone."""

    # -- the children index -------------------------------------------------------------
    @pytest.mark.parametrize("entry", HOSTILE_ENTRIES)
    def test_hostile_index_entry_is_corrupt(self, storage: Storage, entry: str) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        storage.write_atomic(METADATA_FILE, orjson.dumps({"children": ["m", entry]}))
        before = snapshot(storage)
        with pytest.raises(CorruptMetadataError, match="index entry"):
            tree.find("m")
        with pytest.raises(CorruptMetadataError):
            list(tree.walk())
        with pytest.raises(CorruptMetadataError):
            tree.put("n/v1", b"x", name="f")
        with pytest.raises(CorruptMetadataError):
            tree.find("").child("m")
        assert snapshot(storage) == before

    def test_duplicate_index_entries_are_read_once(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        storage.write_atomic(METADATA_FILE, orjson.dumps({"children": ["m", "m"]}))
        assert tree.find("").children == ["m"]
        assert [n.path for n, _ in tree.walk()] == [(), ("m",), ("m", "v1")]

    def test_walk_stops_at_the_leaf_level(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1/s", b"x", name="f")
        # a leaf whose metadata claims children (planted): never followed
        storage.write_atomic("m/v1/s/metadata.json", orjson.dumps({"children": ["deeper"]}))
        paths = [n.path for n, _ in tree.walk()]
        assert paths == [(), ("m",), ("m", "v1"), ("m", "v1", "s")]
        assert tree.find("m/v1/s").children == []
        with pytest.raises(NotFoundError):
            tree.find("m/v1/s").child("deeper")

    def test_deeply_nested_stored_metadata_is_corrupt(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        nested = b'{"children": ["v1"], "x": ' + b"[" * 500 + b"]" * 500 + b"}"
        storage.write_atomic("m/metadata.json", nested)
        with pytest.raises(CorruptMetadataError, match="nested"):
            tree.find("m/v1")

    def test_oversized_index_is_corrupt_and_not_read_whole(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        tree._db.max_metadata_bytes = 1000
        storage.write_atomic(
            "m/metadata.json", b'{"children": ["v1"], "pad": "' + b"x" * 5000 + b'"}'
        )
        reads: list[int] = []
        original = storage.read_versioned

        def counting(rel: str, limit: int | None = None) -> tuple[bytes, object]:
            data, version = original(rel, limit)
            reads.append(len(data))
            return data, version

        storage.read_versioned = counting  # type: ignore[method-assign]
        try:
            with pytest.raises(CorruptMetadataError, match="larger than 1000 bytes"):
                tree.find("m/v1")
        finally:
            del storage.read_versioned
        assert max(reads) <= 1001
        tree._db.max_metadata_bytes = 10_000
        assert tree.find("m/v1").path == ("m", "v1")
        storage.write_atomic("m/v1/empty", b"")  # an empty file read under a limit (S3: 416)
        assert storage.read_versioned("m/v1/empty", 1000)[0] == b""

    def test_big_integers_survive_an_update(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        storage.write_atomic(
            "m/metadata.json", b'{"children":["v1"],"big":123456789012345678901234567890}'
        )
        tree.find("m").update(other=1)
        assert tree.find("m").metadata["big"] == 123456789012345678901234567890
        assert b"123456789012345678901234567890" in storage.read_bytes("m/metadata.json")

    def test_missing_root_index_is_corrupt(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        storage.remove_file(METADATA_FILE)
        with pytest.raises(CorruptMetadataError, match="root index is missing"):
            tree.find("m")
        with pytest.raises(CorruptMetadataError):
            tree.put("m/v1", b"x", name="f")
        assert storage.kind("m") is None

    def test_index_that_is_a_directory_is_corrupt(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        storage.remove_file("m/metadata.json")
        storage.write_atomic("m/metadata.json/planted", b"x")
        with pytest.raises(CorruptMetadataError, match="directory"):
            tree.find("m/v1")

    def test_root_that_is_a_file_is_refused(self, storage: Storage) -> None:
        storage.fs.pipe_file(storage.root, b"not a directory")
        try:
            with pytest.raises(DatabaseError, match="root is a file"):
                Metatree(storage, KEYS)
        finally:
            storage.fs.rm_file(storage.root)

    def test_config_that_is_a_directory_is_refused(self, storage: Storage) -> None:
        storage.write_atomic(".metatree/planted", b"x")
        with pytest.raises(DatabaseError, match="directory"):
            Metatree(storage, KEYS)

    def test_missing_placeholder_names_the_node(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(UnresolvedPathError, match="node 'm/v1'"):
            tree.get("m/v1/<model_file>")
        with pytest.raises(UnresolvedPathError, match="node 'm'"):
            tree.find("m/<active>")

    # -- the config ---------------------------------------------------------------------
    @pytest.mark.parametrize(
        "config",
        [
            b'{"keys": ["a", "a"]}',
            b'{"keys": ["a", ""]}',
            b'{"keys": ["a", 1]}',
            b'{"keys": ["a"], "locking_enabled": "no"}',
        ],
    )
    def test_bad_stored_config_is_refused(self, storage: Storage, config: bytes) -> None:
        Metatree(storage, KEYS)
        storage.write_atomic(".metatree", config)
        with pytest.raises(DatabaseError):
            Metatree(storage)

    # -- names --------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "name",
        [
            "a:b",
            " lead",
            "trail ",
            "a\u202eb",
            "\ufeffbom",
            "c1\x85",
            "METADATA.JSON",
            ".Lock",
            "m0\u200b",  # zero-width space: every Cf character is refused, not a list of some
            "soft\u00adhyphen",
            "word\u2060joiner",
            "v1\u034f",  # combining grapheme joiner: default-ignorable, not Cf
            "v1\ufe0f",  # a variation selector
            "\u3164",  # a Hangul filler: a name that shows as nothing
            "\u2800",  # the blank braille pattern
        ],
    )
    def test_unportable_new_names_are_refused(self, storage: Storage, name: str) -> None:
        tree = Metatree(storage, KEYS)
        before = snapshot(storage)
        with pytest.raises(PathError):
            tree.put(f"{name}/v1", b"x", name="f")
        with pytest.raises(PathError):
            tree.put("m/v1", b"x", name=name)
        assert snapshot(storage) == before

    def test_stored_unportable_names_stay_readable(self, storage: Storage) -> None:
        """Trees of metatreedb 0.2.3, which accepted `` v2`` (or ``a:b`` off HDFS), still read."""
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        storage.write_atomic("m/metadata.json", orjson.dumps({"children": ["v1", " v2"]}))
        storage.write_atomic("m/ v2/metadata.json", b"{}")
        assert tree.find("m").children == ["v1", " v2"]
        assert [n.path for n, _ in tree.walk("m")][-1] == ("m", " v2")

    def test_lookalike_node_names_are_refused(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        nfc, nfd = "caf\u00e9", "cafe\u0301"
        tree.put(f"{nfc}/v1", b"x", name="f")
        before = snapshot(storage)
        with pytest.raises(AlreadyExistsError, match="Unicode form"):
            tree.put(f"{nfd}/v1", b"x", name="f")
        assert snapshot(storage) == before

    def test_node_differing_in_case_never_replaces_the_sibling(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        tree.put("m/v2", b"y", name="f")
        try:
            tree.put("M/v1", b"z", name="f")
        except AlreadyExistsError:
            assert tree._db.case_insensitive
        else:
            assert not tree._db.case_insensitive
        assert tree.find("m").children == ["v1", "v2"]
        assert b"".join(tree.get("m/v2/f")) == b"y"

    # -- orphans ------------------------------------------------------------------------
    def _orphan(self, storage: Storage, tree: Metatree) -> None:
        """Leave m/v1 as a crash between remove's index write and its data delete would."""
        tree.put("m/v1", b"old", name="f")
        tree.put("m/v2", b"keep", name="f")
        storage.write_atomic("m/metadata.json", orjson.dumps({"children": ["v2"]}))

    def test_recreated_node_does_not_inherit_an_orphan(
        self, storage: Storage, tmp_path: Path
    ) -> None:
        tree = Metatree(storage, KEYS)
        self._orphan(storage, tree)
        assert not tree.exists("m/v1")
        assert tree.find("m").list() == ["v2"]
        with pytest.raises(NotFoundError):
            tree.remove("m/v1", recursive=True)
        with pytest.raises(NotFoundError):
            tree.get("m/v1", outfile=str(tmp_path / "dl"), recursive=True)
        assert not (tmp_path / "dl").exists()
        tree.put("m/v1", b"new", name="g")  # no "already exists" from the orphan's file
        assert tree.find("m/v1").list() == ["g"]
        with pytest.raises(NotFoundError):
            tree.get("m/v1/f")
        assert tree.find("m").children == ["v2", "v1"]

    def test_a_stored_directory_is_not_taken_for_an_orphan(
        self, storage: Storage, tmp_path: object
    ) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m", b"x", name="f")
        storage.write_atomic("m/v1/data.bin", b"user data")  # like put(recursive=True) would
        with pytest.raises(AlreadyExistsError):
            tree.put("m/v1", b"x", name="g")
        assert storage.read_bytes("m/v1/data.bin") == b"user data"
        assert tree.exists("m/v1")
        assert "v1" in tree.find("m").list()

    # -- transactions -------------------------------------------------------------------
    def test_rolled_back_forced_put_keeps_the_old_file(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"old", name="f")

        def aborted() -> None:
            with tree.transaction():
                tree.put("m/v1", b"new", name="f", force=True)
                tree.put("m/v1", b"added", name="g")
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            aborted()
        assert b"".join(tree.get("m/v1/f")) == b"old"
        assert tree.find("m/v1").list() == ["f"]
        assert [r for r in storage.walk_files("m/v1") if r != METADATA_FILE] == ["f"]

    def test_committed_forced_put_replaces(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"old", name="f")
        with tree.transaction():
            tree.put("m/v1", b"new", name="f", force=True)
            tree.remove("m/v1/f")
            tree.put("m/v1", b"newer", name="f", force=True)
        assert b"".join(tree.get("m/v1/f")) == b"newer"
        assert [r for r in storage.walk_files("m/v1") if r != METADATA_FILE] == ["f"]

    def test_reads_in_a_transaction_see_its_staged_writes(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"old", name="f")
        tree.put("m/v1", b"gone", name="h")
        other = Metatree(storage)
        with tree.transaction():
            tree.put("m/v1", b"new", name="f", force=True)
            tree.put("m/v1", b"newer", name="f", force=True)
            tree.put("m/v1", b"added", name="g")
            with pytest.raises(AlreadyExistsError):
                tree.put("m/v1", b"again", name="g")
            tree.remove("m/v1/h")
            assert b"".join(tree.get("m/v1/f")) == b"newer"
            assert b"".join(tree.get("m/v1/g")) == b"added"
            assert tree.exists("m/v1/g")
            assert not tree.exists("m/v1/h")
            with pytest.raises(NotFoundError):
                tree.get("m/v1/h")
            assert tree.find("m/v1").list() == ["f", "g"]
            assert b"".join(other.get("m/v1/f")) == b"old"  # no other tree sees it
            assert other.find("m/v1").list() == ["f", "h"]
        assert b"".join(other.get("m/v1/f")) == b"newer"
        assert other.find("m/v1").list() == ["f", "g"]

    def test_transaction_puts_give_one_tree_at_any_concurrency(
        self, storage: Storage, tmp_path: Path
    ) -> None:
        """A transaction's puts store one tree with exact records, at any concurrency.

        Deferred and sent in batches (remote stores) or one by one; reads inside the block
        see them, other trees only after the commit.
        """
        import hashlib

        local = tmp_path / "f.bin"
        local.write_bytes(b"local file")
        folder = tmp_path / "d"
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "a").write_bytes(b"a in a folder")
        other = Metatree(storage, KEYS)
        for width in (1, 4):
            tree = Metatree(storage, KEYS)
            top = f"w{width}"
            changing = bytearray(b"as put")
            with tree.transaction(concurrency=width):
                tree.put(f"{top}/v1", b"bytes", name="f")
                tree.put(f"{top}/v2", changing, name="f")  # type: ignore[arg-type]  # bytes-like, accepted
                changing[:] = b"changed after the put"  # the put took what it was given
                tree.put(f"{top}/v3/s", str(local))  # two new levels
                tree.put(f"{top}/v4", str(folder), recursive=True)
                assert not other.exists(top)  # nothing shows before the commit
                assert b"".join(tree.get(f"{top}/v1/f")) == b"bytes"  # reads see the puts
                tree.put(f"{top}/v1", b"second", name="g")  # into a node this block made
            for location, body in (
                (f"{top}/v1/f", b"bytes"),
                (f"{top}/v1/g", b"second"),
                (f"{top}/v2/f", b"as put"),
                (f"{top}/v3/s/f.bin", b"local file"),
            ):
                assert b"".join(other.get(location)) == body
                record = other.stat(location)
                assert (record.size, record.sha256) == (len(body), hashlib.sha256(body).hexdigest())
            out = tmp_path / f"out{width}"
            other.get(f"{top}/v4/d", outfile=str(out), recursive=True)  # checked: its records
            assert (out / "sub" / "a").read_bytes() == b"a in a folder"
            assert other.find(top).children == ["v1", "v2", "v3", "v4"]
        assert other.fsck().clean

    def test_recursive_put_in_a_transaction(self, storage: Storage, tmp_path: Path) -> None:
        tree = Metatree(storage, KEYS)
        old, new = tmp_path / "old", tmp_path / "new"
        (old / "sub").mkdir(parents=True)
        (old / "sub" / "a").write_bytes(b"old a")
        (old / "b").write_bytes(b"old b")
        new.mkdir()
        (new / "c").write_bytes(b"new c")
        tree.put("m/v1", str(old), name="d", recursive=True)
        before = snapshot(storage)

        def aborted() -> None:
            with tree.transaction():
                tree.put("m/v1", str(new), name="d", force=True, recursive=True)
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            aborted()
        assert snapshot(storage) == before
        with tree.transaction():
            tree.put("m/v1", str(new), name="d", force=True, recursive=True)
        files = sorted(r for r in storage.walk_files("m/v1") if r != METADATA_FILE)
        assert files == ["d/c"]
        assert storage.read_bytes("m/v1/d/c") == b"new c"

    def test_rolled_back_transaction_leaves_no_created_node_data(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        before = snapshot(storage)

        def aborted() -> None:
            with tree.transaction():
                tree.put("n/v1", b"x", name="f")
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            aborted()
        assert snapshot(storage) == before

    def test_caught_nested_failure_rolls_back_everything(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        before = snapshot(storage)

        def inner() -> None:
            with tree.transaction():
                tree.find("m/v1").update(inner=True)
                raise KeyError("inner")

        def outer() -> None:
            with tree.transaction():
                tree.find("m").update(outer=True)
                with contextlib.suppress(KeyError):
                    inner()

        with pytest.raises(TransactionAbortedError) as caught:
            outer()
        assert isinstance(caught.value.__cause__, KeyError)
        assert snapshot(storage) == before

    def test_update_of_a_node_removed_in_the_transaction(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        tree.put("m/v2", b"x", name="f")
        with tree.transaction():
            node = tree.find("m/v1")
            tree.remove("m/v1", recursive=True)
            with pytest.raises(NotFoundError):
                node.update(late=True)
        assert tree.find("m").children == ["v2"]
        assert storage.kind("m/v1") is None

    def test_remove_then_put_of_the_same_name(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"old", name="f")
        with tree.transaction():
            tree.remove("m/v1", recursive=True)
            tree.put("m/v1", b"new", name="g")
        assert tree.find("m/v1").list() == ["g"]

    def test_transactions_belong_to_the_task(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        node = tree.find("m/v1")
        seen: list[BaseException] = []

        async def first() -> None:
            with contextlib.suppress(RuntimeError), tree.transaction():
                node.update(a=1)
                await asyncio.sleep(0.05)  # the other task runs inside our block
                raise RuntimeError("abort")

        async def second() -> None:
            await asyncio.sleep(0.01)
            try:
                node.update(b=2)
            except LockError as exc:
                seen.append(exc)

        async def main() -> None:
            await asyncio.gather(first(), second())

        asyncio.run(main())
        metadata = tree.find("m/v1").metadata
        assert "a" not in metadata
        assert "b" not in metadata  # refused, never silently joined and discarded
        assert len(seen) == 1

    # -- third attack round -------------------------------------------------------------
    def test_task_started_in_a_transaction_writes_after_it(self, storage: Storage) -> None:
        """A context copied inside the block must not stage into it once it has ended."""
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")

        async def late() -> None:
            await asyncio.sleep(0.02)  # runs after the block has committed
            tree.find("m/v1").update(note="late")
            tree.put("m/v2", b"late", name="late.bin")

        async def main() -> None:
            with tree.transaction():
                task = asyncio.create_task(late())  # copies the context: the transaction
                tree.find("m/v1").update(inside=True)
            await task

        asyncio.run(main())
        fresh = Metatree(storage)
        assert fresh.find("m/v1").metadata["note"] == "late"
        assert b"".join(fresh.get("m/v2/late.bin")) == b"late"

    def test_a_thread_with_a_copied_context_does_not_join_the_transaction(
        self, storage: Storage
    ) -> None:
        """``asyncio.to_thread`` copies the context: its writes wait for the lock instead.

        The lock was always taken before staging here; the model store skipped it for a
        caller's transaction and staged into the owner's (its third attack round), so that a
        thread is not in the transaction is now `Database.active_tx`'s answer.
        """
        tree = Metatree(storage, KEYS, lock_timeout=10)
        tree.put("m/v1", b"x", name="f")
        done = threading.Event()

        def write() -> None:
            tree.find("m/v1").update(note="thread")
            done.set()

        thread = threading.Thread()  # replaced inside the block, with the block's context
        with contextlib.suppress(RuntimeError), tree.transaction():
            tree.find("m/v1").update(inside=True)
            context = contextvars.copy_context()
            thread = threading.Thread(target=context.run, args=(write,))
            thread.start()
            assert not done.wait(0.2)  # it waits for the lock the block holds
            raise RuntimeError("the block aborts")
        thread.join(10)
        assert done.is_set()
        metadata = Metatree(storage).find("m/v1").metadata
        assert metadata.get("note") == "thread"  # written after the block, not lost with it
        assert "inside" not in metadata

    def test_crash_after_the_first_new_node_leaves_a_recognised_orphan(
        self, storage: Storage
    ) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        # what a crash leaves now that new nodes are written top first
        storage.write_atomic("n/metadata.json", orjson.dumps({"children": ["v1"]}))
        storage.write_atomic("n/v1/.metatree.tmp.0", b"")
        assert tree.find("").list() == ["m"]
        tree.put("n/v1/s", b"y", name="f")
        assert tree.find("").children == ["m", "n"]
        assert tree.find("n/v1/s").list() == ["f"]

    def test_failed_put_of_new_nodes_writes_nothing(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        before = snapshot(storage)

        with pytest.raises(StorageError):
            tree.put("n/v1/s", Broken(), name="f")  # type: ignore[arg-type]
        assert snapshot(storage) == before

    def test_failed_replace_in_a_transaction_keeps_the_earlier_one(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"OLD", name="a.bin")

        with tree.transaction():
            tree.put("m/v1", b"FIRST", name="a.bin", force=True)
            with contextlib.suppress(StorageError):
                tree.put("m/v1", Broken(), name="a.bin", force=True)  # type: ignore[arg-type]
        assert b"".join(tree.get("m/v1/a.bin")) == b"FIRST"
        assert [r for r in storage.walk_files("m/v1") if r != METADATA_FILE] == ["a.bin"]

    def test_failed_move_at_commit_leaves_no_staged_file(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"OLD", name="a.bin")

        def broken(src: str, dst: str) -> None:
            raise StorageError(dst, "injected")

        monkeypatch.setattr(storage, "rename", broken)
        with pytest.raises(StorageError, match="injected"), tree.transaction():
            tree.put("m/v1", b"NEW", name="a.bin", force=True)
        monkeypatch.undo()
        assert [r for r in storage.walk_files("m/v1") if r != METADATA_FILE] == ["a.bin"]
        assert b"".join(tree.get("m/v1/a.bin")) == b"OLD"

    def test_writer_that_lost_its_lease_neither_writes_nor_cleans_up(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Its unlisted node may be the next holder's by now: no file into it, no delete of it."""
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        lock = tree._db.lock
        original = lock.check
        writes: list[str] = []

        def lost() -> None:
            if writes:  # lost after the new node's metadata was written
                raise LockLostError(lock.name, "injected: the lease ran out")
            original()

        real_write = storage.write_atomic

        def recording(rel: str, data: bytes, **options: Any) -> None:
            writes.append(rel)
            real_write(rel, data, **options)

        monkeypatch.setattr(lock, "check", lost)
        monkeypatch.setattr(storage, "write_atomic", recording)
        with pytest.raises(LockLostError):
            tree.put("m/v2", b"late", name="a.bin")
        monkeypatch.undo()
        assert storage.kind("m/v2/a.bin") is None  # the file never went in
        assert storage.kind("m/v2/metadata.json") == "file"  # left for the next holder/fsck
        assert tree.find("m").children == ["v1"]
