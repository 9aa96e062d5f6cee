"""Values kept by reference (issue 13): DataStore and ArchiveStore as metadata values.

Part of the conformance suite: every test runs on every backend. Values of the core
serializers (bytes, JSON) always; numpy, pandas and pyarrow ones where those are installed
(they are optional extras of metatree).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import re
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import orjson
import pytest

from metatree import Metatree
from metatree._storage import as_storage
from metatree.datastore import ArchiveStore, DataStore
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptMetadataError,
    IntegrityError,
    MetadataError,
    PathError,
    StorageError,
)
from metatree.serializers import Serializer
from metatree.testing._helpers import snapshot, unchanged

if TYPE_CHECKING:
    from pathlib import Path

    from metatree._storage import Storage

__all__ = ["DataStoreTests"]

KEYS = ("model", "version", "stage")
NODE = "m/v1"


@dataclasses.dataclass(frozen=True)
class _Tagged:
    text: str


class _Footer(Serializer):
    """A user serializer whose `load` seeks: its payload's length is in a footer at the end."""

    name = "footer-test"
    suffix = ".ftr"

    def accepts(self, value: object) -> bool:
        return isinstance(value, _Tagged)

    def dump(self, value: object, out: BinaryIO) -> None:
        text = cast("_Tagged", value).text.encode()
        out.write(text + b"|" + str(len(text)).encode())

    def load(self, source: BinaryIO) -> object:
        source.seek(-1, io.SEEK_END)  # the footer first, as zip and torch archives do
        size = int(source.read(1))
        source.seek(0)
        return _Tagged(source.read(size).decode())


def _rewrite(storage: Storage, name: str, data: bytes) -> None:
    """Replace a value's file of `NODE` and its record, as another client can (metatree won't)."""
    storage.write_atomic(f"{NODE}/{name}", data)
    metadata = orjson.loads(storage.read_bytes(f"{NODE}/metadata.json"))
    record = metadata[".metatree.records"]["files"][name]
    record.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    storage.write_atomic(f"{NODE}/metadata.json", orjson.dumps(metadata))


