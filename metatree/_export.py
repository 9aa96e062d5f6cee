"""The catalog's export: a Parquet dataset that DuckDB, polars, Spark, Dask and Ray read.

The target is the user's, anywhere fsspec reaches, so it is checked like input: never inside
the database (its files would land in node directories), never over existing data (an export
deletes nothing), and written all or nothing as far as a filesystem allows: a failure midway
removes what it wrote, so the target is as it was and a retry can go to the same URL.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from metatree._localfiles import local_within, real_local
from metatree.backends import translate_errors
from metatree.catalog import _arrow, build_catalog
from metatree.errors import AlreadyExistsError, MetatreeError, PathError, QueryError, StorageError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from metatree._core.db import Database
    from metatree._core.scan import Progress

__all__ = ["export_catalog"]

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
"""The partition name Hive readers take for null: a node of that name would read back as null."""


def export_catalog(
    db: Database,
    url: object,
    partition_by: object = None,
    *,
    under: object = "",
    depth: object = None,
    columns: object = None,
    on_error: object = "raise",
    concurrency: object = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> str:
    """Write the catalog as a Parquet dataset at `url`; return `url` (docs/catalog.md).

    `url` is any fsspec URL or local path, outside the database, absent or an empty
    directory. With `partition_by` (a key level), Hive partitioning by that level
    (``domain=fraud/part-0.parquet``); rows above that level go to its null partition.
    """
    pa = _arrow()
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    if not isinstance(url, str) or not url or "\x00" in url:
        raise PathError(repr(url), "the export's URL must be a non-empty str without NUL")
    if partition_by is not None and partition_by not in db.keys:
        raise QueryError(
            f"partition_by={partition_by!r}", f"partition by a key level: one of {list(db.keys)}"
        )
    fs, path = _target(db, url, dict(storage_options or {}))
    _check_outside(db, fs, path, url)
    with translate_errors(url):
        existed = fs.exists(path)
        if existed and (not fs.isdir(path) or fs.ls(path, detail=False)):
            raise AlreadyExistsError(url, "an export goes to a new location or an empty directory")
    table = build_catalog(
        db, under, depth, columns, on_error=on_error, concurrency=concurrency, progress=progress
    )
    partitioning, partitions = None, 1
    if partition_by is not None:
        level = str(partition_by)
        values = set(table.column(level).to_pylist())
        if HIVE_NULL in values:
            raise QueryError(
                f"partition_by={level!r}",
                f"a node named {HIVE_NULL!r} would read back as null: partition by another level",
            )
        partitioning = ds.partitioning(pa.schema([table.schema.field(level)]), flavor="hive")
        partitions = len(values)
    try:
        ds.write_dataset(
            table,
            path,
            format="parquet",
            filesystem=PyFileSystem(FSSpecHandler(fs)),
            partitioning=partitioning,
            basename_template="part-{i}.parquet",
            existing_data_behavior="overwrite_or_ignore",  # checked empty above
            max_partitions=max(partitions, 1),
        )
    except BaseException as exc:  # an interrupt too: all or nothing
        _undo(fs, path, existed)
        if isinstance(exc, MetatreeError) or not isinstance(exc, Exception):
            raise
        raise StorageError(url, f"the export failed, nothing is left of it: {exc}") from exc
    return url


def _target(db: Database, url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """Return the filesystem and path of an export's `url`.

    A URL of the database's own protocol, given without storage options, uses the
    database's filesystem (its credentials, its endpoint): an export beside the tree. Chained
    URLs (``simplecache::...``, ``dir::...``) are refused: a cache or a prefix in between hides
    where the files really go, so the check that keeps them out of the database could not see.
    """
    import fsspec

    if "::" in url:
        raise PathError(url, "an export goes to a plain URL or path, not a chained one")
    own = db.storage.fs
    protocols = (own.protocol,) if isinstance(own.protocol, str) else tuple(own.protocol)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if not options and protocol in protocols:
        return own, str(own._strip_protocol(url)).rstrip("/")
    try:
        fs, path = fsspec.url_to_fs(url, **options)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        raise PathError(url, f"cannot open the export's filesystem: {exc}") from None
    return fs, str(path).rstrip("/")


def _where(fs: Any, path: str) -> tuple[str, str]:
    """Return where `path` really is: its store, and a path comparable on it (`real_local`)."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return "file", real_local(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return str(protocol), path.rstrip("/")


def _check_outside(db: Database, fs: Any, path: str, url: str) -> None:
    """Refuse an export into the database: its files would land in nodes' directories.

    Compared where the paths really are (local links resolved), on the same kind of store;
    an ancestor of the root is refused too (it is never empty anyway).
    """
    store, target = _where(fs, path)
    own, root = _where(db.storage.fs, db.storage.root)
    if store == own and (_within(target, root, store) or _within(root, target, store)):
        raise PathError(url, f"an export must go outside the database ({db.storage.url})")


def _within(path: str, base: str, store: str) -> bool:
    """Whether `path` is `base` or below it, segment by segment (``db2`` is not in ``db``)."""
    if store == "file":
        return local_within(path, base)
    return path == base or path.startswith(f"{base}/")


def _undo(fs: Any, path: str, existed: bool) -> None:
    """Remove a failed export's files: the target was absent or an empty directory."""
    with contextlib.suppress(Exception):
        if existed:
            for entry in fs.ls(path, detail=False):
                fs.rm(entry, recursive=True)
        else:
            fs.rm(path, recursive=True)
