"""Resolution: from a location the user wrote to the node it names, walked once per operation.

A `Target` is a parsed location that carries the user's input as errors quote it; `descend`
is the one walk from the root (one metadata.json read per level, the last node's own only
when asked: its parent's index is what proves it exists); a `Resolved` node reads its
metadata at most once, so an operation that resolves a node and then a ``<key>`` file name
in it, or checks what it holds, passes the one result on instead of reading again.

Where the backend answers many requests at once (object stores, WebHDFS), the reads whose
paths are known before the first answer go out together (`metatree._waves`): the indexes on
the way up to the next ``<key>`` segment in one wave, then what the answer rests on (the last
index, or what the caller reads next: `Ahead`) in a second, after them (`_plan`). They are
checked in order exactly as if read one at a time: each parent's index must list the child.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metatree._core.db import children_of, rel_path
from metatree._paths import (
    Literal,
    Location,
    Segment,
    parse_file_location,
    parse_location,
    resolve_segment,
)
from metatree._waves import Later
from metatree.errors import MetatreeError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable

    from metatree._core.db import Database, Fetched
    from metatree._types import NodePath

__all__ = [
    "EARLY_BYTES",
    "Ahead",
    "Early",
    "Resolved",
    "Target",
    "descend",
    "resolve",
    "shown_of",
]

EARLY_BYTES = 256 * 2**10
"""A file read ahead in the resolution's wave (`Ahead.file`) is used when it is at most this
large (then it is whole, and checked against its record before any byte is given out);
a larger one is read again after its record, so only this much is read for nothing."""


def shown_of(location: object) -> str:
    """Return the user's location as errors quote it (a dict location as its repr)."""
    if isinstance(location, str):
        return location
    return repr(dict(location)) if isinstance(location, Mapping) else repr(location)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed node location and the user's input, as every error about it quotes it."""

    segments: Location
    shown: str

    @classmethod
    def node(cls, location: object, keys: tuple[str, ...]) -> Target:
        """Parse a node location (``"a/<key>"`` or a dict); see `parse_location`."""
        return cls(parse_location(location, keys), shown_of(location))

    @classmethod
    def file(cls, location: object, keys: tuple[str, ...]) -> tuple[Target, Segment]:
        """Parse ``"node/location/file"`` into the node's target and the file's segment.

        The file segment names a file, or for `exists` and `remove` a node too.
        """
        segments, last = parse_file_location(location, keys)
        return cls(segments, shown_of(location)), last


@dataclass(frozen=True, slots=True)
class Ahead:
    """What an operation reads right after resolving its node: sent with the last wave."""

    own: bool = False
    """The node's own metadata.json (its records, its ``<key>`` values)."""
    file: str | None = None
    """A file of the node: its first `EARLY_BYTES` (`Early.file`)."""
    listing: bool = False
    """The listing of the node's directory (`Early.listing`): a put's checks of the spot."""
    locked: bool = False
    """The caller holds the DB lock: every read in one wave (see `_plan`)."""


@dataclass(slots=True)
class Early:
    """The file and listing an `Ahead` asked for, as the resolution's last wave read them."""

    wave: Later
    path: NodePath
    """The node they belong to (used only if resolution ends there)."""
    file: tuple[str, int] | None = None
    listing: int | None = None

    def file_read(self, path: NodePath, name: str) -> bytes | MetatreeError | None:
        """Return the file `name` of node `path` as read ahead, or the error it gave.

        The bytes are its first `EARLY_BYTES` and one more (more: it is not whole); None:
        it was not read ahead.
        """
        if self.file is None or (path, name) != (self.path, self.file[0]):
            return None
        try:
            data: bytes = self.wave.result(self.file[1])
        except MetatreeError as exc:
            return exc
        return data

    def listed(self, path: NodePath) -> dict[str, str] | None:
        """Return the complete listing of node `path`'s directory if the wave read it, else None.

        None too when it failed or was partial (a directory of over 1 000 entries on S3).
        """
        if self.listing is None or path != self.path:
            return None
        try:
            listed, complete = self.wave.result(self.listing)
        except MetatreeError:
            return None
        return dict(listed) if complete else None