class DataStoreTests:
    """A DataStore's values are files of their node; the metadata keeps references."""

    @pytest.fixture
    def node_tree(self, storage: Storage) -> Metatree:
        tree = Metatree(storage, KEYS)
        tree.put(f"{NODE}/s", b"x", name="f")
        return tree

    def test_datastore_round_trip_is_lazy(
        self, node_tree: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        node = node_tree.find(NODE)
        node.update(results=DataStore(raw=b"\x00bytes", doc={"a": [1, 2.5, None]}), note="n")
        stored = orjson.loads(storage.read_bytes(f"{NODE}/metadata.json"))["results"]
        assert stored[".metatree.ref"] == "datastore"
        urls = sorted(v["url"] for v in stored["values"].values())
        assert [re.sub(r"\.[0-9a-f]{8}\.", ".<token>.", u) for u in urls] == [
            f"{NODE}/results.doc.<token>.json",
            f"{NODE}/results.raw.<token>.bin",
        ]
        reads: list[str] = []
        real = type(storage).iter_bytes

        def counted(self: Storage, rel: str, *args: Any, **kwargs: Any) -> Any:
            reads.append(rel)
            return real(self, rel, *args, **kwargs)

        monkeypatch.setattr(type(storage), "iter_bytes", counted)  # how files are read
        results = node_tree.find(NODE).metadata["results"]
        assert isinstance(results, DataStore)
        assert reads == []  # nothing loaded yet
        assert results.raw == b"\x00bytes"
        assert [r.rsplit("/", 1)[-1].split(".")[:2] for r in reads] == [["results", "raw"]]
        assert results["doc"] == {"a": [1, 2.5, None]}
        assert len(reads) == 2
        assert node_tree.find(NODE).metadata["note"] == "n"

    def test_datastore_numeric_values(self, node_tree: Metatree) -> None:
        np = pytest.importorskip("numpy")
        pa = pytest.importorskip("pyarrow")
        table = pa.table({"a": [1, None, 3], "b": ["x", "y", None]})
        weights = np.arange(12, dtype="float32").reshape(3, 4)
        node_tree.find(NODE).update(results=DataStore(weights=weights, table=table))
        results = node_tree.find(NODE).metadata["results"]
        assert results.weights.dtype == weights.dtype
        assert (results.weights == weights).all()
        assert results.table.equals(table)

    def test_references_survive_a_copy_to_another_backend(
        self, node_tree: Metatree, storage: Storage
    ) -> None:
        node_tree.find(NODE).update(results=DataStore(raw=b"abc"))
        copy = as_storage(f"memory://copy-{id(self)}-{id(storage)}")
        for rel, data in snapshot(storage).items():
            copy.put(data, rel)
        assert Metatree(copy).find(NODE).metadata["results"].raw == b"abc"

    def test_replacing_or_removing_leaves_no_orphan(
        self, node_tree: Metatree, storage: Storage
    ) -> None:
        node = node_tree.find(NODE)
        node.update(results=DataStore(a=b"1", b=b"2"))
        node.update(results=DataStore(a=b"one"))  # new files; the old ones go
        (file,) = [n for n in node.list() if n != "s"]
        assert file.startswith("results.a.")
        assert node.metadata["results"].a == b"one"
        node.update(results=5)  # a plain value replaces the reference
        assert node.list() == ["s"]
        assert set(node.files) == set()
        node.update(results=DataStore(a=b"again"))
        node_tree.remove(NODE, recursive=True)
        assert not any(rel.startswith(f"{NODE}/") for rel in snapshot(storage))

    def test_a_transaction_commits_values_and_references_together(
        self, node_tree: Metatree
    ) -> None:
        node = node_tree.find(NODE)
        with contextlib.suppress(RuntimeError), node_tree.transaction():
            node.update(results=DataStore(a=b"1"))
            raise RuntimeError("abort")
        assert "results" not in node.metadata
        assert node.list() == ["s"]

    def test_archive_store_round_trip(self, node_tree: Metatree, tmp_path: Path) -> None:
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "a.txt").write_bytes(b"a")
        (src / "b.bin").write_bytes(b"b" * 100)
        node_tree.find(NODE).update(code=ArchiveStore(src))
        read = node_tree.find(NODE).metadata["code"]
        assert isinstance(read, ArchiveStore)
        out = read.extract(tmp_path / "out")
        assert (tmp_path / "out" / "sub" / "a.txt").read_bytes() == b"a"
        assert out == str(tmp_path / "out")
        with pytest.raises(MetadataError):
            node_tree.find(NODE).update(again=read)  # stored where it is
        with pytest.raises(PathError):
            ArchiveStore(5)  # type: ignore[arg-type]

    def test_pickle_only_when_asked(self, node_tree: Metatree) -> None:
        node = node_tree.find(NODE)
        with unchanged(node_tree.storage), pytest.raises(MetadataError):
            node.update(results=DataStore(obj={1, 2}))  # a set: no serializer but pickle
        node.update(results=DataStore(obj={1, 2}, allow_pickle=True))
        results = node.metadata["results"]
        with pytest.raises(MetadataError):
            _ = results.obj  # reading a pickle runs code: the reader opts in too
        results.allow_pickle = True
        assert results.obj == {1, 2}

    @pytest.mark.parametrize(
        ("value", "error"),
        [
            (DataStore({"a/b": b"x"}), MetadataError),
            (DataStore({"..": b"x"}), MetadataError),
            (DataStore({"b.c": b"x"}), MetadataError),  # a.b + c would be the same file
            (DataStore({"x": b"1", "X": b"2"}), MetadataError),  # one file on Windows
            (DataStore({"": b"x"}), MetadataError),
            (DataStore(x=object()), MetadataError),
        ],
        ids=["slash-key", "dotdot-key", "dotted-key", "case-twins", "empty-key", "no-serializer"],
    )
    def test_bad_values_write_nothing(
        self, node_tree: Metatree, value: DataStore, error: type[Exception]
    ) -> None:
        with unchanged(node_tree.storage), pytest.raises(error):
            node_tree.find(NODE).update(results=value)

    def test_a_forged_reference_is_refused(self, node_tree: Metatree) -> None:
        forged = {".metatree.ref": "datastore", "values": {}}
        with unchanged(node_tree.storage), pytest.raises(MetadataError):
            node_tree.find(NODE).update(results=forged)

    @pytest.mark.parametrize(
        "url",
        [
            "m/v2/x.bin",
            "m/v1/../v2/x.bin",
            "x.bin",
            "m/v1/",
            "m/v1/.metatree.lock",
            "m/v1/user.bin",  # a file of the node no value wrote: the user's own
            "m/v1/other.a.0123abcd.bin",  # another field's file
            "m/v1/results.b.0123abcd.bin",  # another key's file
        ],
    )
    def test_a_planted_reference_outside_its_node_is_corrupt(
        self, node_tree: Metatree, storage: Storage, url: str
    ) -> None:
        node_tree.put("m/v2/s", b"keep", name="x.bin")
        node_tree.find(NODE).put(b"mine", name="user.bin")
        metadata = orjson.loads(storage.read_bytes(f"{NODE}/metadata.json"))
        metadata["results"] = {
            ".metatree.ref": "datastore",
            "values": {"a": {"url": url, "serializer": "bytes"}},
        }
        storage.write_atomic(f"{NODE}/metadata.json", orjson.dumps(metadata))
        with unchanged(storage):
            with pytest.raises(CorruptMetadataError):
                _ = node_tree.find(NODE).metadata
            with pytest.raises(CorruptMetadataError):
                node_tree.find(NODE).update(results=1)  # its clean-up must not reach m/v2
        assert b"".join(node_tree.get("m/v2/s/x.bin")) == b"keep"
        assert b"".join(node_tree.get(f"{NODE}/user.bin")) == b"mine"

    def _stored_value(self, node_tree: Metatree, storage: Storage) -> tuple[str, bytes]:
        """Store ``results.a``; return its file's name and bytes."""
        node = node_tree.find(NODE)
        node.update(results=DataStore(a=b"value"))
        (name,) = [n for n in node.list() if n.startswith("results.a.")]
        return name, storage.read_bytes(f"{NODE}/{name}")

    def test_a_value_file_without_its_record_is_corrupt(
        self, node_tree: Metatree, storage: Storage
    ) -> None:
        name, _ = self._stored_value(node_tree, storage)
        metadata = orjson.loads(storage.read_bytes(f"{NODE}/metadata.json"))
        del metadata[".metatree.records"]["files"][name]  # as a hand edit or a planter leaves it
        storage.write_atomic(f"{NODE}/metadata.json", orjson.dumps(metadata))
        results = node_tree.find(NODE).metadata["results"]
        with pytest.raises(CorruptMetadataError, match="no record"):
            _ = results.a  # unchecked bytes are never loaded

    def test_a_value_changed_behind_metatrees_back_is_an_integrity_error(
        self, node_tree: Metatree, storage: Storage
    ) -> None:
        name, _ = self._stored_value(node_tree, storage)
        results = node_tree.find(NODE).metadata["results"]
        storage.write_atomic(f"{NODE}/{name}", b"VALUE")  # same size, not the recorded bytes
        with pytest.raises(IntegrityError):
            _ = results.a

    def test_bytes_after_a_value_are_corrupt(self, node_tree: Metatree, storage: Storage) -> None:
        np = pytest.importorskip("numpy")
        node = node_tree.find(NODE)
        node.update(results=DataStore(w=np.arange(4.0)))
        (name,) = [n for n in node.list() if n.startswith("results.w.")]
        data = storage.read_bytes(f"{NODE}/{name}")
        _rewrite(storage, name, data + b"\x00" * 8)  # recorded: only the format can tell
        with pytest.raises(CorruptMetadataError, match="data bytes"):
            _ = node_tree.find(NODE).metadata["results"].w
        node.update(results=DataStore(p={1}, allow_pickle=True))
        (name,) = [n for n in node.list() if n.startswith("results.p.")]
        data = storage.read_bytes(f"{NODE}/{name}")
        _rewrite(storage, name, data + b"junk")
        results = node_tree.find(NODE).metadata["results"]
        results.allow_pickle = True
        with pytest.raises(CorruptMetadataError, match="bytes after"):
            _ = results.p

    def test_a_loads_failure_names_its_cause(self, node_tree: Metatree, storage: Storage) -> None:
        """Damage is IntegrityError, a forged record allocates nothing, a race is a conflict."""
        np = pytest.importorskip("numpy")
        pa = pytest.importorskip("pyarrow")
        node = node_tree.find(NODE)
        node.update(results=DataStore(w=np.arange(8.0), t=pa.table({"a": [1, 2]}), j={"k": 1}))
        names = {n.split(".")[1]: n for n in node.list() if n.startswith("results.")}
        metadata = orjson.loads(storage.read_bytes(f"{NODE}/metadata.json"))
        for key in ("w", "t"):
            metadata[".metatree.records"]["files"][names[key]]["size"] = 2**50
        storage.write_atomic(f"{NODE}/metadata.json", orjson.dumps(metadata))
        results = node_tree.find(NODE).metadata["results"]
        for key in ("w", "t"):  # the header or the buffer would claim a petabyte
            with pytest.raises(IntegrityError):
                results[key]
        for key in ("t", "j"):  # flipped bytes: the data's damage, not the format's
            data = bytearray(storage.read_bytes(f"{NODE}/{names[key]}"))
            data[len(data) // 2] ^= 0xFF
            storage.write_atomic(f"{NODE}/{names[key]}", bytes(data))
        results = node_tree.find(NODE).metadata["results"]
        for key in ("t", "j"):
            with pytest.raises(IntegrityError):
                results[key]
        node.update(results=DataStore(w=np.arange(8.0)))
        results = node_tree.find(NODE).metadata["results"]
        (name,) = [n for n in node.list() if n.startswith("results.w.")]
        larger = io.BytesIO()
        np.save(larger, np.arange(100.0))
        _rewrite(storage, name, larger.getvalue())  # a co-writer, after the read
        with pytest.raises(ConflictError):
            _ = results.w

    def test_a_values_file_is_neither_removed_nor_replaced_by_hand(
        self, node_tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        name, _ = self._stored_value(node_tree, storage)
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "a.txt").write_bytes(b"a")
        node_tree.find(NODE).update(code=ArchiveStore(tmp_path / "src"))
        (archive,) = [n for n in node_tree.find(NODE).list() if n.startswith("code.")]
        for file in (name, archive, name.upper()):  # case folds on Windows and macOS
            with unchanged(storage), pytest.raises(PathError, match="update or remove that field"):
                node_tree.remove(f"{NODE}/{file}")
        with unchanged(storage), pytest.raises(PathError, match="holds the value"):
            node_tree.find(NODE).put(b"other", name=name, force=True)
        with pytest.raises(AlreadyExistsError):
            node_tree.find(NODE).put(b"other", name=name)
        assert node_tree.find(NODE).metadata["results"].a == b"value"
        node_tree.find(NODE).update(results=None)  # the field's files go with it
        assert name not in node_tree.find(NODE).list()

    def test_a_user_serializer_that_seeks_gets_a_checked_local_copy(
        self, node_tree: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from metatree import serializers

        monkeypatch.setattr(serializers, "_registered", [])  # this test's registration only
        serializers.register_serializer(_Footer())
        node = node_tree.find(NODE)
        node.update(results=DataStore(v=_Tagged("seek")))
        assert node_tree.find(NODE).metadata["results"].v == _Tagged("seek")
        (name,) = [n for n in node.list() if n.startswith("results.v.")]
        storage.write_atomic(f"{NODE}/{name}", b"X" * 6 + b"|4")  # same size, changed bytes
        with pytest.raises(IntegrityError):  # checked before its load could see them
            _ = node_tree.find(NODE).metadata["results"].v

    def test_a_dotted_field_is_refused(self, node_tree: Metatree) -> None:
        with unchanged(node_tree.storage), pytest.raises(MetadataError):
            node_tree.find(NODE).update(**{"a.b": DataStore(c=[2])})

    def test_a_users_own_file_is_never_overwritten_nor_removed(self, node_tree: Metatree) -> None:
        node = node_tree.find(NODE)
        node.put(b"USER DATA", name="results.x.bin")
        node.update(results=DataStore(x=b"ds"))
        node.update(results=None)
        assert b"".join(node.get("results.x.bin")) == b"USER DATA"

    def test_a_failed_update_keeps_the_old_value(
        self, node_tree: Metatree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The metadata write fails after the new files are stored: the old value still reads."""
        node = node_tree.find(NODE)
        node.update(results=DataStore(a=b"OLD"))
        db_type = type(node_tree._db)
        real = db_type.put_metadata

        def failing(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
            if tuple(path) == tuple(NODE.split("/")):
                raise StorageError("metadata.json", "a failing disk")
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(db_type, "put_metadata", failing)
        with pytest.raises(StorageError):
            node.update(results=DataStore(a=b"NEW"))
        monkeypatch.undo()
        assert node_tree.find(NODE).metadata["results"].a == b"OLD"

    def test_dict_operations_load_the_values(self, node_tree: Metatree) -> None:
        node_tree.find(NODE).update(results=DataStore(a=b"1", b=[1, 2]))
        read = node_tree.find(NODE).metadata["results"]
        assert read == {"a": b"1", "b": [1, 2]}
        assert dict(read) == {**read} == read.copy() == {"a": b"1", "b": [1, 2]}
        assert read.pop("a") == b"1"
        assert read.setdefault("b") == [1, 2]
