"""MetadataCache: large documents validated once per stored bytes, counted (never timed)."""

from __future__ import annotations

from typing import Any

import pytest

from metatree import Metatree
from metatree import _metadata as md
from metatree import _metadata_cache as cache_module
from metatree._core import index, plan
from metatree._core.scan import scan
from metatree._metadata_cache import MetadataCache
from metatree._storage import as_storage
from metatree.errors import CorruptMetadataError

NAMES = [f"v{i:05d}" for i in range(3000)]
URL = "memory://db/m/metadata.json"


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the index validations of large documents (`check_names` of 1 000 names or more)."""
    counted: list[int] = []
    real = md.check_names

    def counting(value: Any, *args: Any) -> list[str]:
        if isinstance(value, list) and len(value) >= 1000:
            counted.append(len(value))
        return real(value, *args)

    monkeypatch.setattr(md, "check_names", counting)
    return counted


def _doc(names: list[str] = NAMES, **rest: Any) -> bytes:
    return md.dump_metadata({"children": names, **rest})  # json for integers beyond 64 bits


def test_same_bytes_validated_once(validations: list[int]) -> None:
    cache = MetadataCache()
    data = _doc(note={"k": [1]})
    first = cache.load(data, URL)
    assert cache.load(bytes(data), URL) == first  # equal bytes, another object
    assert validations == [3000]


def test_other_bytes_validated_again(validations: list[int]) -> None:
    cache = MetadataCache()
    data = _doc()
    cache.load(data, URL)
    other = _doc([NAMES[1], NAMES[0], *NAMES[2:]])  # same length, other bytes
    assert len(other) == len(data)
    assert cache.load(other, URL)["children"][:2] == [NAMES[1], NAMES[0]]
    assert cache.load(data, URL)["children"] == NAMES  # the entry is per path: replaced
    assert validations == [3000, 3000, 3000]


def test_invalid_document_never_kept(validations: list[int]) -> None:
    cache = MetadataCache()
    bad = _doc([*NAMES[:-1], "../x"])
    for _ in range(3):
        with pytest.raises(CorruptMetadataError, match=r"\.\./x"):
            cache.load(bad, URL)
    assert validations == [3000] * 3


def test_small_documents_are_not_kept(validations: list[int]) -> None:
    cache = MetadataCache(min_bytes=len(_doc()) + 1)
    for _ in range(2):
        assert cache.parse(_doc(), URL) is None
        cache.load(_doc(), URL)
    assert validations == [3000, 3000]


def test_bounded_by_entries_and_bytes(validations: list[int]) -> None:
    data = _doc()
    cache = MetadataCache(entries=2)
    for i in range(3):
        cache.load(data, f"memory://db/{i}/metadata.json")
    cache.load(data, "memory://db/0/metadata.json")  # the oldest went out
    assert len(validations) == 4
    cache = MetadataCache(max_bytes=len(data) * 2)
    for i in range(3):
        cache.load(data, f"memory://db/{i}/metadata.json")
    cache.load(data, "memory://db/2/metadata.json")
    cache.load(data, "memory://db/0/metadata.json")
    assert len(validations) == 8  # 2 kept, then 0 again
    small = MetadataCache(max_bytes=len(data) - 1)  # larger than the bound: never kept
    small.load(data, URL)
    small.load(data, URL)
    assert len(validations) == 10


@pytest.mark.parametrize("containers", [1, 200], ids=["copied", "parsed-again"])
def test_fresh_shares_nothing_mutable(containers: int) -> None:
    cache = MetadataCache()
    data = _doc([*NAMES, NAMES[0]], items=[{"n": [i]} for i in range(containers)], big=2**70)
    got = cache.load(data, URL)
    assert got["children"] == NAMES  # repeats dropped, as load_metadata does
    assert got["big"] == 2**70  # exact, as load_metadata reads it
    got["children"].append("x")
    got["items"][0]["n"].append(9)
    got["items"].append({})
    got["new"] = 1
    again = cache.load(data, URL)
    assert again == md.load_metadata(data, URL)
    assert again["items"][0] == {"n": [0]}


def test_database_validates_a_large_mirror_once(validations: list[int]) -> None:
    storage = as_storage("memory://metadata-cache-unit")
    tree = Metatree(storage, ("parent", "child"))
    tree.put("m/v00000", b"w", name="f")
    storage.write_atomic("m/metadata.json", _doc())
    assert tree.find("m").children == NAMES  # validated once
    tree.reindex("m", format=2)  # rewritten with the index it read: kept, not checked again
    for name in NAMES[:50]:
        tree.find(f"m/{name}")
    for i in range(5):
        tree.put(f"m/n{i}", b"w", name="f")  # pieces only: metadata.json unchanged
    assert validations == [3000]
    runs = {id(tree._db.read_metadata(("m",))["children"]._mirror) for _ in range(3)}
    assert len(runs) == 1  # one mirror run, its tables built once
    folds: list[str] = []
    real = plan._nfc

    def counting(name: str) -> str:
        folds.append(name)
        return real(name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan, "_nfc", counting)
        for i in range(5, 8):
            tree.put(f"m/n{i}", b"w", name="f")
    assert len(NAMES) <= len(folds) < len(NAMES) + 100  # the mirror folded once, not per put
    tree.find("m").update(active="n7")  # rewritten with the index it read: kept
    assert tree.find("m/<active>").name == "n7"
    assert tree.find("m/<active>").name == "n7"
    assert validations == [3000]
    assert Metatree(storage).find("m/<active>").name == "n7"  # another cache: checked there
    assert validations == [3000, 3000]
    storage.remove_tree("")


def test_prime_keeps_what_a_read_would_return(validations: list[int]) -> None:
    cache = MetadataCache()
    first = _doc(a=1)
    cache.load(first, URL)
    doc = md.load_metadata(first, URL)
    doc.update(a={"deep": [1, 2.5, None]}, big=2**70, b="x")  # an update of its own keys
    data = md.dump_metadata(doc)
    cache.prime(data, URL, doc)
    doc["a"]["deep"].append(3)  # the writer's dict stays the writer's
    before = len(validations)
    got = cache.load(data, URL)
    assert len(validations) == before  # kept when written: not checked again
    assert got == md.load_metadata(data, URL)
    assert list(got) == list(md.load_metadata(data, URL))  # the keys in stored order
    assert got["big"] == 2**70


def test_prime_only_with_the_index_it_read(validations: list[int]) -> None:
    cache = MetadataCache()
    cache.load(_doc(), URL)
    doc = md.load_metadata(_doc(), URL)
    doc["children"] = [*NAMES[:-1], "../x"]  # the index changed: not the entry's own
    bad = md.dump_metadata(doc)
    cache.prime(bad, URL, doc)
    with pytest.raises(CorruptMetadataError, match=r"\.\./x"):
        cache.load(bad, URL)
    cache.prime(_doc(a=1), "memory://db/other/metadata.json", {"children": NAMES, "a": 1})
    cache.load(_doc(a=1), "memory://db/other/metadata.json")  # nothing read there: checked
    assert validations == [3000, 3000, 3000, 3000]


def test_a_walk_and_a_find_share_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan (catalog, search, fsck) keys a document as reads do: validated once for both."""
    loads: list[int] = []
    real = md._load

    def counting(data: bytes, *args: Any) -> Any:
        loads.append(len(data))
        return real(data, *args)

    monkeypatch.setattr(cache_module, "_load", counting)
    storage = as_storage("memory://metadata-cache-shared")
    tree = Metatree(storage, ("parent", "child"))
    tree.put("m/v0", b"w", name="f")
    tree.find("m").update(note="x" * 20_000)  # a large document: kept
    reader = Metatree(storage)  # a cache of its own
    loads.clear()
    for _ in range(3):
        assert reader.find("m").metadata["note"] == "x" * 20_000
        assert [path for path, _, _ in scan(reader._db)] == [("m",), ("m", "v0")]
    assert [n for n in loads if n > 20_000] == [loads[0]], loads
    storage.remove_tree("")


def test_a_junk_filled_log_listing_is_not_held() -> None:
    """A log directory a co-writer filled is parsed each time, not kept (bounded memory)."""
    cache = index.LogCache()
    live = {f"{n:020d}.json": "file" for n in range(1, 33)}
    cache.remember_numbers("m/log", live, ([], list(range(1, 33))))
    assert cache.numbers("m/log", dict(live)) is not None
    junk = {**live, **{f"junk{i}": "file" for i in range(1000)}}
    cache.remember_numbers("m/log", junk, ([], list(range(1, 33))))
    assert cache.numbers("m/log", junk) is None
