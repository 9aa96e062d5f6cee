"""The one conformance suite every backend runs (as zarr's ``StoreTests``).

A backend's test module subclasses `BackendConformance` and overrides the `storage` fixture
to return a fresh, empty `Storage`; everything else (API, compatibility flows, the bad-input
catalogue, the hypothesis state machine) comes from here and its mixins. Tests that need a
capability skip themselves; no test asks which backend it runs on.
"""

from __future__ import annotations

import io
import pickle
from typing import TYPE_CHECKING

import pytest

from metatree import Metatree, Node
from metatree._names import LOCK_FILE
from metatree.errors import (
    AlreadyExistsError,
    CorruptDatabaseError,
    CorruptMetadataError,
    DatabaseError,
    MetatreeError,
    NotFoundError,
    PathError,
    UnresolvedPathError,
)
from metatree.testing._archives import ArchiveTests
from metatree.testing._artifacts import ArtifactStoreTests
from metatree.testing._bad_input import BadInputTests
from metatree.testing._catalog import CatalogTests
from metatree.testing._cursor import CursorTests
from metatree.testing._datastore import DataStoreTests
from metatree.testing._fsck import FsckTests
from metatree.testing._hardening_index import IndexHardeningTests
from metatree.testing._hardening_lock import LockHardeningTests
from metatree.testing._hardening_storage import StorageHardeningTests
from metatree.testing._hardening_transfer import TransferHardeningTests
from metatree.testing._helpers import run_client, snapshot
from metatree.testing._index_log import IndexLogTests
from metatree.testing._locks import LockTests
from metatree.testing._metadata_cache import MetadataCacheTests
from metatree.testing._models import ModelStoreTests
from metatree.testing._models_locks import ModelStoreLockTests
from metatree.testing._records import FileRecordTests
from metatree.testing._stateful import StatefulTests
from metatree.testing._transfer import TransferAccountingTests

if TYPE_CHECKING:
    from pathlib import Path

    from metatree._paths import LocationLike
    from metatree._storage import Storage

__all__ = ["KEYS", "BackendConformance"]

KEYS = ("model", "version", "stage")


