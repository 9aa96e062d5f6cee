"""File records and integrity on read (issue 11): recorded on every put, checked on every get.

Part of the conformance suite (mixed into `BackendConformance`): every test runs on every
backend. Tampering goes through `Storage` primitives, below metatree's records, as a failing
disk, another client or an attacker with write access to the bucket would.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import platform
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from fsspec.callbacks import Callback

import metatree
from metatree import Metatree
from metatree._core.integrity import Check
from metatree._locking import LeaseLock
from metatree._names import LOCK_FILE
from metatree._records import RECORDS
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptMetadataError,
    IntegrityError,
    LockLostError,
    MetadataError,
    NotFoundError,
    PathError,
    StorageError,
    UnresolvedPathError,
)
from metatree.testing._helpers import unchanged

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from metatree._storage import Storage


__all__ = ["FileRecordTests"]

LEAF = "m/v/s"
KEYS_OF_RECORDS = ("model", "version", "stage")  # the conformance suite's KEYS
BODY = b"weights-v1" * 1000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree_with_dir(tmp_path: Path) -> Path:
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a" * 100)
    (src / "sub" / "b.bin").write_bytes(b"b" * 200)
    return src


@contextlib.contextmanager
def _writer_thread(work: Callable[[threading.Event], object]) -> Iterator[None]:
    """Run `work` in a thread; the block runs once it sets the event (or fails).

    A failure of the thread is the test's failure, after the block.
    """
    ready, failures = threading.Event(), []

    def run() -> None:
        try:
            work(ready)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert ready.wait(30)
        yield
    finally:
        thread.join(60)
    assert failures == []


class _NoSleep:
    """Stands for the time module in `metatree._core.integrity`: waiting is a failure."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def sleep(seconds: float) -> None:
        raise AssertionError("waited for a lock that writes no records")


