"""Format v2: a large node's children in a log of pieces (docs/format.md, "Format v2").

Every backend runs these with a threshold of 3 children, so the log, its compaction, its
fences against a stalled writer and its checks of stored pieces are exercised on each one.
The whole conformance suite also runs a second time at that threshold
(tests/backends/test_index_v2.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest

from metatree import Metatree
from metatree._core import index
from metatree.errors import CorruptMetadataError, LockLostError, MetadataError
from metatree.testing._helpers import snapshot, unchanged

if TYPE_CHECKING:
    from collections.abc import Callable

    from metatree._storage import Storage

__all__ = ["IndexLogTests"]

KEYS = ("model", "version", "stage")


def _log_dir(storage: Storage, node: str = "m") -> str:
    marker = orjson.loads(storage.read_bytes(f"{node}/metadata.json"))[index.INDEX_KEY]
    return f"{node}/{index.INDEX_DIR}/{marker['generation']}"


def _pieces(storage: Storage, node: str = "m") -> list[str]:
    return sorted(storage.listdir(_log_dir(storage, node)))


def _grow(tree: Metatree, n: int, start: int = 0) -> list[str]:
    names = [f"v{i}" for i in range(start, start + n)]
    for name in names:
        tree.put(f"m/{name}", b"w", name="f")
    return names


class IndexLogTests:
    """Format v2 on this backend (fixture `storage`, as the rest of the suite)."""

    @pytest.fixture
    def big(self, storage: Storage) -> Metatree:
        """Return a tree whose node ``m`` holds v0..v5: v0..v2 inline, v3..v5 in 3 pieces."""
        tree = Metatree(storage, KEYS, index_threshold=3)
        _grow(tree, 6)
        return tree

    @pytest.mark.parametrize("piece", [1, 2], ids=["switch", "append"])
    def test_index_log_piece_whose_retried_create_was_refused(
        self, storage: Storage, piece: int
    ) -> None:
        """A piece's create landed, its reply was lost, and the client's retry was refused.

        gcsfs and the S3 and Azure SDKs retry a request whose reply was lost: the retry of an
        exclusive create that had landed is refused. The switch to v2 (the log's first
        piece) read that as "a new index log is not empty" (CorruptMetadataError); the
        piece holds our random id, so it is ours, as for later pieces.
        """
        tree = Metatree(storage, KEYS, index_threshold=3)
        _grow(tree, 3)
        original = storage.create_exclusive
        refused: list[str] = []

        def landed_but_refused(rel: str, data: bytes) -> bool:
            created = original(rel, data)
            if created and rel.endswith(f"{piece:020d}.json") and not refused:
                refused.append(rel)
                return False
            return created

        storage.create_exclusive = landed_but_refused  # type: ignore[method-assign]
        try:
            _grow(tree, 2, start=3)
        finally:
            del storage.create_exclusive
        assert refused
        assert Metatree(storage).find("m").children == [f"v{i}" for i in range(5)]

    def test_index_log_past_the_threshold(self, big: Metatree, storage: Storage) -> None:
        stored = orjson.loads(storage.read_bytes("m/metadata.json"))
        assert stored["children"] == ["v0", "v1", "v2"]  # the mirror: what metatreedb reads
        assert set(stored[index.INDEX_KEY]) == {"format", "generation", "seq"}
        assert _pieces(storage) == [f"{n:020d}.json" for n in (1, 2, 3)]
        expected = [f"v{i}" for i in range(6)]
        for tree in (big, Metatree(storage)):  # a fresh reader has nothing cached
            assert tree.find("m").children == expected
            assert tree.find("m").metadata == {"children": expected}
            assert all(tree.exists(f"m/{name}/f") for name in expected)
            assert [n.path for n, _ in tree.walk("m")][1:] == [("m", n) for n in expected]
            assert sorted(tree.find("m").list()) == expected
        assert not big.exists("m/v6")

    def test_index_log_put_writes_one_small_piece(self, big: Metatree, storage: Storage) -> None:
        before = snapshot(storage)
        big.put("m/new", b"w", name="f")
        after = snapshot(storage)
        changed = sorted(k for k in after if before.get(k) != after[k])
        assert changed == [f"{_log_dir(storage)}/{4:020d}.json", "m/new/f", "m/new/metadata.json"]
        piece = orjson.loads(after[changed[0]])
        assert piece == {"seq": 4, "id": piece["id"], "add": ["new"]}

    def test_index_log_remove_and_add_again(self, big: Metatree, storage: Storage) -> None:
        big.remove("m/v1", recursive=True)  # inline: the mirror is rewritten
        big.remove("m/v4", recursive=True)  # logged: a piece removes it
        assert orjson.loads(storage.read_bytes("m/metadata.json"))["children"] == ["v0", "v2"]
        big.put("m/v4", b"again", name="f")
        expected = ["v0", "v2", "v3", "v5", "v4"]
        assert big.find("m").children == expected
        assert Metatree(storage).find("m").children == expected
        assert b"".join(Metatree(storage).get("m/v4/f")) == b"again"

    def test_index_log_transaction_commits_one_piece(self, big: Metatree, storage: Storage) -> None:
        with big.transaction():
            _grow(big, 5, start=10)
            big.remove("m/v12", recursive=True)
            big.find("m").update(note="bulk")
        assert _pieces(storage)[-1] == f"{4:020d}.json"
        piece = orjson.loads(storage.read_bytes(f"{_log_dir(storage)}/{4:020d}.json"))
        assert piece["add"] == ["v10", "v11", "v13", "v14"]
        assert piece["doc"]["note"] == "bulk"  # one object commits both (docs/format.md)
        fresh = Metatree(storage).find("m")
        assert fresh.children[-4:] == ["v10", "v11", "v13", "v14"]
        assert fresh.metadata["note"] == "bulk"

    def test_index_log_compaction(
        self, big: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(index, "COMPACT_PIECES", 4)
        _grow(big, 3, start=6)  # pieces 4, 5, 6: the 4th since the start folds them
        assert _pieces(storage) == [f"{5:020d}.json", f"{6:020d}.json", f"snapshot-{4:020d}.json"]
        expected = [f"v{i}" for i in range(9)]
        assert Metatree(storage).find("m").children == expected
        _grow(big, 4, start=9)  # 7, 8 then the fold at 8; pieces 9, 10 follow
        assert _pieces(storage) == [f"{9:020d}.json", f"{10:020d}.json", f"snapshot-{8:020d}.json"]
        assert Metatree(storage).find("m").children == [f"v{i}" for i in range(13)]

    def test_index_log_reindex_both_ways(self, big: Metatree, storage: Storage) -> None:
        expected = [f"v{i}" for i in range(6)]
        assert big.reindex("m", format=1) == 6
        assert orjson.loads(storage.read_bytes("m/metadata.json")) == {"children": expected}
        assert not any(index.INDEX_DIR in rel for rel in storage.walk_files(""))
        assert Metatree(storage).find("m").children == expected
        assert big.reindex("m", format=2) == 6
        big.put("m/v6", b"w", name="f")
        assert orjson.loads(storage.read_bytes("m/metadata.json"))["children"] == expected
        assert Metatree(storage).find("m").children == [*expected, "v6"]
        assert big.reindex("m", format=2) == 7  # already: nothing happens
        big.put("m/v1/x", b"w", name="f")
        with pytest.raises(MetadataError), unchanged(storage):
            big.reindex("m/v1/x", format=1)
        with pytest.raises(MetadataError), unchanged(storage):
            big.reindex("m", format=3)

    def test_index_log_catalog_and_search(self, big: Metatree) -> None:
        big.find("m/v4").update(acc=0.9)
        big.find("m/v1").update(acc=0.5)
        assert big.catalog(depth=2).num_rows == 6
        assert big.search({"acc": (">", 0.8)}).paths == ["m/v4"]

    # -- a writer whose lease lapsed ------------------------------------------------------------
    def test_index_log_stalled_writer_cannot_take_a_committed_slot(self, big: Metatree) -> None:
        db = big._db
        metadata, version = db.read_for_write(("m",))  # read at piece 3
        big.put("m/other", b"w", name="f")  # another holder commits piece 4
        index.append(metadata, "late", db.index_threshold)
        with pytest.raises(LockLostError):
            db.put_metadata(("m",), metadata, expect=version)
        assert "late" not in Metatree(big.storage).find("m").children

    def test_index_log_stalled_writer_after_a_compaction(
        self, big: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        db = big._db
        metadata, version = db.read_for_write(("m",))  # read at piece 3
        monkeypatch.setattr(index, "COMPACT_PIECES", 2)
        _grow(big, 2, start=6)  # 4 folds pieces 1-4 (deleted), then 5
        assert _pieces(storage) == [f"{5:020d}.json", f"snapshot-{4:020d}.json"]
        index.append(metadata, "late", db.index_threshold)
        with pytest.raises(LockLostError):  # slot 4 is free again, but folded
            db.put_metadata(("m",), metadata, expect=version)
        assert _pieces(storage) == [f"{5:020d}.json", f"snapshot-{4:020d}.json"]
        assert "late" not in Metatree(storage).find("m").children

    def test_index_log_stalled_writer_after_a_reindex(self, big: Metatree) -> None:
        """A lapsed writer's piece lands in a log `reindex` deleted: refused, not lost."""
        db = big._db
        for formats in ((1,), (1, 2)):
            metadata, version = db.read_for_write(("m",))
            for fmt in formats:
                big.reindex("m", format=fmt)
            index.append(metadata, "late", db.index_threshold)
            with pytest.raises(LockLostError):
                db.put_metadata(("m",), metadata, expect=version)
            assert "late" not in Metatree(big.storage).find("m").children
            big.reindex("m", format=2)

    def test_index_log_stalled_transaction_on_a_new_log(
        self, big: Metatree, storage: Storage
    ) -> None:
        """A transaction's first piece of a log replaced meanwhile: refused, not lost.

        The fence on a log's first piece asks metadata.json's marker; inside a transaction
        it must ask the stored one, not the transaction's copy (which names the old log).
        """
        big.reindex("m", format=1)
        big.reindex("m", format=2)  # a log with no piece yet: the next commit is piece 1
        old = _log_dir(storage)

        def lapsed() -> None:
            with big.transaction():
                big.find("m").update(color="red")  # the transaction holds m's metadata
                # our lease lapsed; another writer replaced the log (reindex 1 then 2)
                stored = orjson.loads(storage.read_bytes("m/metadata.json"))
                stored[index.INDEX_KEY]["generation"] = "f" * 32
                storage.remove_tree(old)
                storage.write_atomic("m/metadata.json", orjson.dumps(stored))
                big.put("m/late", b"w", name="f")

        with pytest.raises(LockLostError):
            lapsed()
        assert storage.kind(f"{old}/{1:020d}.json") is None  # taken back
        assert "late" not in Metatree(storage).find("m").children

    def test_index_log_transaction_is_one_commit(
        self, big: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A writer killed between its piece and metadata.json: both changes are committed."""
        db = big._db
        real = db.put_inline
        calls: list[object] = []

        def dies_after_the_piece(path: tuple[str, ...], *args: Any, **kwargs: Any) -> None:
            if path != ("m",):  # the new node's own metadata.json
                return real(path, *args, **kwargs)
            calls.append(path)
            raise KeyboardInterrupt  # m's piece is written; its metadata.json never is

        monkeypatch.setattr(db, "put_inline", dies_after_the_piece)

        def transaction() -> None:
            with big.transaction():
                big.find("m").update(color="red")
                big.put("m/new", b"w", name="f")
                big.remove("m/v1", recursive=True)  # inline: the mirror changes too

        with pytest.raises(KeyboardInterrupt):
            transaction()
        assert len(calls) == 1
        monkeypatch.setattr(db, "put_inline", real)
        fresh = Metatree(storage)
        assert fresh.find("m").metadata == {
            "children": ["v0", "v2", "v3", "v4", "v5", "new"],
            "color": "red",
        }
        fresh.put("m/later", b"w", name="f")  # the next write stores that metadata inline
        stored = orjson.loads(storage.read_bytes("m/metadata.json"))
        assert stored["color"] == "red"
        assert stored["children"] == ["v0", "v2"]
        assert Metatree(storage).find("m").children[-2:] == ["new", "later"]

    def test_index_log_name_both_inline_and_logged_is_removed(
        self, big: Metatree, storage: Storage
    ) -> None:
        stored = orjson.loads(storage.read_bytes("m/metadata.json"))
        stored["children"].append("v4")  # as metatreedb appends to the inline list
        storage.write_atomic("m/metadata.json", orjson.dumps(stored))
        big.remove("m/v4", recursive=True)
        assert "v4" not in Metatree(storage).find("m").children
        big.put("m/v4", b"again", name="f")
        assert Metatree(storage).find("m").children.count("v4") == 1

    def test_index_log_lost_reply_of_a_commit(
        self, big: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The piece was created but the reply lost (a retry then sees it exist): ours."""
        real = storage.create_exclusive

        def lost_reply(rel: str, data: bytes) -> bool:
            created = real(rel, data)
            return created and index.INDEX_DIR not in rel  # the lock's own creates answered

        monkeypatch.setattr(storage, "create_exclusive", lost_reply)
        assert big.put("m/new", b"w", name="f") is True
        assert Metatree(storage).find("m").children[-1] == "new"

    def test_index_log_planted_entries_are_found_and_cleared(
        self, big: Metatree, storage: Storage
    ) -> None:
        log = _log_dir(storage)
        storage.write_atomic(f"{log}/{4:020d}.json/x", b"{}")  # a directory at the next name
        storage.write_atomic(f"{log}/{'٤' * 20}.json", b"{}")  # digits, but not ASCII ones
        if storage.capabilities.exclusive_names:  # the directory blocks the next piece
            with pytest.raises(CorruptMetadataError):
                big.put("m/new", b"w", name="f")
        else:  # S3: a key and a prefix may share a name; the piece is found beside it
            big.put("m/new", b"w", name="f")
            assert Metatree(storage).find("m").children[-1] == "new"
        report = big.fsck()
        assert {f.kind for f in report.findings} >= {"leftover-temporary"}
        assert big.fsck(repair=True).clean
        big.put("m/new2", b"w", name="f")
        assert Metatree(storage).find("m").children[-1] == "new2"

    # -- stored pieces are input ----------------------------------------------------------------
    @pytest.mark.parametrize(
        "damage",
        [
            "marker-format",
            "marker-generation",
            "marker-extra-key",
            "piece-escape",
            "piece-not-json",
            "piece-wrong-seq",
            "piece-seq-bool",
            "piece-names-not-strings",
            "piece-gap",
            "snapshot-wrong-seq",
            "snapshot-not-a-list",
            "snapshot-escape",
            "doc-escape",
        ],
    )
    def test_index_log_damage_is_corrupt(
        self, big: Metatree, storage: Storage, damage: str
    ) -> None:
        log = _log_dir(storage)
        plant: dict[str, Callable[[], Any]] = {
            "marker-format": lambda: _edit_marker(storage, format=3),
            "marker-generation": lambda: _edit_marker(storage, generation="../../x"),
            "marker-extra-key": lambda: _edit_marker(storage, extra=1),
            "piece-escape": lambda: _write(storage, f"{log}/{2:020d}.json", seq=2, add=["../x"]),
            "piece-not-json": lambda: storage.write_atomic(f"{log}/{2:020d}.json", b"{"),
            "piece-wrong-seq": lambda: _write(storage, f"{log}/{2:020d}.json", seq=7, add=["a"]),
            "piece-seq-bool": lambda: _write(storage, f"{log}/{1:020d}.json", seq=True, add=["a"]),
            "piece-names-not-strings": lambda: _write(
                storage, f"{log}/{2:020d}.json", seq=2, add=[1]
            ),
            "piece-gap": lambda: storage.remove_file(f"{log}/{2:020d}.json"),
            "snapshot-wrong-seq": lambda: _write(
                storage, f"{log}/snapshot-{2:020d}.json", seq=1, children=[]
            ),
            "snapshot-not-a-list": lambda: _write(
                storage, f"{log}/snapshot-{2:020d}.json", seq=2, children="v1"
            ),
            "snapshot-escape": lambda: _write(
                storage, f"{log}/snapshot-{2:020d}.json", seq=2, children=["v3", "../x"]
            ),
            "doc-escape": lambda: _write(
                storage,
                f"{log}/{3:020d}.json",
                seq=3,
                doc={"children": ["../x"], index.INDEX_KEY: _marker_of(storage, seq=3)},
            ),
        }
        plant[damage]()
        fresh = Metatree(storage)
        with pytest.raises(CorruptMetadataError):
            fresh.find("m/v0")  # reads m's index
        with pytest.raises(CorruptMetadataError), unchanged(storage):
            fresh.put("m/new", b"w", name="f")
        with pytest.raises(CorruptMetadataError), unchanged(storage):
            fresh.remove("m/v0", recursive=True)
        with unchanged(storage):  # judged as stored, though `big` read the log before
            found = big.fsck().findings
        assert {f.kind for f in found if f.location == "m"} == {"corrupt-metadata"}, found
        plain = big.fsck(repair=True)  # a log is not an inline entry to drop: force's
        assert "corrupt-metadata" in {f.kind for f in plain.findings}
        assert big.fsck(repair=True, force=True).clean
        assert set(Metatree(storage).find("m").children) >= {f"v{i}" for i in range(6)}


def _edit_marker(storage: Storage, **changes: object) -> None:
    stored = orjson.loads(storage.read_bytes("m/metadata.json"))
    stored[index.INDEX_KEY] = {**stored[index.INDEX_KEY], **changes}
    storage.write_atomic("m/metadata.json", orjson.dumps(stored))


def _marker_of(storage: Storage, **changes: object) -> dict[str, Any]:
    marker: dict[str, Any] = orjson.loads(storage.read_bytes("m/metadata.json"))[index.INDEX_KEY]
    return {**marker, **changes}


def _write(storage: Storage, rel: str, **body: object) -> None:
    storage.write_atomic(rel, orjson.dumps(body))
