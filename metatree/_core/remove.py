"""Remove: a file, or a node with its subtree; the index first, then the data.

A file's record (`metatree._records`) is dropped from its node's metadata before the file is
deleted, as an index entry is.

A crash between the two leaves unlisted data (an orphan), never an index that lists a node
whose data is half gone. In a transaction the data is deleted after the commit, so a
rollback keeps it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metatree._core import index
from metatree._core.db import children_of, rel_path
from metatree._core.read import entries, is_orphan
from metatree._core.resolve import resolve
from metatree._core.update import check_unreferenced
from metatree._records import drop_records
from metatree.errors import NotFoundError, PathError

if TYPE_CHECKING:
    from metatree._core.db import Database
    from metatree._core.resolve import Target
    from metatree._core.transaction import Transaction
    from metatree._paths import Segment
    from metatree._types import NodePath

__all__ = ["remove"]


def remove(db: Database, target: Target, last: Segment, *, recursive: bool) -> None:
    """Remove the file or node `last` names in the node `target` names."""
    with db.write_lock():
        node = resolve(db, target)
        metadata, version = node.read()
        name = node.name(last)
        children = children_of(metadata)
        rel = rel_path(node.path, name)
        tx = db.active_tx()
        if name in children and not node.is_leaf:
            if not recursive and entries(db, (*node.path, name)):
                raise PathError(target.shown, "the node is not empty: pass recursive=True")
            index.discard(metadata, name)
            db.write_metadata(node.path, metadata, commit=True, expect=version)
            _after_commit(db, tx, (*node.path, name), rel, tree=True)
            return
        check_unreferenced(metadata, node.path, name, target.shown)
        staged = tx is not None and tx.unstage(rel)  # what this transaction stored
        kind = db.storage.kind(rel)
        if kind is None or (kind == "directory" and is_orphan(db, node.path, name)):
            if staged:  # it only existed in this transaction, and is gone now
                _drop_record(db, node.path, metadata, version, name)
                return
            raise NotFoundError(db.url(node.path, name), "node or file")
        if kind == "directory" and not recursive:
            raise PathError(target.shown, "it is a directory: pass recursive=True")
        _drop_record(db, node.path, metadata, version, name)  # first, as an index entry
        _after_commit(db, tx, None, rel, tree=kind == "directory")


def _drop_record(
    db: Database, path: NodePath, metadata: dict[str, Any], version: object, name: str
) -> None:
    """Rewrite the node's metadata without the record of `name`, if it had one."""
    if drop_records(metadata, name, db.url(path), fold=db.case_insensitive):
        db.write_metadata(path, metadata, commit=True, expect=version)


def _after_commit(
    db: Database, tx: Transaction | None, node: NodePath | None, rel: str, *, tree: bool
) -> None:
    """Delete removed data now, or, in a transaction, once it has committed."""
    if tx is None:
        db.delete(rel, tree=tree)
        return
    if node is not None:
        tx.forget(node)  # later reads and updates of it fail, as after a commit
    tx.unstage_below(rel)
    tx.deletes.append((rel, tree))
