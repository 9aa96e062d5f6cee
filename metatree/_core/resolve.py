"""Resolution: from a location the user wrote to the node it names, walked once per operation.

A `Target` is a parsed location that carries the user's input as errors quote it; `descend`
is the one walk from the root (one metadata.json read per level, the last node's own only
when asked: its parent's index is what proves it exists); a `Resolved` node reads its
metadata at most once, so an operation that resolves a node and then a ``<key>`` file name
in it, or checks what it holds, passes the one result on instead of reading again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metatree._core.db import children_of
from metatree._paths import (
    Literal,
    Location,
    Segment,
    parse_file_location,
    parse_location,
    resolve_segment,
)
from metatree.errors import NotFoundError

if TYPE_CHECKING:
    from metatree._core.db import Database
    from metatree._types import NodePath

__all__ = ["Resolved", "Target", "descend", "resolve", "shown_of"]


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


@dataclass(slots=True)
class Resolved:
    """A node reached by resolving a target; its metadata is read once, when first needed."""

    db: Database = field(repr=False)
    path: NodePath
    shown: str
    """The user's input, for errors about names resolved in this node."""
    _read: tuple[dict[str, Any], object] | None = field(default=None, repr=False)

    @property
    def is_leaf(self) -> bool:
        """Whether the node is at the deepest level (it holds files, never children)."""
        return len(self.path) >= len(self.db.keys)

    def read(self) -> tuple[dict[str, Any], object]:
        """Return the node's metadata and its stored version, read on the first call only.

        The metadata is the caller's to change and write back (`Database.write_metadata`).
        """
        if self._read is None:
            self._read = self.db.read_for_write(self.path)
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

    def child(self, name: str) -> Resolved:
        """Return the child `name`, unread (the caller has checked that the index lists it)."""
        return Resolved(self.db, (*self.path, name), self.shown)


def descend(db: Database, target: Target) -> tuple[Resolved, str | None, Location]:
    """Follow the target's segments from the root while the indexes list them.

    Returns the deepest listed node, the name of the first segment it does not list (None
    when all were found) and the segments after that one, unresolved.
    """
    node = Resolved(db, (), target.shown)
    for index, segment in enumerate(target.segments):
        name = resolve_segment(segment, node.metadata, target.shown, node.describe())
        if name not in children_of(node.metadata):
            return node, name, target.segments[index + 1 :]
        node = node.child(name)
    return node, None, ()


def resolve(db: Database, target: Target) -> Resolved:
    """Return the node the target's segments name; `NotFoundError` if an index lacks one."""
    node, missing, _ = descend(db, target)
    if missing is not None:
        raise NotFoundError(db.url(node.path, missing), "node")
    return node