class BackendConformance(
    BadInputTests,
    CatalogTests,
    StatefulTests,
    LockTests,
    ModelStoreLockTests,
    IndexHardeningTests,
    StorageHardeningTests,
    TransferHardeningTests,
    TransferAccountingTests,
    LockHardeningTests,
    CursorTests,
    FileRecordTests,
    ArchiveTests,
    ArtifactStoreTests,
    ModelStoreTests,
    DataStoreTests,
    FsckTests,
    IndexLogTests,
    MetadataCacheTests,
):
    """Behaviour every backend must show. Override `storage`."""

    @pytest.fixture
    def storage(self) -> Storage:
        """Return a fresh, empty storage root; each backend's test class overrides this."""
        raise NotImplementedError("override `storage` in the backend's test class")

    @pytest.fixture
    def tree(self, storage: Storage) -> Metatree:
        """Return a new three-level database on the storage."""
        return Metatree(storage, KEYS)

    @pytest.fixture
    def sample(self, tmp_path: Path) -> Path:
        """Return a small local file to put."""
        path = tmp_path / "trained.pkl"
        path.write_bytes(b"weights-v1")
        return path

    # -- opening ------------------------------------------------------------------------
    def test_create_writes_config_and_root(self, storage: Storage) -> None:
        Metatree(storage, KEYS)
        assert sorted(storage.walk_files("")) == [".metatree", "metadata.json"]
        assert storage.read_bytes("metadata.json") == b"{}"

    def test_reopen_reads_keys(self, tree: Metatree, storage: Storage) -> None:
        tree.put("m/v1/s", b"x", name="f")
        again = Metatree(storage)
        assert again.keys == KEYS
        assert again.find("m/v1/s").path == ("m", "v1", "s")

    def test_reopen_with_other_keys_is_refused(self, tree: Metatree, storage: Storage) -> None:
        with pytest.raises(DatabaseError, match="created with keys"):
            Metatree(storage, ("a", "b"))

    def test_open_without_keys_and_no_database(self, storage: Storage) -> None:
        with pytest.raises(DatabaseError, match="no database here"):
            Metatree(storage)

    def test_create_false(self, storage: Storage) -> None:
        with pytest.raises(DatabaseError):
            Metatree(storage, KEYS, create=False)
        assert snapshot(storage) == {}

    @pytest.mark.parametrize("config", [b"{not json", None], ids=["not-json", "directory"])
    def test_corrupt_config_is_damage(self, storage: Storage, config: bytes | None) -> None:
        # a config that is there but broken is damage (exit 5), not "no database" (exit 2);
        # the other broken configs: _bad_input.py's test_open_bad_config
        Metatree(storage, KEYS)
        if config is None:
            storage.remove_file(".metatree")
            storage.write_atomic(".metatree/x", b"x")
        else:
            storage.write_atomic(".metatree", config)
        before = snapshot(storage)
        for keys in (None, KEYS):
            with pytest.raises(CorruptDatabaseError) as caught:
                Metatree(storage, keys)
            assert isinstance(caught.value, CorruptMetadataError)
            assert type(caught.value).exit_code == 5
        assert snapshot(storage) == before

    def test_missing_config_is_not_damage(self, storage: Storage) -> None:
        with pytest.raises(DatabaseError) as caught:
            Metatree(storage, create=False)
        assert not isinstance(caught.value, CorruptMetadataError)

    def test_walks_report_progress(self, tree: Metatree) -> None:
        # the CLI's node counter: called with the nodes read so far, ending at all of them
        tree.put("m/v1/s", b"x", name="f")
        for name in ("search", "catalog", "verify", "fsck"):
            counts: list[int] = []
            getattr(tree, name)(progress=counts.append)
            assert counts == sorted(counts), name
            assert counts[0] >= 1, name
            assert counts[-1] == 4, (name, counts)  # root, m, m/v1, m/v1/s

    # -- put / find ---------------------------------------------------------------------
    def test_put_creates_nodes_and_index(self, tree: Metatree, sample: Path) -> None:
        assert tree.put("m/v1/prod", sample) is True  # metatreedb's return
        assert tree.url("m/v1/prod/trained.pkl") == tree.find("m/v1/prod").location + "/trained.pkl"
        assert tree.find("").metadata == {"children": ["m"]}
        assert tree.find("m").children == ["v1"]
        assert tree.find("m/v1").children == ["prod"]
        assert tree.find("m/v1/prod").metadata == {}
        assert tree.find("m/v1/prod").list() == ["trained.pkl"]

    def test_url_names_what_is_stored(self, tree: Metatree) -> None:
        assert tree.find("").put(b"x", name="about.txt") is True  # as Metatree.put
        tree.put("m/v1", b"w", name="model.bin")
        tree.find("m").update(active="v1")
        tree.find("")
        node = tree.find("m/v1").location
        assert tree.url("m/v1/model.bin") == f"{node}/model.bin"
        assert tree.url("m/<active>/model.bin") == f"{node}/model.bin"
        assert tree.url("m/v1") == node
        assert tree.url("") == tree.root
        tree.find("")
        assert tree.url("about.txt") == f"{tree.root}/about.txt"  # at the cursor: the root
        tree.find("m/v1").update(weights="model.bin")
        # a bare name is in the node under the cursor, as `get` reads it
        assert b"".join(tree.get("model.bin")) == b"w"
        assert tree.url("model.bin") == tree.url("<weights>") == f"{node}/model.bin"
        assert tree.location == node  # the cursor stays
        for missing in ["m/v1/other.bin", "m/v2", "m/v2/model.bin", "about.txt"]:
            with pytest.raises(NotFoundError):
                tree.url(missing)
        with pytest.raises(PathError):
            tree.url("m/../v1")
        tree.find("m").update(number=2)
        for unresolvable in ["m/<nope>", "m/<nope>/model.bin", "m/<number>"]:
            with pytest.raises(UnresolvedPathError):  # as `get` says, not a bare not-found
                tree.url(unresolvable)

    def test_url_in_a_transaction_names_only_committed_files(self, tree: Metatree) -> None:
        """A file a transaction put has no URL until it commits: its bytes are not there yet."""
        tree.put("m/v1", b"old", name="f")
        with tree.transaction():
            tree.put("m/v1", b"new", name="f", force=True)
            tree.put("m/v1", b"g", name="g")
            for staged in ["m/v1/f", "m/v1/g"]:
                with pytest.raises(NotFoundError, match="commit"):
                    tree.url(staged)
            assert b"".join(tree.get("m/v1/f")) == b"new"
        assert tree.storage.fs.cat_file(tree.url("m/v1/f")) == b"new"

    def test_children_keep_insertion_order(self, tree: Metatree) -> None:
        for name in ["b", "a", "c", "a0"]:
            tree.put(f"m/{name}", b"x", name="f")
        tree.put("m/a", b"y", name="g")
        assert tree.find("m").children == ["b", "a", "c", "a0"]

    def test_put_into_intermediate_and_root_nodes(self, tree: Metatree) -> None:
        tree.put("m", b"card", name="README")
        tree.put("", b"top", name="about.txt")
        assert tree.find("m").list() == ["README"]
        assert b"".join(tree.find("").get("about.txt")) == b"top"

    def test_put_bytes_fileobj_and_name(self, tree: Metatree, sample: Path) -> None:
        tree.put("m/v1", b"abc", name="a.bin")
        tree.put("m/v1", io.BytesIO(b"def"), name="b.bin")
        tree.put("m/v1", sample, name="renamed.pkl")
        node = tree.find("m/v1")
        assert node.list() == ["a.bin", "b.bin", "renamed.pkl"]
        assert b"".join(node.get("b.bin")) == b"def"
        assert b"".join(node.get("renamed.pkl")) == b"weights-v1"

    def test_put_existing_file_needs_force(self, tree: Metatree) -> None:
        tree.put("m/v1", b"old", name="f")
        with pytest.raises(AlreadyExistsError):
            tree.put("m/v1", b"new", name="f")
        assert b"".join(tree.get("m/v1/f")) == b"old"
        tree.put("m/v1", b"new", name="f", force=True)
        assert b"".join(tree.get("m/v1/f")) == b"new"

    def test_put_file_named_like_a_child_is_refused(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(AlreadyExistsError, match="child node"):
            tree.put("m", b"x", name="v1", force=True)

    def test_new_node_over_a_file_is_refused(self, tree: Metatree, storage: Storage) -> None:
        if not storage.capabilities.exclusive_names:
            pytest.skip("a key and a prefix may share a name here; checking costs a request")
        tree.put("m/v1", b"x", name="f")
        tree.put("m", b"x", name="g")
        before = snapshot(storage)
        with pytest.raises(AlreadyExistsError):
            tree.put("m/v1/f", b"y", name="g")  # the new leaf is the file
        with pytest.raises(AlreadyExistsError):
            tree.put("m/g/s", b"y", name="h")  # the first of two new nodes is the file
        assert snapshot(storage) == before

    def test_put_recursive_directory(self, tree: Metatree, tmp_path: Path) -> None:
        src = tmp_path / "ckpt"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_bytes(b"A")
        (src / "sub" / "b.txt").write_bytes(b"B")
        tree.put("m/v1", src, recursive=True)
        assert tree.find("m/v1").list() == ["ckpt"]
        out = tmp_path / "out"
        assert list(tree.get("m/v1/ckpt", out, recursive=True)) == []
        assert (out / "a.txt").read_bytes() == b"A"
        assert (out / "sub" / "b.txt").read_bytes() == b"B"
        with pytest.raises(AlreadyExistsError):
            tree.put("m/v1", src, recursive=True)
        (src / "a.txt").write_bytes(b"A2")
        tree.put("m/v1", src, recursive=True, force=True)
        tree.get("m/v1/ckpt", tmp_path / "again", recursive=True)
        assert (tmp_path / "again" / "a.txt").read_bytes() == b"A2"

    def test_find_dict_locations(self, tree: Metatree) -> None:
        tree.put("m/v1/s", b"x", name="f")
        tree.find("m").update(active="v1")
        locations: tuple[LocationLike, ...] = (
            {"model": "m", "version": "v1"},
            {"model": {"value": "m"}, "version": {"value": "v1"}},
            {"model": "m", "version": {"metadata": "active"}},
        )
        for location in locations:
            assert tree.find(location).path == ("m", "v1")

    def test_find_missing_node(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(NotFoundError):
            tree.find("m/v2")
        with pytest.raises(NotFoundError):
            tree.find("other")

    def test_find_root(self, tree: Metatree) -> None:
        assert tree.find("").path == ()
        assert tree.find("").location == tree.root

    # -- templates ----------------------------------------------------------------------
    def test_placeholders_at_every_level_and_in_file_part(self, tree: Metatree) -> None:
        tree.put("m/v1/prod", b"one", name="model.bin")
        tree.put("m/v2/prod", b"two", name="model.bin")
        tree.find("").update(default_model="m")
        tree.find("m").update(active="v2")
        tree.find("m/v2").update(stage="prod")
        tree.find("m/v2/prod").update(model_file="model.bin")
        assert tree.find("<default_model>/<active>/<stage>").path == ("m", "v2", "prod")
        data = b"".join(tree.get("<default_model>/<active>/<stage>/<model_file>"))
        assert data == b"two"
        tree.find("m").update(active="v1")
        assert tree.find("m/<active>").path == ("m", "v1")

    def test_placeholder_of_missing_key(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(UnresolvedPathError, match="active"):
            tree.find("m/<active>")

    def test_placeholder_to_a_name_only_portable_rules_refuse(self, tree: Metatree) -> None:
        """A value a location may name (metatreedb could store it) resolves; absent, not found.

        The state machine's model refused it as unresolvable (U+0080, a C1 control
        character): locations follow `check_location_name`, new names `check_name`.
        """
        tree.put("m/v1", b"x", name="f")
        tree.find("m").update(active="\x80")
        with pytest.raises(NotFoundError):
            tree.find("m/<active>")
        with pytest.raises(NotFoundError):
            tree.remove("m/<active>")
        with pytest.raises(PathError):  # a new name is held to the portable rules
            tree.put("m/\x80", b"x", name="f")

    # -- update / metadata --------------------------------------------------------------
    def test_update_keeps_json_types(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        node = tree.find("m/v1")
        value = {"n": 3, "f": 0.5, "b": True, "none": None, "l": [1, "a"], "d": {"k": [2]}}
        node.update(**value)
        assert node.metadata == value
        node.update(n=4)
        assert node.metadata["n"] == 4
        assert node.metadata["l"] == [1, "a"]

    def test_update_keeps_children(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        tree.find("m").update(active="v1")
        assert tree.find("m").metadata == {"children": ["v1"], "active": "v1"}
        tree.put("m/v2", b"x", name="f")
        assert tree.find("m").metadata == {"children": ["v1", "v2"], "active": "v1"}

    def test_stateful_cursor(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        assert tree.location == tree.find("m/v1").location
        tree.find("m")
        tree.update(active="v1")
        assert tree.metadata["active"] == "v1"
        assert tree.list() == ["v1"]
        tree.find("m/<active>")
        assert tree.location.endswith("/m/v1")
        tree.get("m/v1/f")
        assert tree.node.path == ("m", "v1")
        assert b"".join(tree.get("f")) == b"x"  # a bare name: a file of the cursor's node
        with pytest.raises(NotFoundError):
            tree.find("m/nope")
        assert len(tree.node.path) == 0  # a failed find left the cursor at the root

    def test_corrupt_metadata_is_an_error(self, tree: Metatree, storage: Storage) -> None:
        tree.put("m/v1", b"x", name="f")
        tree.find("m").update(active="v1")
        for bad in (b"", b"{not json", b"[1, 2]", b'{"children": "v1"}'):
            storage.write_atomic("m/metadata.json", bad)
            with pytest.raises(CorruptMetadataError):
                tree.find("m/v1")
            with pytest.raises(CorruptMetadataError):
                tree.put("m/v2", b"x", name="f")
        assert storage.read_bytes("m/metadata.json") == b'{"children": "v1"}'

    # -- get ----------------------------------------------------------------------------
    def test_get_streams_in_chunks(self, tree: Metatree) -> None:
        data = bytes(range(256)) * 40
        tree.put("m/v1", data, name="blob")
        chunks = list(tree.get("m/v1/blob", chunk_size=1000))
        assert b"".join(chunks) == data
        assert max(len(c) for c in chunks) <= 1000
        assert len(chunks) == 11

    @pytest.mark.parametrize("direction", ["put", "get"])
    def test_streaming_keeps_memory_bounded(
        self, tree: Metatree, tmp_path: Path, direction: str
    ) -> None:
        """A 96 MiB file goes up or down with bounded memory.

        The client's peak RSS may grow by less than 40 MiB (chunks are 8 MiB); it is measured
        in a child process, since the test servers run in this one.
        """
        if tree.storage.capabilities.data_in_memory:
            pytest.skip("the filesystem itself holds file contents in memory")
        size = 96 * 2**20 + 12345
        source = tmp_path / "big.bin"
        with open(source, "wb") as out:
            out.writelines(
                bytes([i % 251]) * min(2**20, size - i * 2**20) for i in range(size // 2**20 + 1)
            )
        if direction == "get":
            tree.put("m/v1", source)
        growth, seen = run_client(tree, direction, str(source))
        assert seen == size
        assert growth < 40 * 2**20, f"{direction} grew the RSS by {growth / 2**20:.1f} MiB"

    def test_get_empty_file(self, tree: Metatree) -> None:
        tree.put("m/v1", b"", name="empty")
        assert list(tree.get("m/v1/empty")) == []

    def test_get_outfile(self, tree: Metatree, tmp_path: Path) -> None:
        tree.put("m/v1", b"payload", name="f")
        out = tmp_path / "copy"
        assert b"".join(tree.get("m/v1/f", out)) == b"payload"
        assert out.read_bytes() == b"payload"
        with pytest.raises(AlreadyExistsError):
            tree.get("m/v1/f", out)

    def test_get_missing(self, tree: Metatree, tmp_path: Path) -> None:
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(NotFoundError):
            tree.get("m/v1/nope")
        with pytest.raises(NotFoundError):
            tree.get("m/v9/f")
        with pytest.raises(NotFoundError):
            tree.get("m/v1/nope", tmp_path / "out")
        assert not (tmp_path / "out").exists()

    def test_get_of_a_node_is_not_a_file(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(NotFoundError):
            tree.get("m/v1")

    def test_progress_callback(self, tree: Metatree, tmp_path: Path) -> None:
        from fsspec.callbacks import Callback

        data = b"z" * 100_000
        seen = Callback()
        tree.put("m/v1", data, name="f", callback=seen)
        assert seen.size == len(data)
        assert seen.value == len(data)

    # -- exists / walk / remove ---------------------------------------------------------
    def test_exists(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        tree.find("m").update(active="v1")
        assert tree.exists("m")
        assert tree.exists("m/v1")
        assert tree.exists("m/<active>/f")
        assert tree.exists("m/v1/f")
        assert not tree.exists("m/v2")
        assert not tree.exists("m/v1/g")
        assert not tree.exists("m/<nope>")
        assert tree.exists("")
        with pytest.raises(PathError):
            tree.exists("m/../x")

    def test_walk(self, tree: Metatree) -> None:
        tree.put("a/1", b"x", name="f")
        tree.put("a/2/s", b"x", name="f")
        tree.put("b", b"x", name="f")
        paths = [node.path for node, _ in tree.walk()]
        assert paths == [(), ("a",), ("a", "1"), ("a", "2"), ("a", "2", "s"), ("b",)]
        assert [node.path for node, _ in tree.walk("a/2")] == [("a", "2"), ("a", "2", "s")]

    def test_remove_file(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        tree.put("m/v1", b"y", name="g")
        tree.remove("m/v1/f")
        assert tree.find("m/v1").list() == ["g"]
        with pytest.raises(NotFoundError):
            tree.remove("m/v1/f")

    def test_remove_subtree_keeps_index_consistent(self, tree: Metatree, storage: Storage) -> None:
        tree.put("m/v1/s", b"x", name="f")
        tree.put("m/v2/s", b"x", name="f")
        with pytest.raises(PathError, match="not empty"):
            tree.remove("m/v1")
        tree.remove("m/v1", recursive=True)
        assert tree.find("m").children == ["v2"]
        assert not any(p.startswith("m/v1/") for p in storage.walk_files(""))
        tree.put("m/v1", b"again", name="f")
        assert tree.find("m").children == ["v2", "v1"]
        assert tree.find("m/v1").list() == ["f"]

    def test_remove_root_is_refused(self, tree: Metatree) -> None:
        with pytest.raises(PathError):
            tree.remove("")

    # -- handles ------------------------------------------------------------------------
    def test_node_handle(self, tree: Metatree) -> None:
        tree.put("m/v1/s", b"x", name="f")
        node = tree.find("m")
        assert isinstance(node, Node)
        assert (node.name, node.key, node.is_leaf) == ("m", "model", False)
        assert [c.path for c in node.iter_children()] == [("m", "v1")]
        assert node.child("v1") == tree.find("m/v1")
        with pytest.raises(NotFoundError):
            node.child("v2")
        leaf = tree.find("m/v1/s")
        assert leaf.is_leaf
        assert leaf.exists
        tree.remove("m/v1/s", recursive=True)
        assert not leaf.exists

    def test_node_put(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        node = tree.find("m/v1")
        node.put(b"more", name="g")
        assert node.list() == ["f", "g"]

    def test_pickle_round_trip(self, tree: Metatree) -> None:
        tree.put("m/v1", b"x", name="f")
        again = pickle.loads(pickle.dumps(tree))
        assert again.find("m/v1").list() == ["f"]
        for error in (
            NotFoundError("a/b", "node"),
            AlreadyExistsError("a/b"),
            PathError("a/../b", "bad"),
            UnresolvedPathError("a/<x>", "missing"),
        ):
            copy = pickle.loads(pickle.dumps(error))
            assert type(copy) is type(error)
            assert str(copy) == str(error)
            assert isinstance(copy, MetatreeError)

    def test_lock_released_after_each_write(self, tree: Metatree, storage: Storage) -> None:
        tree.put("m/v1", b"x", name="f")
        tree.find("m").update(a=1)
        assert storage.kind(LOCK_FILE) is None

    def test_locking_disabled(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS, locking_enabled=False)
        tree.put("m/v1", b"x", name="f")
        assert b'"locking_enabled":false' in storage.read_bytes(".metatree")
