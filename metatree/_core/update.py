"""update: merge metadata into a node's, dropping the files of replaced references.

A metadata value may be a reference to files of its node (a `DataStore` or an `ArchiveStore`,
metatree/datastore.py). Replacing such a value, by another reference or by a plain value,
leaves files nobody names: they go in the same locked write, as a remove does (their records
leave the metadata at its commit point, the files are deleted after it).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from metatree._core.db import rel_path
from metatree._metadata import REF_KEY, is_reference
from metatree._paths import check_stored_name
from metatree._records import drop_records
from metatree.errors import CorruptMetadataError, MetatreeError, PathError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from metatree._core.db import Database
    from metatree._types import NodePath

__all__ = ["REF_KINDS", "check_unreferenced", "parse_reference", "referenced", "update"]


def update(db: Database, path: NodePath, values: Mapping[str, Any]) -> None:
    """Merge checked `values` into the node's metadata, inside the lock (read-modify-write)."""
    with db.write_lock():
        current, version = db.read_for_write(path)
        where = db.url(path)
        dropped = set()
        for key, value in values.items():
            old = referenced(current.get(key), path, where, key)
            dropped |= old - referenced(value, path, where, key)
        current.update(values)
        for name in dropped:
            drop_records(current, name, where)
        db.write_metadata(path, current, commit=True, expect=version)
        tx = db.active_tx()
        for name in sorted(dropped):
            if tx is None:  # committed: a file that cannot go now is an orphan, not a failure
                with contextlib.suppress(MetatreeError):
                    db.delete(rel_path(path, name), tree=False)
            else:
                tx.unstage(rel_path(path, name))
                tx.deletes.append((rel_path(path, name), False))


def check_unreferenced(metadata: Mapping[str, Any], path: NodePath, name: str, shown: str) -> None:
    """Refuse to remove or replace `name` if a metadata field of the node keeps it as a value.

    The file is the field's (a `DataStore` value, an `ArchiveStore`): removing it by hand
    would leave the field naming a file that is gone. Update or remove the field instead (its
    files go with it). Malformed references name nothing here: reading them reports them.
    """
    folded = name.casefold()
    for field, value in metadata.items():
        if not is_reference(value):
            continue
        try:
            names = referenced(value, path, shown, field)
        except CorruptMetadataError:
            continue
        if any(n.casefold() == folded for n in names):
            raise PathError(
                shown,
                f"{name!r} holds the value of metadata field {field!r}: update or remove that "
                "field instead (its files go with it)",
            )


def referenced(value: object, path: NodePath, where: str, field: str) -> set[str]:
    """Return the names of the node's files a metadata value references (none: a plain value)."""
    if not is_reference(value):
        return set()
    return {name for name, _ in parse_reference(value, path, where, field).values()}


def parse_reference(
    value: object, path: NodePath, where: str, field: str
) -> dict[str, tuple[str, str]]:
    """Parse a stored reference of the metadata key `field`: key -> (file name, serializer).

    A reference is stored data: it must have the shape metatree writes, and each URL must name
    a file of this very node with the name metatree gives that field's values
    (``<field>.<key>.<token><suffix>``, ``<field>.<token>.tar.gz``), or it is
    `CorruptMetadataError`: a planted reference must make neither a read nor an update's
    clean-up reach another node, a user's own file, or another field's.
    """
    if not isinstance(value, dict) or set(value) != {REF_KEY, "values"}:
        raise CorruptMetadataError(where, "a malformed reference")
    values = value["values"]
    if value[REF_KEY] not in REF_KINDS or not isinstance(values, dict):
        raise CorruptMetadataError(where, "a malformed reference")
    prefix = "/".join(path) + "/" if path else ""
    out: dict[str, tuple[str, str]] = {}
    for key, entry in values.items():
        if not isinstance(entry, dict) or set(entry) != {"url", "serializer"}:
            raise CorruptMetadataError(where, f"reference {key!r} is malformed")
        url, serializer = entry["url"], entry["serializer"]
        if not isinstance(serializer, str):
            raise CorruptMetadataError(where, f"reference {key!r} names no serializer")
        if not isinstance(url, str) or not url.startswith(prefix):
            raise CorruptMetadataError(where, f"reference {key!r} names a file of another node")
        try:
            name = check_stored_name(url[len(prefix) :], where)
        except PathError:
            raise CorruptMetadataError(where, f"reference {key!r} names {url!r}") from None
        if not _owned(name, field, key, value[REF_KEY]):
            raise CorruptMetadataError(where, f"reference {key!r} names {name!r}, not its own file")
        out[key] = (name, serializer)
    if value[REF_KEY] == "archive" and set(out) != {""}:
        raise CorruptMetadataError(where, "an archive reference names one file")
    return out


REF_KINDS = ("datastore", "archive")


def _owned(name: str, field: str, key: str, kind: str) -> bool:
    """Whether `name` is a file metatree names for this field's value (and no other's)."""
    if kind == "archive":
        return re.fullmatch(rf"{re.escape(field)}\.[0-9a-f]{{8}}\.tar\.gz", name) is not None
    pattern = rf"{re.escape(field)}\.{re.escape(key)}\.[0-9a-f]{{8}}(\.[A-Za-z0-9_-]+)*"
    return re.fullmatch(pattern, name) is not None
