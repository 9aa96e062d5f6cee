"""A transaction flushes new nodes' files in one batch, before any index lists them.

Local disk is the backend where durability costs something (one fsync per file); these tests
record the order of the storage calls and check the ordering the crash-safety argument needs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from metatree import Metatree

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Metatree, list[Any]]:
    tree = Metatree(str(tmp_path / "db"), ("model", "version"))
    tree.put("m/v0", b"old", name="f")
    calls: list[Any] = []
    storage = tree.storage
    write, put, sync = storage.write_atomic, storage.put, storage.sync

    def write_atomic(rel: str, data: bytes, *, durable: bool = True, **options: Any) -> None:
        calls.append(("write", rel, durable))
        write(rel, data, durable=durable, **options)

    def put_(
        source: Any, rel: str, callback: Any = None, *, durable: bool = True, **kw: Any
    ) -> Any:
        calls.append(("put", rel, durable))
        return put(source, rel, durable=durable, **kw)

    def sync_(rels: list[str]) -> None:
        calls.append(("sync", sorted(rels)))
        sync(rels)

    monkeypatch.setattr(storage, "write_atomic", write_atomic)
    monkeypatch.setattr(storage, "put", put_)
    monkeypatch.setattr(storage, "sync", sync_)
    return tree, calls


def test_new_nodes_are_synced_in_one_batch_before_the_index(
    recorded: tuple[Metatree, list[Any]],
) -> None:
    tree, calls = recorded
    with tree.transaction():
        for i in range(1, 4):
            tree.put(f"m/v{i}", b"new", name="f")
        tree.put("n/v1", b"new", name="f")
    deferred = sorted(c[1] for c in calls if c[0] in {"put", "write"} and not c[2])
    # a new leaf's metadata.json is written once, with its small file's record (hashed
    # first), before the file: it marks an orphan if the process dies
    assert deferred == sorted(
        [f"m/v{i}/{f}" for i in range(1, 4) for f in ("f", "metadata.json")]
        + ["n/v1/f", "n/v1/metadata.json", "n/metadata.json"]
    )
    order = [c[1] for c in calls if c[0] in {"put", "write"}]
    for leaf in ("m/v1", "m/v2", "m/v3", "n/v1"):
        assert order.index(f"{leaf}/metadata.json") < order.index(f"{leaf}/f")
    syncs = [i for i, c in enumerate(calls) if c[0] == "sync"]
    assert len(syncs) == 1, calls
    assert calls[syncs[0]][1] == sorted(set(deferred))
    # the existing indexes (m's and the root's) are written durably, after the batch
    indexes = [i for i, c in enumerate(calls) if c[0] == "write" and c[2]]
    assert [calls[i][1] for i in indexes] == ["m/metadata.json", "metadata.json"]
    assert min(indexes) > syncs[0]
    assert tree.find("n/v1").exists
    assert b"".join(tree.get("m/v3/f")) == b"new"


def test_files_put_into_existing_nodes_are_staged_durably(
    recorded: tuple[Metatree, list[Any]],
) -> None:
    tree, calls = recorded
    other = Metatree(tree.storage)
    with tree.transaction():
        tree.put("m/v0", b"more", name="g")  # staged, moved into place at commit
        tree.find("m/v0").update(score=1)
        assert other.find("m/v0").list() == ["f"]  # not visible before the commit
    puts = [c for c in calls if c[0] == "put"]
    assert len(puts) == 1
    assert puts[0][1].startswith("m/v0/.metatree.tx.")
    assert puts[0][2]  # durable before it can be moved into a listed node
    assert not [c for c in calls if c[0] in {"put", "write"} and not c[2]]
    assert b"".join(tree.get("m/v0/g")) == b"more"
    assert tree.find("m/v0").list() == ["f", "g"]


def test_a_failed_transaction_leaves_unsynced_orphans_only(
    recorded: tuple[Metatree, list[Any]],
) -> None:
    tree, calls = recorded

    def aborted() -> None:
        with tree.transaction():
            tree.put("m/v9", b"new", name="f")
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        aborted()
    assert not [c for c in calls if c[0] == "sync"]
    assert tree.find("m").children == ["v0"]


def test_a_file_replaced_later_in_the_transaction_needs_no_sync(
    recorded: tuple[Metatree, list[Any]], tmp_path: Path
) -> None:
    tree, _ = recorded
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a").write_bytes(b"a")
    with tree.transaction():
        tree.put("m/v5", str(folder), name="d", recursive=True)  # d/a, unsynced
        tree.put("m/v5", b"file now", name="d", force=True, recursive=True)  # removes d/a
    assert b"".join(tree.get("m/v5/d")) == b"file now"
    assert tree.find("m").children == ["v0", "v5"]


def test_remove_inside_a_transaction_deletes_after_the_commit(
    recorded: tuple[Metatree, list[Any]],
) -> None:
    tree, calls = recorded
    with tree.transaction():
        tree.put("m/v1", b"new", name="f")
        tree.remove("m/v0", recursive=True)  # staged: the data stays until the commit
        assert tree.storage.kind("m/v0/f") == "file"
        tree.put("m/v1", b"more", name="g")  # m/v1 is this transaction's: unsynced
    assert ("put", "m/v1/f", False) in calls
    assert ("put", "m/v1/g", False) in calls
    first_sync = next(i for i, c in enumerate(calls) if c[0] == "sync")
    index = calls.index(("write", "m/metadata.json", True))
    assert first_sync < index
    assert tree.find("m").children == ["v1"]
    assert tree.storage.kind("m/v0") is None


def test_a_rolled_back_remove_keeps_the_data(recorded: tuple[Metatree, list[Any]]) -> None:
    tree, _ = recorded

    def aborted() -> None:
        with tree.transaction():
            tree.remove("m/v0", recursive=True)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        aborted()
    assert tree.find("m").children == ["v0"]
    assert b"".join(tree.get("m/v0/f")) == b"old"


def test_a_bulk_sync_is_one_syncfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many files are flushed by their filesystem's one ``syncfs`` (Linux), not one fsync each."""
    from metatree.backends import local

    if local._libc_syncfs() is None:
        pytest.skip("no syncfs here (Linux only)")
    paths = []
    for i in range(local._SYNCFS_FROM):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x")
        paths.append(str(path))
    tree = Metatree(str(tmp_path / "db"), ("model",))
    fsyncs: list[int] = []
    monkeypatch.setattr(os, "fsync", fsyncs.append)
    tree.storage.backend.sync(paths)
    assert fsyncs == []
    tree.storage.backend.sync(paths[:2])  # a few files: each its own fsync
    assert len(fsyncs) == 2