class FileRecordTests:
    """Every stored byte accounted for: records, verification, tampering, bad records."""

    # -- records ---------------------------------------------------------------------------
    def test_put_records_size_sha256_time_and_provenance(self, tree: Metatree) -> None:
        before = datetime.datetime.now(datetime.UTC)
        assert tree.put(LEAF, BODY, name="w.bin", info={"run": "r42", "epochs": 3}) is True
        after = datetime.datetime.now(datetime.UTC)
        record = tree.stat(f"{LEAF}/w.bin")
        assert (record.name, record.size, record.sha256) == ("w.bin", len(BODY), _sha(BODY))
        assert before <= record.created <= after
        assert record.created.tzinfo == datetime.UTC
        origin = record.provenance
        assert len(origin.uuid) == 32
        assert int(origin.uuid, 16) >= 0
        assert origin.python == f"python:{platform.python_version()}"
        assert origin.platform == platform.platform()
        assert origin.host
        assert isinstance(origin.user, str)
        assert origin.versions["metatree"] == metatree.__version__
        assert "fsspec" in origin.versions
        assert origin.info == {"run": "r42", "epochs": 3}
        assert tree.find(LEAF).files == {"w.bin": record}

    def test_info_is_taken_as_it_was_when_put_returned(self, tree: Metatree) -> None:
        """The caller's nested `info` values changed after put (before the commit) are not stored.

        A transaction keeps a put's records until the block ends: a shallow copy let a
        later change in, past the size check too.
        """
        info: dict[str, Any] = {"run": {"id": "r1", "tags": ["a"]}}
        with tree.transaction():
            tree.put(LEAF, b"x", name="f", info=info)
            info["run"]["id"] = "changed" * 20_000  # far over MAX_INFO_BYTES
            info["run"]["tags"].append("b")
        assert tree.stat(f"{LEAF}/f").provenance.info == {"run": {"id": "r1", "tags": ["a"]}}

    def test_node_put_and_get_take_the_same_options(self, tree: Metatree) -> None:
        tree.put(LEAF, b"x", name="seed")
        node = tree.find(LEAF)
        assert node.put(b"weights", name="w.bin", info={"run": 7}) is True
        assert node.files["w.bin"].provenance.info == {"run": 7}
        tree.storage.put(b"tampered", f"{LEAF}/w.bin")
        with pytest.raises(IntegrityError):
            b"".join(node.get("w.bin"))
        assert b"".join(node.get("w.bin", verify=False)) == b"tampered"
        with pytest.raises(PathError):
            node.get("w.bin", verify="no")  # type: ignore[arg-type]

    @pytest.mark.parametrize("kind", ["path", "bytes", "stream"])
    def test_every_source_kind_is_hashed_as_it_streams(
        self, tree: Metatree, tmp_path: Path, kind: str
    ) -> None:
        local = tmp_path / "w.bin"
        local.write_bytes(BODY)
        source: Any = {"path": local, "bytes": BODY, "stream": io.BytesIO(BODY)}[kind]
        tree.put(LEAF, source, name="w.bin")
        assert tree.stat(f"{LEAF}/w.bin").sha256 == _sha(BODY)

    @pytest.mark.parametrize("kind", ["path", "bytes"])
    @pytest.mark.parametrize("new", ["m/v/t", "n/w/t"], ids=["leaf", "three-nodes"])
    def test_a_new_node_in_a_transaction_is_written_once_before_its_file(
        self,
        tree: Metatree,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        kind: str,
        new: str,
    ) -> None:
        """A small file's record is known before it is stored: its new node is written once.

        Hashed first, the record goes into the receiving node's first metadata.json, written
        (as the top new node's) before the file: what a crash leaves is an orphan `claim`
        recognises. Written twice, a bulk load's puts cost a third more on local disk.
        """
        tree.put(LEAF, b"x", name="seed")
        local = tmp_path / "w.bin"
        local.write_bytes(BODY)
        storage = tree.storage
        writes: list[str] = []

        def spy(method: str, rels: Callable[..., list[str]]) -> None:
            real = getattr(storage, method)

            def recorded(*args: Any, **kwargs: Any) -> Any:
                writes.extend(rels(*args))
                return real(*args, **kwargs)

            monkeypatch.setattr(storage, method, recorded)

        spy("write_atomic", lambda rel, *_: [rel])
        spy("put", lambda _, rel, *__: [rel])
        spy("put_many", lambda items, *_: [rel for _, rel in items])
        with tree.transaction():
            tree.put(new, local if kind == "path" else BODY, name="w.bin")
        top = new.split("/")[0] if new.startswith("n/") else new
        assert writes.count(f"{new}/metadata.json") == 1
        assert writes.index(f"{top}/metadata.json") < writes.index(f"{new}/w.bin")
        record = tree.stat(f"{new}/w.bin")
        assert (record.size, record.sha256) == (len(BODY), _sha(BODY))
        assert b"".join(tree.find(new).get("w.bin")) == BODY  # verified against the record

    def test_records_in_an_intermediate_node_and_new_nodes_below_a_new_top(
        self, tree: Metatree
    ) -> None:
        tree.put("m", b"readme", name="README")  # a file in a node that is not a leaf
        tree.put("n/v/s", b"x", name="f")  # three new nodes: the leaf written after the file
        assert tree.stat("m/README").sha256 == _sha(b"readme")
        assert tree.stat("n/v/s/f").size == 1
        assert tree.find("n").files == {}
        assert tree.find("n/v").files == {}

    def test_recursive_put_records_every_file_under_one_put(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
        files = tree.find(LEAF).files
        assert sorted(files) == ["ckpt/a.bin", "ckpt/sub/b.bin"]
        assert files["ckpt/a.bin"].sha256 == _sha(b"a" * 100)
        assert files["ckpt/sub/b.bin"].size == 200
        assert files["ckpt/a.bin"].provenance == files["ckpt/sub/b.bin"].provenance
        with pytest.raises(NotFoundError, match="directory, whose files have records"):
            tree.stat(f"{LEAF}/ckpt")
        out = tmp_path / "out"
        list(tree.get(f"{LEAF}/ckpt", str(out), recursive=True))
        assert (out / "sub" / "b.bin").read_bytes() == b"b" * 200

    def test_a_replace_rewrites_the_record_and_drops_what_it_replaced(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
        tree.put(LEAF, b"v1", name="f")
        first = tree.stat(f"{LEAF}/f")
        tree.put(LEAF, b"version 2", name="f", force=True)
        second = tree.stat(f"{LEAF}/f")
        assert (second.size, second.sha256) == (9, _sha(b"version 2"))
        assert second.provenance.uuid != first.provenance.uuid
        tree.put(LEAF, b"now a file", name="ckpt", force=True, recursive=True)
        assert sorted(tree.find(LEAF).files) == ["ckpt", "f"]
        stored = tree.storage.read_bytes(f"{LEAF}/metadata.json")
        assert first.provenance.uuid.encode() not in stored  # its put entry was pruned

    def test_put_without_force_records_nothing_new(self, tree: Metatree) -> None:
        tree.put(LEAF, b"v1", name="f")
        with unchanged(tree.storage), pytest.raises(AlreadyExistsError):
            tree.put(LEAF, b"v2", name="f")

    def test_transaction_records_at_commit_and_not_after_a_rollback(self, tree: Metatree) -> None:
        tree.put(LEAF, b"old", name="f")
        with tree.transaction():
            tree.put(LEAF, b"new", name="f", force=True)
            tree.put("m/v/t", b"fresh", name="g")
            tree.put("m/v/t", b"second", name="h")
            assert b"".join(tree.get(f"{LEAF}/f")) == b"new"  # staged copy, staged record
        assert tree.stat(f"{LEAF}/f").sha256 == _sha(b"new")
        assert sorted(tree.find("m/v/t").files) == ["g", "h"]

        def rolled_back() -> None:
            with tree.transaction():
                tree.put(LEAF, b"rolled back", name="f", force=True)
                raise RuntimeError

        with pytest.raises(RuntimeError):
            rolled_back()
        assert tree.stat(f"{LEAF}/f").sha256 == _sha(b"new")
        assert b"".join(tree.get(f"{LEAF}/f")) == b"new"

    def test_remove_drops_the_record_first(self, tree: Metatree, tmp_path: Path) -> None:
        tree.put(LEAF, b"x", name="f")
        tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
        tree.remove(f"{LEAF}/f")
        tree.remove(f"{LEAF}/ckpt", recursive=True)
        assert tree.find(LEAF).files == {}
        assert RECORDS not in tree.storage.read_bytes(f"{LEAF}/metadata.json").decode()
        with tree.transaction():
            tree.put(LEAF, b"y", name="g")
            tree.remove(f"{LEAF}/g")  # stored and removed in one transaction
        assert tree.find(LEAF).files == {}

    @pytest.mark.parametrize("where", ["m/v/s", "m/v/t", "n/v/s"])
    def test_a_put_whose_record_cannot_be_written_takes_its_file_back(
        self, tree: Metatree, monkeypatch: pytest.MonkeyPatch, where: str
    ) -> None:
        """A failing disk at the record: a new file or node is taken back, nothing is left."""
        tree.put(LEAF, b"x", name="f")
        write = tree._db.put_metadata
        calls: list[object] = []

        def failing(path: Any, metadata: Any, **options: Any) -> None:
            calls.append(path)
            if RECORDS in metadata:  # the write of the record, after the file
                raise StorageError(repr(path), "the disk is full")
            write(path, metadata, **options)

        with unchanged(tree.storage):
            monkeypatch.setattr(tree._db, "put_metadata", failing)
            with pytest.raises(StorageError):
                tree.put(where, b"y", name="g")
            monkeypatch.undo()
        assert calls  # the failure was met
        assert tree.find(LEAF).list() == ["f"]

    def test_without_locking_a_failed_put_leaves_what_it_cannot_prove_its_own(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the lock another writer may have stored the same name: never delete it."""
        tree = Metatree(storage, KEYS_OF_RECORDS, locking_enabled=False)
        tree.put(LEAF, b"x", name="f")
        write = tree._db.put_metadata

        def failing(path: Any, metadata: Any, **options: Any) -> None:
            if RECORDS in metadata and "g" in metadata[RECORDS]["files"]:
                raise StorageError(repr(path), "the disk is full")
            write(path, metadata, **options)

        monkeypatch.setattr(tree._db, "put_metadata", failing)
        with pytest.raises(StorageError):
            tree.put(LEAF, b"y", name="g")
        monkeypatch.undo()
        assert tree.find(LEAF).list() == ["f", "g"]  # left, unrecorded: maybe not ours
        assert tree.verify(LEAF).unrecorded == [f"{LEAF}/g"]

    def test_a_writer_whose_lease_was_broken_owns_nothing(self, storage: Storage) -> None:
        """A failed put cleans up only what it provably owns: a forced break is seen at once."""
        mine = Metatree(storage, KEYS_OF_RECORDS)
        if not isinstance(mine._db.lock, LeaseLock):
            pytest.skip("this backend's lock cannot be broken by another writer (an OS lock)")
        other = Metatree(storage)
        with mine._db.write_lock():
            assert mine._db.owns_writes()
            assert other.break_lock(force=True)
            other.put(LEAF, b"theirs", name="f")
            assert not mine._db.owns_writes()  # the renewer has not noticed yet; the store has
        assert b"".join(other.get(f"{LEAF}/f")) == b"theirs"

    def test_a_lost_record_write_takes_nothing_back(
        self, tree: Metatree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tree.put(LEAF, b"x", name="f")
        write = tree._db.put_metadata

        def lost(path: Any, metadata: Any, **options: Any) -> None:
            if RECORDS in metadata and "g" in metadata[RECORDS]["files"]:
                raise LockLostError(".lock", "another writer rewrote the node")
            write(path, metadata, **options)

        monkeypatch.setattr(tree._db, "put_metadata", lost)
        with pytest.raises(LockLostError):
            tree.put(LEAF, b"y", name="g")
        monkeypatch.undo()
        assert tree.find(LEAF).list() == ["f", "g"]  # the path may be the other writer's now

    def test_metadata_too_large_to_read_back_is_never_written(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        src = tmp_path / "many"
        src.mkdir()
        for i in range(40):
            (src / f"file-{i:03}.bin").write_bytes(b"x")
        tree.put(LEAF, b"x", name="f")
        tree._db.max_metadata_bytes = 3000  # stands for the real 256 MiB
        with unchanged(tree.storage), pytest.raises(MetadataError, match="over the"):
            tree.put(LEAF, src, recursive=True)
        with unchanged(tree.storage), pytest.raises(MetadataError, match="over the"):
            tree.put("m/v/t", src, recursive=True)  # a new node: taken back whole
        with unchanged(tree.storage), pytest.raises(MetadataError, match="over the"):
            tree.find(LEAF).update(notes="n" * 4000)
        with unchanged(tree.storage), pytest.raises(MetadataError, match="over the"):
            tree.put(LEAF, b"new", name="f", force=True, info={"notes": "n" * 4000})
        assert b"".join(tree.get(f"{LEAF}/f")) == b"x"  # refused before the replace

    def test_a_file_beside_a_child_of_the_same_name_is_not_corrupt(self, tree: Metatree) -> None:
        """Object stores hold a key and a prefix of one name: a file m/v and a node m/v."""
        tree.put("m", b"a file", name="v")
        try:
            tree.put("m/v/s", b"x", name="f")
        except AlreadyExistsError:
            assert tree.storage.capabilities.exclusive_names
            return
        assert list(tree.find("m").files) == ["v"]
        assert tree.verify("").clean

    def test_metadata_hides_records_and_update_keeps_them(self, tree: Metatree) -> None:
        tree.put(LEAF, b"x", name="f")
        node = tree.find(LEAF)
        node.update(score=0.5)
        assert node.metadata == {"score": 0.5}
        assert tree.metadata == {"score": 0.5}
        assert tree.stat(f"{LEAF}/f").size == 1
        walked = {n.path: (m, f) for n, m, f in tree.walk(files=True)}
        assert walked[("m", "v", "s")] == ({"score": 0.5}, node.files)
        assert all(RECORDS not in m for _, m in tree.walk())

    def test_records_never_name_a_node_nor_leak_into_messages(self, tree: Metatree) -> None:
        tree.put(LEAF, b"x", name="f")
        tree.find(LEAF).update(big=["y" * 1000])
        with pytest.raises(UnresolvedPathError) as caught:
            tree.get(f"{LEAF}/<{RECORDS}>")
        assert "sha256" not in str(caught.value)
        assert RECORDS not in str(caught.value).split("its keys:")[1]
        with pytest.raises(UnresolvedPathError) as caught:
            tree.get(f"{LEAF}/<big>")
        assert len(str(caught.value)) < 400  # a stored value is cut in messages

    @pytest.mark.parametrize("key", [RECORDS, ".metatree", ".metatree.other"])
    def test_update_cannot_write_records(self, tree: Metatree, key: str) -> None:
        tree.put(LEAF, b"x", name="f")
        node = tree.find(LEAF)
        with unchanged(tree.storage), pytest.raises(MetadataError):
            node.update(**{key: {"files": {}, "puts": {}}})

    @pytest.mark.parametrize(
        ("info", "error"),
        [
            ("run=1", MetadataError),
            ([1, 2], MetadataError),
            ({"x": float("nan")}, MetadataError),
            ({"x": {1, 2}}, MetadataError),
            ({"x": "y" * 70_000}, MetadataError),
        ],
    )
    def test_bad_info_writes_nothing(self, tree: Metatree, info: object, error: type) -> None:
        with unchanged(tree.storage), pytest.raises(error):
            tree.put(LEAF, b"x", name="f", info=info)  # type: ignore[arg-type]

    @pytest.mark.parametrize("flag", ["no", 0, None])
    def test_verify_flags_must_be_bool(self, tree: Metatree, flag: object) -> None:
        tree.put(LEAF, b"x", name="f")
        with pytest.raises(PathError):
            tree.get(f"{LEAF}/f", verify=flag)  # type: ignore[arg-type]
        with pytest.raises(PathError):
            tree.verify(LEAF, recursive=flag)  # type: ignore[arg-type]

    def test_stat_of_what_has_no_record(self, tree: Metatree) -> None:
        tree.put(LEAF, b"x", name="f")
        tree.storage.put(b"metatreedb wrote me", f"{LEAF}/legacy")  # no record, as metatreedb
        with pytest.raises(NotFoundError, match="without one"):
            tree.stat(f"{LEAF}/legacy")
        with pytest.raises(NotFoundError):
            tree.stat(f"{LEAF}/absent")
        with pytest.raises(NotFoundError):
            tree.stat("m/v/t")  # a node that does not exist
        assert b"".join(tree.get(f"{LEAF}/legacy")) == b"metatreedb wrote me"

    def test_a_name_differing_in_case_is_one_record_where_it_is_one_file(
        self, tree: Metatree
    ) -> None:
        tree.put(LEAF, b"one", name="Model.bin")
        tree.put(LEAF, b"two!", name="model.BIN", force=True)
        files = tree.find(LEAF).files
        if not tree._db.case_insensitive:
            assert sorted(files) == ["Model.bin", "model.BIN"]
            return
        assert list(files) == ["model.BIN"]  # a case-insensitive disk (macOS, Windows)
        assert b"".join(tree.get(f"{LEAF}/MODEL.bin")) == b"two!"
        tree.storage.put(b"evil", f"{LEAF}/model.bin")
        with pytest.raises(IntegrityError):
            b"".join(tree.get(f"{LEAF}/Model.BIN"))

    # -- integrity on read -----------------------------------------------------------------
    @pytest.mark.parametrize(
        "tampered",
        [
            b"weights-v2" + BODY[10:],  # same size, other bytes
            BODY[:-1],  # truncated
            BODY + b"!",  # one byte more
            b"",  # emptied
            b"x" * (3 * len(BODY)),  # replaced by something larger
        ],
        ids=["changed", "truncated", "appended", "emptied", "replaced"],
    )
    def test_a_tampered_file_fails_every_read(
        self, tree: Metatree, tmp_path: Path, tampered: bytes
    ) -> None:
        tree.put(LEAF, BODY, name="w.bin")
        tree.storage.put(tampered, f"{LEAF}/w.bin")  # below metatree: no record update
        with pytest.raises(IntegrityError) as caught:
            b"".join(tree.get(f"{LEAF}/w.bin"))
        assert caught.value.expected == _sha(BODY)
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        with pytest.raises(IntegrityError):
            tree.get(f"{LEAF}/w.bin", str(downloads / "out.bin"))
        assert list(downloads.iterdir()) == []  # nor a partial file beside it
        assert b"".join(tree.get(f"{LEAF}/w.bin", verify=False)) == tampered
        report = tree.verify()
        assert report.mismatched == [f"{LEAF}/w.bin"]
        assert not report.clean

    def test_a_stream_with_too_many_bytes_fails_before_its_end(self, tree: Metatree) -> None:
        tree.put(LEAF, b"small", name="f")
        tree.storage.put(b"y" * 100_000, f"{LEAF}/f")
        got: list[bytes] = []
        with pytest.raises(IntegrityError):
            got.extend(tree.get(f"{LEAF}/f", chunk_size=1000))
        assert got == []  # refused at the first chunk past the recorded size

    def test_a_directory_replaced_during_its_download_is_never_a_mix(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        """Each file matches some record; all of them must come from one put."""
        versions = []
        for v in (1, 2):
            src = tmp_path / f"src{v}" / "ckpt"
            src.mkdir(parents=True)
            for name in "abcd":
                (src / name).write_bytes(f"v{v}-{name}".encode() * 100)
            versions.append(src)
        tree.put(LEAF, versions[0], recursive=True)
        out = tmp_path / "out"

        replaced: list[bool] = []  # not an attribute: fsspec's Callback answers any name

        class Replace(Callback):  # type: ignore[misc]
            def call(self, *args: Any, **kwargs: Any) -> None:
                if self.value and not replaced:
                    replaced.append(True)
                    tree.put(LEAF, versions[1], recursive=True, force=True)

        try:
            tree.get(f"{LEAF}/ckpt", str(out), recursive=True, callback=Replace())
        except ConflictError:
            assert not out.exists()
        else:
            got = {p.read_bytes()[:2] for p in out.iterdir()}
            assert len(got) == 1, got  # one version, whichever
        assert replaced  # the replace did run during the download

    def test_a_directory_briefly_gone_under_a_writer_is_waited_for(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        """Where directories cannot be swapped atomically (WebHDFS), a replace leaves a gap."""
        src = _tree_with_dir(tmp_path)
        tree.put(LEAF, src, recursive=True)
        other = Metatree(tree.storage)

        def writer(gone: threading.Event) -> None:
            with other._db.write_lock():
                tree.storage.remove_tree(f"{LEAF}/ckpt")  # the old one renamed away ...
                gone.set()
                time.sleep(0.3)
                for local in sorted(src.rglob("*.bin")):  # ... the new one renamed in
                    tree.storage.put(local, f"{LEAF}/ckpt/{local.relative_to(src)}")

        out = tmp_path / "out"
        with _writer_thread(writer):
            tree.get(f"{LEAF}/ckpt", str(out), recursive=True)
        assert (out / "sub" / "b.bin").read_bytes() == b"b" * 200

    def test_a_file_turned_directory_under_a_stale_read_is_a_conflict(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        """Read its record, then a forced put made it a directory: a race, not 'not found'."""
        from fsspec.callbacks import DEFAULT_CALLBACK

        from metatree._core.read import get
        from metatree._core.resolve import Resolved

        tree.put(LEAF, b"a file", name="f")
        stale = Resolved(tree._db, ("m", "v", "s"), LEAF)
        _ = stale.metadata  # the read saw f as a recorded file
        src = tmp_path / "f"
        src.mkdir()
        (src / "x").write_bytes(b"x")
        tree.put(LEAF, src, recursive=True, force=True)
        for outfile in (None, str(tmp_path / "out")):
            with pytest.raises(ConflictError):
                b"".join(
                    get(
                        stale,
                        "f",
                        outfile,
                        recursive=False,
                        chunk_size=2**20,
                        callback=DEFAULT_CALLBACK,
                    )
                )

    def test_a_transaction_does_not_wait_for_its_own_lock(
        self, tree: Metatree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from metatree._core import integrity

        tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
        tree.storage.remove_tree(f"{LEAF}/ckpt")  # recorded, gone
        monkeypatch.setattr(integrity, "time", _NoSleep())
        with pytest.raises(NotFoundError), tree.transaction():
            tree.get(f"{LEAF}/ckpt", str(tmp_path / "out"), recursive=True)

    def test_a_transaction_reads_and_verifies_the_directory_it_staged(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        tree.put(LEAF, b"x", name="f")
        with tree.transaction():
            tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
            out = tmp_path / "out"
            tree.get(f"{LEAF}/ckpt", str(out), recursive=True)
            assert (out / "sub" / "b.bin").read_bytes() == b"b" * 200
            report = tree.verify(LEAF)
            assert report.ok == [f"{LEAF}/ckpt/a.bin", f"{LEAF}/ckpt/sub/b.bin", f"{LEAF}/f"]
            assert (report.missing, report.unrecorded) == ([], [])
        assert tree.verify(LEAF).ok == report.ok

    def test_a_foreign_lock_is_not_waited_for(
        self, tree: Metatree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Metatreedb's empty .lock writes no records: a mismatch is reported at once."""
        from metatree._core import integrity

        tree.put(LEAF, b"x", name="f")
        tree.storage.put(b"y", f"{LEAF}/f")
        tree.storage.write_atomic(LOCK_FILE, b"")  # what metatreedb leaves while it writes

        monkeypatch.setattr(integrity, "time", _NoSleep())
        with pytest.raises(IntegrityError):
            b"".join(tree.get(f"{LEAF}/f"))

    def test_a_tampered_file_in_a_stored_directory_fails_the_download(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
        tree.storage.put(b"B" * 200, f"{LEAF}/ckpt/sub/b.bin")
        out = tmp_path / "out"
        with pytest.raises(IntegrityError):
            tree.get(f"{LEAF}/ckpt", str(out), recursive=True)
        assert not out.exists()
        assert tree.verify(LEAF).mismatched == [f"{LEAF}/ckpt/sub/b.bin"]
        tree.storage.remove_file(f"{LEAF}/ckpt/sub/b.bin")  # recorded, no longer stored
        with pytest.raises(IntegrityError) as caught:
            tree.get(f"{LEAF}/ckpt", str(out), recursive=True)
        assert caught.value.kind == "missing"
        assert not out.exists()
        assert tree.verify(LEAF).missing == [f"{LEAF}/ckpt/sub/b.bin"]

    def test_a_file_planted_in_a_recorded_directory_fails_the_download(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
        tree.storage.put(b"import os", f"{LEAF}/ckpt/sub/evil.py")
        out = tmp_path / "out"
        with pytest.raises(IntegrityError) as caught:
            tree.get(f"{LEAF}/ckpt", str(out), recursive=True)
        assert caught.value.kind == "unexpected"
        assert not out.exists()
        report = tree.verify()
        assert report.unexpected == [f"{LEAF}/ckpt/sub/evil.py"]
        assert report.ok == [f"{LEAF}/ckpt/a.bin", f"{LEAF}/ckpt/sub/b.bin"]
        assert not report.clean
        list(tree.get(f"{LEAF}/ckpt", str(out), recursive=True, verify=False))
        assert (out / "sub" / "evil.py").exists()  # what verify=False is for

    @pytest.mark.parametrize("planted", ["metadata.json", ".lock", "sub/metadata.json", ".LOCK"])
    def test_a_reserved_looking_name_planted_in_a_recorded_directory_is_unexpected(
        self, tree: Metatree, tmp_path: Path, planted: str
    ) -> None:
        """Get and verify judge alike: only metatree's own temp names are skipped."""
        tree.put(LEAF, _tree_with_dir(tmp_path), recursive=True)
        tree.storage.put(b"{}", f"{LEAF}/ckpt/{planted}")
        with pytest.raises(IntegrityError) as caught:
            tree.get(f"{LEAF}/ckpt", str(tmp_path / "out"), recursive=True)
        assert caught.value.kind == "unexpected"
        assert tree.verify(LEAF).unexpected == [f"{LEAF}/ckpt/{planted}"]

    def test_verify_reports_ok_missing_and_unrecorded(self, tree: Metatree, tmp_path: Path) -> None:
        tree.put(LEAF, b"x", name="f")
        tree.put(LEAF, b"y", name="g")
        tree.put("m/v/t", _tree_with_dir(tmp_path), recursive=True)
        tree.storage.remove_file(f"{LEAF}/g")
        tree.storage.put(b"planted", f"{LEAF}/extra")
        report = tree.verify()
        assert report.ok == [f"{LEAF}/f", "m/v/t/ckpt/a.bin", "m/v/t/ckpt/sub/b.bin"]
        assert report.missing == [f"{LEAF}/g"]
        assert report.unrecorded == [f"{LEAF}/extra"]
        assert report.mismatched == []
        assert tree.verify(f"{LEAF}/f").ok == [f"{LEAF}/f"]
        assert tree.verify("m/v/t", recursive=False).ok == [
            "m/v/t/ckpt/a.bin",
            "m/v/t/ckpt/sub/b.bin",
        ]
        assert tree.verify("m", recursive=False).ok == []
        assert tree.verify(f"{LEAF}/g").missing == [f"{LEAF}/g"]  # recorded, not stored
        assert tree.verify(f"{LEAF}/extra").unrecorded == [f"{LEAF}/extra"]
        assert tree.verify("m/v/t/ckpt").ok == ["m/v/t/ckpt/a.bin", "m/v/t/ckpt/sub/b.bin"]
        with pytest.raises(NotFoundError):
            tree.verify("m/v/nothing")
        with pytest.raises(NotFoundError):
            tree.verify(f"{LEAF}/nothing")

    def test_a_read_racing_a_replace_checks_the_new_record(self, tree: Metatree) -> None:
        """Readers take no lock: old record, new bytes is a race, not corruption."""
        tree.put(LEAF, b"old", name="f")
        old = tree.stat(f"{LEAF}/f")
        tree.put(LEAF, b"new bytes", name="f", force=True)  # replaced after the record was read
        check = Check(tree._db, ("m", "v", "s"), "f", old)
        check.confirm(_sha(b"new bytes"), 9)  # the record, read again, matches
        with pytest.raises(IntegrityError):
            check.confirm(_sha(b"neither"), 7)

    def test_bytes_of_a_version_whose_record_is_gone_are_a_conflict(self, tree: Metatree) -> None:
        """Two forced puts during one read: the bytes read may have had a record, now gone."""
        tree.put(LEAF, b"v1", name="f")
        first = tree.stat(f"{LEAF}/f")
        tree.put(LEAF, b"v2!", name="f", force=True)
        tree.put(LEAF, b"v3!!", name="f", force=True)
        with pytest.raises(ConflictError):
            Check(tree._db, ("m", "v", "s"), "f", first).confirm(_sha(b"v2!"), 3)
        tree.remove(f"{LEAF}/f")  # a removed file's record is gone too: a conflict, not corruption
        with pytest.raises(ConflictError):
            Check(tree._db, ("m", "v", "s"), "f", first).confirm(_sha(b"v2!"), 3)

    def test_verify_rechecks_what_a_concurrent_put_replaced_or_removed(
        self, tree: Metatree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from metatree._core import verify as verify_module

        tree.put(LEAF, b"gone", name="a")
        tree.put(LEAF, b"old", name="b")
        hash_file = verify_module._hash
        done: list[str] = []

        def racing(db: Any, rel: str) -> tuple[str, int]:
            if not done:  # a concurrent writer commits right before the first file is read
                done.append(rel)
                tree.remove(f"{LEAF}/a")
                tree.put(LEAF, b"new!", name="b", force=True)
            return hash_file(db, rel)

        monkeypatch.setattr(verify_module, "_hash", racing)
        report = tree.verify(LEAF)
        assert (report.ok, report.missing, report.mismatched) == ([f"{LEAF}/b"], [], [])

    def test_a_mismatch_waits_for_the_writer_holding_the_lock(self, tree: Metatree) -> None:
        """A writer between its file and its record holds the lock: the check waits for it."""
        tree.put(LEAF, b"old", name="f")
        old = tree.stat(f"{LEAF}/f")
        other = Metatree(tree.storage)

        def writer(staged: threading.Event) -> None:
            with other.transaction():
                other.put(LEAF, b"new bytes", name="f", force=True)
                staged.set()
                time.sleep(0.3)  # the record is written at the commit, after this

        with _writer_thread(writer):
            Check(tree._db, ("m", "v", "s"), "f", old).confirm(_sha(b"new bytes"), 9)
        assert tree.stat(f"{LEAF}/f").sha256 == _sha(b"new bytes")

    # -- records are stored data -----------------------------------------------------------
    def test_a_record_inside_a_child_node_is_corrupt(self, tree: Metatree) -> None:
        """A planted record in m/v naming "s/f" would claim the child node s's file."""
        tree.put(LEAF, b"x", name="f")
        tree.put("m/v", b"readme", name="README")
        rel = "m/v/metadata.json"
        metadata = orjson.loads(tree.storage.read_bytes(rel))
        files = metadata[RECORDS]["files"]
        files["s/f"] = files["README"]
        tree.storage.write_atomic(rel, orjson.dumps(metadata))
        with pytest.raises(CorruptMetadataError, match="inside a child node"):
            _ = tree.find("m/v").files
        with pytest.raises(CorruptMetadataError):
            tree.verify("m/v")
        assert b"".join(tree.get(f"{LEAF}/f")) == b"x"  # the child's own record still rules

    @pytest.mark.parametrize(
        "planted",
        [
            "not an object",
            {"files": {}},
            {"files": [], "puts": {}},
            {
                "files": {"f": {"size": -1, "sha256": "0" * 64, "created": "x", "put": "p"}},
                "puts": {},
            },
            {"files": {"f": {"size": 1, "sha256": "xyz", "created": "x", "put": "p"}}, "puts": {}},
            {"files": {"../f": {"size": 1}}, "puts": {}},
            {
                "files": {
                    "f": {
                        "size": 1,
                        "sha256": "0" * 64,
                        "created": "2026-01-01T00:00:00+00:00",
                        "put": "a" * 32,
                    }
                },
                "puts": {},
            },
            {"files": {}, "puts": {"not-hex": {}}},
        ],
        ids=[
            "not-object",
            "no-puts",
            "files-list",
            "negative-size",
            "bad-sha",
            "traversal-name",
            "dangling-put",
            "bad-put-id",
        ],
    )
    def test_a_malformed_record_is_corrupt_and_blocks_writes(
        self, tree: Metatree, planted: object
    ) -> None:
        tree.put(LEAF, b"x", name="f")
        rel = f"{LEAF}/metadata.json"
        metadata = orjson.loads(tree.storage.read_bytes(rel))
        metadata[RECORDS] = planted
        tree.storage.write_atomic(rel, orjson.dumps(metadata))
        raw: Any = planted
        shaped = isinstance(raw, dict) and set(raw) == {"files", "puts"}
        if shaped and all(isinstance(v, dict) for v in raw.values()) and "f" not in raw["files"]:
            # a get checks only the record it uses: f has none here, so f reads unverified,
            # as after a metatreedb put (whoever can plant records can delete one)
            assert b"".join(tree.get(f"{LEAF}/f")) == b"x"
        else:
            with pytest.raises(CorruptMetadataError):
                b"".join(tree.get(f"{LEAF}/f"))
        with pytest.raises(CorruptMetadataError):
            _ = tree.find(LEAF).files
        with unchanged(tree.storage), pytest.raises(CorruptMetadataError):
            tree.put(LEAF, b"y", name="g")
        assert b"".join(tree.get(f"{LEAF}/f", verify=False)) == b"x"
