"""Scan: read every node under a pattern, one tree level at a time, each level's reads at once.

A `walk` reads one metadata.json after another: on S3 that is a round trip per node. A scan
reads level by level: the parents' indexes, already read, name every child of the next level,
so all of that level's metadata.json files are requested together (`Storage.read_many`:
concurrent GETs on S3, a thread pool on other remote stores). Exactly one read per node: no
HEAD, no LIST.

A pattern narrows the scan before anything is read: per level, a name, a glob (``*``,
``v1.*``) or a ``<key>`` placeholder resolved in the parent's metadata (read one level
earlier). Each node is read whole from one version of its metadata.json (every write of it
is atomic), so a scan during a writer's commit sees each node old or new, never torn; it is
not a snapshot of the whole tree (readers take no lock).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from metatree._core.db import children_of, rel_path
from metatree._core.index import Replaced, attach
from metatree._names import METADATA_FILE
from metatree._paths import GLOB, Placeholder, _parse_segment, _split, resolve_segment
from metatree.errors import (
    MetatreeError,
    NotFoundError,
    PathError,
    UnresolvedPathError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._core.db import Database
    from metatree._paths import Segment
    from metatree._types import NodePath

__all__ = ["BATCH", "Glob", "Progress", "Skipped", "check_progress", "parse_pattern", "scan"]

BATCH = 2048
"""Nodes read per `read_many` call: bounds the bytes held at once, not the concurrency."""

OnError = Literal["raise", "skip"]

Progress: TypeAlias = Callable[[int], object]
"""A walk's progress callback: called with the number of nodes read so far."""


def check_progress(progress: object, shown: str) -> None:
    """Refuse a `progress` that cannot be called, before any I/O (a raw TypeError mid-way)."""
    if progress is not None and not callable(progress):
        raise PathError(
            shown, f"progress must be a function of the count, not {type(progress).__name__}"
        )


@dataclass(frozen=True, slots=True)
class Glob:
    """A segment matching every child name that `fnmatch` matches (``*``: every child)."""

    pattern: str

    def __str__(self) -> str:
        return self.pattern


@dataclass(frozen=True, slots=True)
class Skipped:
    """A node a scan with ``on_error="skip"`` could not read, and why."""

    location: str
    error: MetatreeError


def parse_pattern(under: object, keys: tuple[str, ...]) -> tuple[Segment | Glob, ...]:
    """Parse a scan's `under`: names, globs and ``<key>`` placeholders, at most one per level."""
    if not isinstance(under, str):
        raise PathError(repr(under), f"under is a location str, not {type(under).__name__}")
    parts = _split(under)
    if len(parts) > len(keys):
        raise PathError(under, f"{len(parts)} levels, but the tree has {len(keys)}: {list(keys)}")
    out: list[Segment | Glob] = []
    for part in parts:
        if GLOB.search(part) and not part.startswith("<"):
            if "\\" in part or part in (".", ".."):
                raise PathError(under, f"{part!r} is not a name or a pattern")
            out.append(Glob(part))
        else:
            out.append(_parse_segment(part, under))
    return tuple(out)


def scan(
    db: Database,
    pattern: tuple[Segment | Glob, ...] = (),
    *,
    depth: int | None = None,
    on_error: OnError = "raise",
    concurrency: int | None = None,
    skipped: list[Skipped] | None = None,
    check: Callable[[NodePath, dict[str, Any]], Any] | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[NodePath, dict[str, Any], Any]]:
    """Yield (path, metadata, check's result) of each node matching `pattern` and below it.

    Level by level, each level in index order. With `depth` (a level, 1 for the first key),
    only nodes at that level are yielded, and nothing deeper is read. A node that cannot be
    read (corrupt metadata.json, an index entry without its node), or whose metadata `check`
    refuses (a `MetatreeError`), raises that error naming it, or with ``on_error="skip"`` is
    left out, with everything below it, and listed in `skipped`. A child removed by a writer
    between its parent's read and its own is left out silently.

    `progress`, when given, is called with the number of nodes read so far after the root
    and after each batch (a counter for a person watching a long scan; None costs nothing).
    """
    check_progress(progress, db.storage.url)
    last = len(db.keys) if depth is None else depth
    root = db.read_metadata(())
    read = 1
    if progress is not None:
        progress(read)
    level: list[tuple[NodePath, dict[str, Any]]] = [((), root)]
    for index in range(last):
        wanted: list[NodePath] = []
        for path, metadata in level:
            wanted.extend(_matching(db, path, metadata, pattern, index))
        level = []
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start : start + BATCH]
            results = _read_level(db, batch, concurrency)
            read += len(batch)
            if progress is not None:
                progress(read)
            for path, result in zip(batch, results, strict=True):
                got = _settle(db, path, result)
                if got is None:
                    continue
                try:
                    if isinstance(got, MetatreeError):
                        raise got
                    checked = None if check is None else check(path, got)
                except MetatreeError as exc:
                    if on_error == "raise":
                        raise
                    if skipped is not None:
                        skipped.append(Skipped(db.url(path), exc))
                    continue
                if index + 1 >= len(pattern) and (depth is None or index + 1 == depth):
                    yield path, got, checked
                if index + 1 < last:
                    level.append((path, got))


