"""Large metadata.json documents read again: the cache of parsed ones is never stale.

A `Database` keeps large documents (a v2 node's mirror above all) parsed and validated by
their exact bytes (`metatree._metadata.MetadataCache`). Whatever rewrites a file between two
reads, the second read must see what is stored now: other bytes of the same length, an
entry planted invalid (still `CorruptMetadataError`, on every read), and nothing a caller
changed in what an earlier read returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import pytest

from metatree import Metatree
from metatree._core import index
from metatree.errors import CorruptMetadataError

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["MetadataCacheTests"]

KEYS = ("model", "version", "stage")
NAMES = [f"v{i:05d}" for i in range(3000)]
"""A mirror well past the cache's 16 KiB floor (about 27 KB of names)."""


def _plant(storage: Storage, node: str, names: list[str], **rest: object) -> bytes:
    body = orjson.dumps({"children": names, **rest})
    storage.write_atomic(f"{node}/metadata.json", body)
    return body


class MetadataCacheTests:
    """Large documents read twice on this backend (fixture `storage`, as the suite's)."""

    @pytest.fixture(params=[1, 2], ids=["v1", "v2"])
    def large(self, request: pytest.FixtureRequest, storage: Storage) -> Metatree:
        """Return a tree whose node ``m`` lists `NAMES` inline: v1, or v2 (then its mirror)."""
        tree = Metatree(storage, KEYS)
        tree.put("m/v00000", b"w", name="f")
        marker = orjson.loads(storage.read_bytes("m/metadata.json")).get(index.INDEX_KEY)
        assert marker is None
        _plant(storage, "m", NAMES, note={"k": [1]})
        if request.param == 2:
            tree.reindex("m", format=2)
        assert tree.find("m").children == NAMES  # read once: cached now
        return tree

    def test_metadata_cache_rewritten_with_same_length(
        self, large: Metatree, storage: Storage
    ) -> None:
        stored = orjson.loads(storage.read_bytes("m/metadata.json"))
        swapped = [NAMES[1], NAMES[0], *NAMES[2:]]
        before = storage.read_bytes("m/metadata.json")
        after = _plant(
            storage, "m", swapped, **{k: v for k, v in stored.items() if k != "children"}
        )
        assert len(after) == len(before)
        assert after != before
        assert large.find("m").children == swapped
        assert large.find("m").metadata["note"] == {"k": [1]}
        stored["note"] = {"k": [2]}  # a value, same length
        storage.write_atomic("m/metadata.json", orjson.dumps(stored))
        assert large.find("m").metadata["note"] == {"k": [2]}
        assert large.find("m").children == NAMES

    def test_metadata_cache_planted_invalid_entry_still_raises(
        self, large: Metatree, storage: Storage
    ) -> None:
        stored = orjson.loads(storage.read_bytes("m/metadata.json"))
        good = storage.read_bytes("m/metadata.json")
        bad = dict(stored, children=[*NAMES[:-1], "v/bad0"])  # same length, one name escapes
        body = orjson.dumps(bad)
        assert len(body) == len(good)
        storage.write_atomic("m/metadata.json", body)
        for _ in range(2):  # never kept: every read checks it again
            with pytest.raises(CorruptMetadataError, match="v/bad0"):
                large.find("m/v00001")
            with pytest.raises(CorruptMetadataError, match="v/bad0"):
                Metatree(storage).find("m").children  # noqa: B018
        storage.write_atomic("m/metadata.json", good)
        assert large.find("m").children == NAMES

    def test_metadata_cache_read_is_the_callers(self, large: Metatree) -> None:
        db = large._db
        metadata = db.read_metadata(("m",))
        metadata["note"]["k"].append(2)
        metadata["note"]["new"] = True
        metadata["extra"] = 1
        children = metadata["children"]
        if isinstance(children, list):
            children.append("late")
            children.pop(0)
        again = db.read_metadata(("m",))
        assert again["note"] == {"k": [1]}
        assert "extra" not in again
        assert list(again["children"]) == NAMES
        assert large.find("m").children == NAMES
        assert "late" not in large.find("m").children

    def test_metadata_cache_put_and_update_past_a_large_mirror(
        self, large: Metatree, storage: Storage
    ) -> None:
        large.put("m/new", b"w", name="f")
        large.find("m").update(active="new", nested={"a": [1, 2.5]}, big=2**64 - 1)
        large.put("m/newer", b"w", name="f")
        for tree in (large, Metatree(storage)):  # what this writer kept, and a new reader
            assert tree.find("m").children == [*NAMES, "new", "newer"]
            assert tree.find("m/<active>").name == "new"
            metadata = tree.find("m").metadata
            assert metadata["note"] == {"k": [1]}
            assert metadata["nested"] == {"a": [1, 2.5]}
            assert metadata["big"] == 2**64 - 1
            assert type(metadata["big"]) is int

    def test_metadata_cache_null_marker_is_an_inline_index(self, storage: Storage) -> None:
        """A large document whose marker is null is read as v1, cached or not."""
        tree = Metatree(storage, KEYS)
        tree.put("m/v00000", b"w", name="f")
        _plant(storage, "m", NAMES, **{index.INDEX_KEY: None})
        for reader in (tree, tree, Metatree(storage)):
            assert reader.find("m").children == NAMES
            assert reader.exists("m/v00001")