@dataclass(slots=True)
class Resolved:
    """A node reached by resolving a target; its metadata is read once, when first needed."""

    db: Database = field(repr=False)
    path: NodePath
    shown: str
    """The user's input, for errors about names resolved in this node."""
    _read: tuple[dict[str, Any], object] | None = field(default=None, repr=False)
    fetched: Fetched | None = field(default=None, repr=False)
    """Its metadata.json as a wave read it (or will), used by the first `read`."""
    early: Early | None = field(default=None, repr=False)
    """What the resolution read ahead for the caller (`Ahead`), for the path it names."""

    @property
    def is_leaf(self) -> bool:
        """Whether the node is at the deepest level (it holds files, never children)."""
        return len(self.path) >= len(self.db.keys)

    def read(self) -> tuple[dict[str, Any], object]:
        """Return the node's metadata and its stored version, read on the first call only.

        The metadata is the caller's to change and write back (`Database.write_metadata`).
        """
        if self._read is None:
            fetched, self.fetched = self.fetched, None
            self._read = self.db.read_for_write(self.path, fetched)
        return self._read

    @property
    def metadata(self) -> dict[str, Any]:
        """The node's metadata (see `read`)."""
        return self.read()[0]

    def describe(self) -> str:
        """Name the node for messages: "the root" or its location."""
        return f"node {'/'.join(self.path)!r}" if self.path else "the root"

    def name(self, segment: Segment) -> str:
        """Return the name `segment` stands for in this node (a ``<key>`` reads its metadata)."""
        if isinstance(segment, Literal):
            return segment.name
        return resolve_segment(segment, self.metadata, self.shown, self.describe())

    def child(self, name: str, planned: _Planned | None = None) -> Resolved:
        """Return the child `name`, unread (the caller has checked that the index lists it)."""
        path = (*self.path, name)
        if planned is None:
            return Resolved(self.db, path, self.shown)
        return Resolved(
            self.db, path, self.shown, fetched=planned.fetched.get(path), early=planned.early
        )