def _matching(
    db: Database,
    path: NodePath,
    metadata: dict[str, Any],
    pattern: tuple[Segment | Glob, ...],
    index: int,
) -> list[NodePath]:
    """Return the children of `path` that the pattern's segment at `index` lets through."""
    children = children_of(metadata)
    if index >= len(pattern):
        return [(*path, child) for child in children]
    segment = pattern[index]
    if isinstance(segment, Glob):
        return [(*path, c) for c in children if fnmatch.fnmatchcase(c, segment.pattern)]
    if isinstance(segment, Placeholder):
        try:
            name = resolve_segment(segment, metadata, db.url(path))
        except UnresolvedPathError:  # this parent does not name one: nothing here matches
            return []
    else:
        name = segment.name
    return [(*path, name)] if name in children else []


def _read_level(
    db: Database, paths: list[NodePath], concurrency: int | None
) -> list[dict[str, Any] | MetatreeError]:
    """Read and parse the metadata.json of `paths`, concurrently where the backend gains."""
    if db.active_tx() is not None:  # the transaction's own view, as every read in it
        return [_read_one(db, path) for path in paths]
    rels = [rel_path(path, METADATA_FILE) for path in paths]
    base = db.storage.url.rstrip("/")  # a URL per node, for errors: by concatenation
    out: list[dict[str, Any] | MetatreeError] = []
    for path, rel, got in zip(
        paths, rels, db.storage.read_many(rels, db.max_metadata_bytes, concurrency), strict=True
    ):
        url = f"{base}/{rel}"
        if isinstance(got, NotFoundError):
            out.append(NotFoundError(db.url(path), "node (listed by its parent's index)"))
        elif isinstance(got, MetatreeError):
            out.append(got)
        else:
            try:
                metadata = db.parse_metadata(got, url, rel)  # shares reads' cache key
                attach(db, path, metadata, url)  # a v2 node's log: read now
            except MetatreeError as exc:
                out.append(exc)
            except Replaced:  # its log was replaced after this read: read the node again
                out.append(_read_one(db, path))
            else:
                out.append(metadata)
    return out


def _read_one(db: Database, path: NodePath) -> dict[str, Any] | MetatreeError:
    try:
        return db.read_metadata(path)
    except MetatreeError as exc:
        return exc


def _settle(
    db: Database, path: NodePath, got: dict[str, Any] | MetatreeError
) -> dict[str, Any] | MetatreeError | None:
    """Tell a missing node that a writer removed (None) from one re-created, or damage.

    A remove rewrites the parent's index before it deletes the node's directory, so a reader
    that read the index first can find the directory gone: a race, not damage. If the index
    still lists it, the node is read again: a writer may have removed and re-created it since
    (its metadata now), else the entry dangles and the error stands (one that says why: a
    metadata.json that is a directory is corrupt, not missing).
    """
    if not isinstance(got, NotFoundError):
        return got
    try:
        if path[-1] not in children_of(db.read_metadata(path[:-1])):
            return None
    except NotFoundError:
        return None  # the parent went too: removed with it
    except MetatreeError:
        return got
    try:
        return db.read_metadata(path)
    except NotFoundError:
        return got
    except MetatreeError as exc:
        return exc