@dataclass(slots=True)
class _Planned:
    """The reads one descend sent ahead: metadata.json per node path, and the `Early` ones."""

    fetched: dict[NodePath, Fetched] = field(default_factory=dict)
    covered: set[NodePath] = field(default_factory=set)
    """Nodes a wave was planned for (read in it, or held by the transaction)."""
    early: Early | None = None
    waves: list[Later] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every wave of this descend (`Wave.stop`): nothing will ask for their reads."""
        for wave in self.waves:
            wave.stop()


def descend(
    db: Database, target: Target, ahead: Ahead | None = None
) -> tuple[Resolved, str | None, Location]:
    """Follow the target's segments from the root while the indexes list them.

    Returns the deepest listed node, the name of the first segment it does not list (None
    when all were found) and the segments after that one, unresolved. Where the backend
    reads concurrently, each run of segments up to a ``<key>`` is read in one wave, with
    what `ahead` asks for at the end (see the module docstring).
    """
    planned = _Planned() if db.storage.backend.read_concurrency > 1 else None
    try:
        node, missing, later = _descend(db, target, ahead, planned)
    except BaseException:
        if planned is not None:
            planned.stop()
        raise
    if missing is not None and planned is not None and not (ahead is not None and ahead.locked):
        planned.stop()  # a miss: the reads sent after it are nobody's (a put still lists)
    return node, missing, later


def _descend(
    db: Database, target: Target, ahead: Ahead | None, planned: _Planned | None
) -> tuple[Resolved, str | None, Location]:
    node = Resolved(db, (), target.shown)
    segments = target.segments
    for index, segment in enumerate(segments):
        if planned is not None and node.path not in planned.covered and node._read is None:
            _plan(db, node, segments[index:], ahead, planned)
            node.fetched = planned.fetched.get(node.path)
        name = resolve_segment(segment, node.metadata, target.shown, node.describe())
        if name not in children_of(node.metadata):
            if planned is not None:
                node.early = planned.early  # a put's listing of the node it will create
            return node, name, segments[index + 1 :]
        node = node.child(name, planned)
    if planned is not None and not segments:
        _plan(db, node, (), ahead, planned)
        node.fetched, node.early = planned.fetched.get(node.path), planned.early
    return node, None, ()


def _plan(
    db: Database, node: Resolved, rest: Location, ahead: Ahead | None, planned: _Planned
) -> None:
    """Send the reads known from `node` on (up to the next ``<key>``) in two waves.

    The paths are the metadata.json of `node` and of each node its literal segments name,
    the last one included when a ``<key>`` follows it (its metadata names the next child)
    or when `ahead` asks for the node's own. The first wave holds the indexes on the way;
    the second, sent only when asked for (after the first has proven the way), what the
    answer rests on: the last index (a find's, a ``<key>``'s node), or the node's own
    metadata with `ahead`'s file and listing. So nothing an operation returns was read
    before the index that lists it (docs/format.md, "Reads in waves"). Under the DB lock
    (`Ahead.locked`) no honest writer changes the tree: both go out at once. Nodes the
    task's transaction holds are not read.
    """
    paths = [node.path]
    for segment in rest:
        if not isinstance(segment, Literal):
            break
        paths.append((*paths[-1], segment.name))
    reached = len(paths) == len(rest) + 1  # no ``<key>`` before the target
    own = reached and ahead is not None and ahead.own
    if reached and not own:
        paths.pop()  # its parent's index proves that it exists
    planned.covered.update(paths)
    if reached and ahead is not None and not own:
        first, last = paths, []  # what comes next (a file a get streams) is read after
    else:
        first, last = paths[:-1], paths[-1:]
    unread = [path for path in first if db.unread(path)]
    after = [path for path in last if db.unread(path)]
    jobs: list[Callable[[], Any]] = [db.fetch(path) for path in after]
    end = (*node.path, *(s.name for s in rest if isinstance(s, Literal)))
    file = listing = None
    if reached and ahead is not None and db.own_tx() is None:
        if ahead.file is not None and own:  # read with the record it is checked against
            file = (ahead.file, len(jobs))
            jobs.append(functools.partial(_head, db, rel_path(end, ahead.file)))
        if ahead.listing:
            listing = len(jobs)
            jobs.append(functools.partial(db.storage.list_first, rel_path(end)))
    width = db.storage.backend.read_concurrency
    reads: list[Callable[[], Any]] = [db.fetch(path) for path in unread]
    fs = db.storage.fs  # the pool whose threads read it (`metatree._waves._pool`)
    if ahead is not None and ahead.locked:  # one wave: the second's jobs follow the first's
        wave = later = Later(reads + jobs, width, fs)
        shift = len(unread)
    else:
        wave, later, shift = Later(reads, width, fs), Later(jobs, width, fs), 0
    wave.send()
    planned.waves += [wave, later]
    for index, path in enumerate(unread):
        planned.fetched[path] = functools.partial(wave.result, index)
    for index, path in enumerate(after):
        planned.fetched[path] = functools.partial(later.result, shift + index)
    if file is not None or listing is not None:
        planned.early = Early(
            later,
            end,
            None if file is None else (file[0], shift + file[1]),
            None if listing is None else shift + listing,
        )


def _head(db: Database, rel: str) -> bytes:
    """Read the first `EARLY_BYTES` of a file, and one more (more: it is not whole)."""
    return db.storage.read_versioned(rel, EARLY_BYTES)[0]


def resolve(db: Database, target: Target, ahead: Ahead | None = None) -> Resolved:
    """Return the node the target's segments name; `NotFoundError` if an index lacks one."""
    node, missing, _ = descend(db, target, ahead)
    if missing is not None:
        raise NotFoundError(db.url(node.path, missing), "node")
    return node
