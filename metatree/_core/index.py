"""A node's children index, inline (format v1) or logged (format v2, for large nodes).

Format v1 keeps the index inline: metadata.json's ``children`` list, rewritten whole by every
put, so one put costs O(siblings) and a million-child node holds a 23 MB list that every write
moves twice. Past `Database.index_threshold` children a node switches to format v2
(docs/format.md, "Format v2"): the inline list stays as it was (the *mirror*, what metatreedb
sees) and every later change is a small *piece* in the node's log directory::

    <node>/.metatree.index/<generation>/00000000000000000007.json   {"seq": 7, "add": [...], "remove": [...]}
    <node>/.metatree.index/<generation>/snapshot-00000000000000000032.json   {"seq": 32, "children": [...]}

A piece is created with the backend's exclusive create (`Storage.create_exclusive`: S3
``If-None-Match``, a hard link on local disk, a rename without overwrite on WebHDFS), named by
the next sequence number, so creating it is the commit point of a put and two writers can
never both commit sequence n (the loser, a writer whose lease expired, gets `LockLostError`).
From time to time the writer holding the lock folds the pieces into a snapshot (the names the
log holds at that number) and deletes the folded pieces. Readers list the directory once
(the newest snapshot, then each piece after it in order) and cache what they read: pieces and
snapshots never change once written, so a cached one is never stale.

The children of a v2 node are the mirror's names followed by the log's. In memory they are a
`Children`: a read-only collection with O(1) membership, plus the changes a write made that
are not stored yet (`Children.added`, `Children.removed`), so a put costs O(1) however many
siblings there are. `Database.put_metadata` writes those changes as one piece.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import orjson

from metatree._metadata import CHILDREN, check_names, dump_metadata, load_metadata
from metatree._names import METADATA_FILE
from metatree.errors import (
    CorruptMetadataError,
    LockLostError,
    MetatreeError,
    NotFoundError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from metatree._core.db import Database
    from metatree._metadata_cache import Parsed
    from metatree._types import NodePath

__all__ = [
    "DEFAULT_THRESHOLD",
    "INDEX_DIR",
    "INDEX_KEY",
    "Children",
    "append",
    "attach",
    "discard",
    "find_lookalike",
    "write",
]

INDEX_KEY: Final = ".metatree.index"
"""metadata.json key of a v2 node: ``{"format": 2, "generation": "<32 hex>"}``."""
INDEX_DIR: Final = ".metatree.index"
"""The node's directory of index logs, one subdirectory per generation."""
LOGGED: Final = "logged name"
"""How a bad name read from a log (a snapshot, a piece) is called: not an inline "index entry"."""
DEFAULT_THRESHOLD: Final = 10_000
"""Children a node keeps inline before its index becomes a log (`Database.index_threshold`)."""
THRESHOLD_ENV: Final = "METATREE_INDEX_THRESHOLD"
"""Environment override of the default threshold (the test suite runs everything at 3)."""
COMPACT_PIECES: Final = 32
"""Fold the log into a snapshot once this many pieces follow the last one..."""
COMPACT_NAMES: Final = 50_000
"""... or once the pieces name this many children (a reader applies them all)."""
_LISTING_KEPT: Final = 4 * COMPACT_PIECES
"""Entries of a log listing `LogCache` keeps to compare the next one with, at most."""
_RETRIES: Final = 5
"""Lists of the log a reader makes while a compaction deletes what it listed."""

_PIECE = re.compile(r"([0-9]{20})\.json")
_SNAPSHOT = re.compile(r"snapshot-([0-9]{20})\.json")
_GENERATION = re.compile(r"[0-9a-f]{32}")


def default_threshold() -> int:
    """Return the threshold of new `Database` objects: `THRESHOLD_ENV` or `DEFAULT_THRESHOLD`."""
    text = os.environ.get(THRESHOLD_ENV)
    if text is None:
        return DEFAULT_THRESHOLD
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{THRESHOLD_ENV}={text!r} is not a non-negative integer")
    return int(text)


# -- the stored log ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Base:
    """A snapshot's names (or none): shared by every state built on it, never copied."""

    seq: int
    names: tuple[str, ...]
    members: frozenset[str]
    folded: dict[Callable[[str], str], dict[str, str]] = field(default_factory=dict, compare=False)


_EMPTY_BASE: Final = _Base(0, (), frozenset())


@dataclass(frozen=True)
class Log:
    """A v2 node's logged names at one sequence number: a snapshot and the pieces after it.

    Immutable, so a state can be cached and shared; applying a piece makes a new one that
    shares the snapshot and copies only the (bounded) tail.
    """

    generation: str
    seq: int
    base: _Base
    pieces: int = 0
    """Pieces applied since the snapshot."""
    added: tuple[str, ...] = ()
    """Names the pieces added, in order (a name removed from the snapshot and added again
    is here and in `dropped`)."""
    dropped: frozenset[str] = frozenset()
    """Names of the snapshot that pieces removed."""
    doc: tuple[int, dict[str, Any]] | None = None
    """The newest metadata.json a piece (or the snapshot) carried, with its number: a
    transaction that changed the node's own metadata and its children commits both in one
    piece, and metadata.json is rewritten after it (`write`)."""
    folded: dict[Callable[[str], str], dict[str, str]] = field(
        default_factory=dict, compare=False, repr=False
    )
    added_set: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    """`added` for membership (O(1), not a scan of the tail)."""

    def __contains__(self, name: object) -> bool:
        return (name in self.base.members and name not in self.dropped) or name in self.added_set

    def __iter__(self) -> Iterator[str]:
        dropped = self.dropped
        if dropped:
            yield from (n for n in self.base.names if n not in dropped)
        else:
            yield from self.base.names
        yield from self.added

    def __len__(self) -> int:
        return len(self.base.names) - len(self.dropped) + len(self.added)

    @property
    def tail(self) -> int:
        """How many names the pieces since the snapshot hold (what a reader applies)."""
        return len(self.added) + len(self.dropped)

    def lookalike(self, wanted: str, fold: Callable[[str], str]) -> str | None:
        """Return a name the pieces added that folds to `wanted` (table cached with the state)."""
        table = self.folded.get(fold)
        if table is None:
            table = {}
            for name in self.added:
                table.setdefault(fold(name), name)
            # published once whole: a state derived meanwhile (`_appended`, another thread)
            # must not copy, and carry forward, a table half built
            self.folded[fold] = table
        return table.get(wanted)

    def apply(
        self,
        seq: int,
        add: Iterable[str],
        remove: Iterable[str],
        doc: dict[str, Any] | None = None,
    ) -> Log:
        """Return the state after piece `seq` (removals first, then additions).

        A piece that only adds (every put) extends the tail with C-level copies and carries
        the look-alike tables over: rebuilding them folded every name of the tail again, up
        to 50 000 per put (a put into a million-child node cost 10.6 ms, not 3).
        """
        remove = tuple(remove)
        if not remove:
            return self._appended(seq, add, doc)
        added = dict.fromkeys(self.added)
        dropped = set(self.dropped)
        for name in remove:
            if name in added:
                del added[name]
            elif name in self.base.members:
                dropped.add(name)
        for name in add:
            if name not in added and (name not in self.base.members or name in dropped):
                added[name] = None
        return replace(
            self,
            seq=seq,
            pieces=self.pieces + 1,
            added=tuple(added),
            added_set=frozenset(added),
            dropped=frozenset(dropped),
            folded={},
            doc=self.doc if doc is None else (seq, doc),
        )

    def _appended(self, seq: int, add: Iterable[str], doc: dict[str, Any] | None) -> Log:
        """`apply` of a piece that removes nothing: the tail and its tables extended."""
        members, dropped, had = self.base.members, self.dropped, self.added_set
        new = [n for n in dict.fromkeys(add) if n not in had and (n not in members or n in dropped)]
        folded = {}
        for fold, table in tuple(self.folded.items()):  # another thread may add a fold
            table = dict(table)
            for name in new:
                table.setdefault(fold(name), name)
            folded[fold] = table
        return replace(
            self,
            seq=seq,
            pieces=self.pieces + 1,
            added=self.added + tuple(new),
            added_set=had.union(new),
            folded=folded,
            doc=self.doc if doc is None else (seq, doc),
        )


# -- the index a read returns ----------------------------------------------------------------
class _Run:
    """Names in order, appended to by successive views without a copy (a transaction's puts).

    A view (`Children`) sees the first n names; appending to the newest view appends here,
    so k puts into one node in a transaction cost O(k), not O(k^2). An older view appended
    to (a fork) copies its n names first. Names in a run are distinct.
    """

    __slots__ = ("_asked", "_pos", "folded", "names")

    def __init__(self, names: Iterable[str] = (), *, unique: bool = False) -> None:
        self.names: list[str] = list(names) if unique else list(dict.fromkeys(names))
        self._pos: dict[str, int] | None = None
        self._asked = 0
        self.folded: dict[Callable[[str], str], tuple[dict[str, int], int]] = {}

    @property
    def pos(self) -> dict[str, int]:
        """Each name's position; built when first needed (a find asks one name, once)."""
        if self._pos is None:
            self._pos = {name: i for i, name in enumerate(self.names)}
        return self._pos

    def has(self, name: object, n: int) -> bool:
        if not isinstance(name, str):
            return False
        if self._pos is None and n == len(self.names) and self._asked < 2:
            self._asked += 1  # a C-level scan costs less than the table, for a few asks
            return name in self.names
        return self.pos.get(name, n) < n

    def append(self, name: str) -> None:
        if self._pos is not None:
            self._pos.setdefault(name, len(self.names))
        self.names.append(name)

    def lookalike(self, wanted: str, fold: Callable[[str], str], n: int) -> str | None:
        """Return the first of the first `n` names that folds to `wanted` (tables kept up)."""
        table, upto = self.folded.get(fold, ({}, 0))
        for i in range(upto, len(self.names)):
            table.setdefault(fold(self.names[i]), i)
        self.folded[fold] = (table, len(self.names))
        i = table.get(wanted, n)
        return self.names[i] if i < n else None


class Children:
    """A v2 node's children: the mirror (inline), the log, and changes not written yet.

    Supports what the code asks of an index: ``in`` (O(1)), iteration in order, ``len``.
    `with_added` and `without` return a new `Children`; nothing here does I/O.
    """

    __slots__ = ("_added", "_mirror", "_n", "_overlap", "doc", "fresh", "log", "removed")

    def __init__(
        self,
        mirror: Iterable[str] | _Run,
        log: Log,
        doc: dict[str, Any] | None,
        added: Iterable[str] | _Run = (),
        removed: frozenset[str] = frozenset(),
        *,
        fresh: bool = False,
    ) -> None:
        self._mirror = mirror if isinstance(mirror, _Run) else _Run(mirror)
        self.log = log
        self.doc = doc
        """The node's other metadata as stored (None: metadata.json must be written)."""
        self._added = added if isinstance(added, _Run) else _Run(added)
        self._n = len(self._added.names)
        self.removed = removed
        """Stored names this view removed (an added name removed is just not added)."""
        self.fresh = fresh
        """A v1 node switching to v2 in this write: no metadata.json names its log yet."""
        self._overlap: bool | None = None  # a name both inline and logged (found once)

    @property
    def mirror(self) -> tuple[str, ...]:
        """The names stored inline (metadata.json's ``children``), as read."""
        return tuple(self._mirror.names)

    @property
    def added(self) -> tuple[str, ...]:
        """The names this view added, in order (not stored yet)."""
        return tuple(self._added.names[: self._n])

    def inline(self, name: str) -> bool:
        """Whether `name` is stored inline (removing it rewrites metadata.json)."""
        return self._mirror.has(name, len(self._mirror.names))

    def __contains__(self, name: object) -> bool:
        if self._added.has(name, self._n):
            return True
        if name in self.removed:
            return False
        return self._mirror.has(name, len(self._mirror.names)) or name in self.log

    def __iter__(self) -> Iterator[str]:
        removed, mirror = self.removed, self._mirror.pos
        for name in self._mirror.names:
            if name not in removed:
                yield name
        for name in self.log:
            if name not in mirror and name not in removed:
                yield name
        yield from self._added.names[: self._n]

    def __reversed__(self) -> Iterator[str]:
        return reversed(list(self))

    def __len__(self) -> int:
        if self._overlap is None:  # shared by the views a transaction's puts derive
            self._overlap = any(name in self.log for name in self._mirror.names)
        if self.removed or self._overlap:
            return sum(1 for _ in self)  # a name inline and logged (metatreedb added it)
        return len(self._mirror.names) + len(self.log) + self._n

    def _derive(self, added: _Run, removed: frozenset[str]) -> Children:
        child = Children(self._mirror, self.log, self.doc, added, removed, fresh=self.fresh)
        child._overlap = self._overlap
        return child

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Children | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by content

    def __repr__(self) -> str:
        return f"Children({len(self)} names, generation {self.log.generation})"

    def with_added(self, name: str) -> Children:
        """Return the index with `name` appended (not stored until the node is written)."""
        run = self._added
        if self._n != len(run.names) or run.has(name, self._n):  # a fork, or added again
            run = _Run(n for n in run.names[: self._n] if n != name)
        run.append(name)
        return self._derive(run, self.removed)

    def without(self, name: str) -> Children:
        """Return the index without `name`."""
        added = _Run(n for n in self._added.names[: self._n] if n != name)
        stored = self._mirror.has(name, len(self._mirror.names)) or name in self.log
        removed = self.removed | {name} if stored else self.removed
        return self._derive(added, removed)

    def lookalike(self, wanted: str, fold: Callable[[str], str]) -> str | None:
        """Return a child whose folded name is `wanted`, or None, without a scan of them all.

        Each part keeps a table of its folded names: the snapshot's is built once (cached
        with it), the others grow with their runs.
        """
        base = self.log.base
        table = base.folded.get(fold)
        if table is None:
            table = {}
            for n in base.names:
                table.setdefault(fold(n), n)
            base.folded[fold] = table  # published whole (another thread may read it)
        candidates = [
            table.get(wanted),
            self._mirror.lookalike(wanted, fold, len(self._mirror.names)),
            self.log.lookalike(wanted, fold),
            self._added.lookalike(wanted, fold, self._n),
        ]
        return next((c for c in candidates if c is not None and c in self), None)


def append(metadata: dict[str, Any], name: str, threshold: int) -> None:
    """Add `name` to the node's index; past `threshold` children the node becomes v2."""
    children = metadata.get(CHILDREN, [])
    if isinstance(children, Children):
        metadata[CHILDREN] = children.with_added(name)
    elif len(children) + 1 > threshold:
        log = Log(uuid.uuid4().hex, 0, _EMPTY_BASE)
        metadata[CHILDREN] = Children(tuple(children), log, None, (name,), fresh=True)
        metadata[INDEX_KEY] = _marker(log.generation, 0)
    else:
        metadata[CHILDREN] = [*children, name]


def discard(metadata: dict[str, Any], name: str) -> None:
    """Remove `name` from the node's index."""
    children = metadata.get(CHILDREN, [])
    if isinstance(children, Children):
        metadata[CHILDREN] = children.without(name)
    else:
        metadata[CHILDREN] = [c for c in children if c != name]


def find_lookalike(children: Iterable[str], wanted: str, fold: Callable[[str], str]) -> str | None:
    """Return a child whose folded name is `wanted`, or None (a v2 index: without a scan)."""
    if isinstance(children, Children):
        return children.lookalike(wanted, fold)
    return next((c for c in children if fold(c) == wanted), None)


# -- reading ---------------------------------------------------------------------------------
class LogCache:
    """The newest log state read per node directory (pieces never change: never stale)."""

    def __init__(self, size: int = 16) -> None:
        self._states: OrderedDict[tuple[str, str], Log] = OrderedDict()
        self._listings: OrderedDict[
            str, tuple[dict[str, str], tuple[tuple[int, ...], tuple[int, ...]]]
        ] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, rel: str, generation: str) -> Log | None:
        with self._lock:
            state = self._states.get((rel, generation))
            if state is not None:
                self._states.move_to_end((rel, generation))
            return state

    def clear(self) -> None:
        """Forget every state: the next read of each log reads what is stored (fsck's view).

        A cached state stays right for readers (a legitimate snapshot names exactly the
        pieces it folds), so a snapshot planted at a number already read is never read
        again by this process; a check of what is stored must not lean on that.
        """
        with self._lock:
            self._states.clear()
            self._listings.clear()

    def numbers(
        self, rel: str, listed: dict[str, str]
    ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Return the numbers of the log `rel` parsed from a listing equal to `listed`."""
        with self._lock:
            known = self._listings.get(rel)
        if known is None or known[0] != listed:
            return None
        return known[1]

    def remember_numbers(
        self, rel: str, listed: dict[str, str], numbers: tuple[list[int], list[int]]
    ) -> None:
        """Keep the numbers parsed from a listing of `rel` (the newest listing per log).

        Only a listing of a live log's size (a snapshot and the pieces up to a compaction,
        a few temporaries): a directory a co-writer filled with junk is parsed every time,
        not held (16 logs of 100 000 planted names held 200 MB).
        """
        if len(listed) > _LISTING_KEPT:
            return
        with self._lock:
            self._listings[rel] = (dict(listed), (tuple(numbers[0]), tuple(numbers[1])))
            self._listings.move_to_end(rel)
            while len(self._listings) > self._size:
                self._listings.popitem(last=False)

    def put(self, rel: str, state: Log) -> None:
        with self._lock:
            key = (rel, state.generation)
            old = self._states.get(key)
            if old is None or old.seq <= state.seq:
                self._states[key] = state
                self._states.move_to_end(key)
            while len(self._states) > self._size:
                self._states.popitem(last=False)


def log_dir(path: NodePath, generation: str) -> str:
    """Return the storage path of a node's log of one generation."""
    return "/".join((*path, INDEX_DIR, generation))


def attach(
    db: Database,
    path: NodePath,
    metadata: dict[str, Any],
    url: str | None,
    parsed: Parsed | None = None,
) -> None:
    """Replace a v2 node's ``children`` by its whole index (`Children`); v1 is left alone.

    Reads the log (one listing, then what the cache lacks). The marker is stored data: one
    that is not ``{"format": 2, "generation": <32 hex>}`` is `CorruptMetadataError`.
    `url` names metadata.json in errors (None: made from `path` when one is raised).
    `parsed` is the cached document `metadata` is a copy of (`Database.metadata_cache`):
    its mirror is then taken from there, with the tables built on it by earlier reads, and
    `metadata` need not hold a ``children`` copy.
    """
    marker = metadata.get(INDEX_KEY)
    if marker is None:
        return
    checked = _check_marker(marker)
    if checked is None:
        where = db.storage.url_of("/".join((*path, METADATA_FILE))) if url is None else url
        raise CorruptMetadataError(where, f"{INDEX_KEY!r} is not a format 2 index marker")
    generation, written = checked
    log = read_log(db, path, generation)
    if log.seq < written:
        # metadata.json was written at log number `written`, and logs only grow: this one
        # was replaced meanwhile (a reindex, a compaction to a new generation) or damaged
        where = db.storage.url_of(log_dir(path, generation))
        raise Replaced(where, f"the index log ends at {log.seq}, metadata.json says {written}")
    if log.seq == 0 and _stored_generation(db, path) != generation:
        # an empty log is that too if metadata.json names another one now (a reindex to
        # format 1 deletes the log: listed after, it is empty): one more read, only then
        where = db.storage.url_of(log_dir(path, generation))
        raise Replaced(where, "the index log is empty, and metadata.json no longer names it")
    doc: dict[str, Any] | None = {k: v for k, v in metadata.items() if k != CHILDREN}
    if log.doc is not None and log.doc[0] > written:
        # a piece committed metadata that metadata.json does not show yet (its writer died
        # before the rewrite): it is the node's metadata; the next write stores it inline
        metadata.clear()
        metadata.update(copy.deepcopy(log.doc[1]))  # the cached state's own stays as read
        doc = None
        parsed = None
    metadata[CHILDREN] = Children(_mirror(metadata, parsed), log, doc)


def _mirror(metadata: dict[str, Any], parsed: Parsed | None) -> _Run:
    if parsed is None:
        return _Run(metadata.get(CHILDREN, []), unique=True)  # load_metadata dropped repeats
    return mirror_of(parsed)


def mirror_of(parsed: Parsed) -> _Run:
    """Return the mirror of a cached metadata.json as a `_Run`, built once per document.

    The mirror never changes while its bytes are stored (removals and additions are kept
    apart, in `Children.removed` and `Children.added`), so every read of those bytes
    shares one run: its position table and look-alike tables are built once, not once
    per read (a put into a node with a 10 000-name mirror folded every name each time).
    """
    run = parsed.derived.get(_MIRROR)
    if run is None:
        run = parsed.derived.setdefault(_MIRROR, _Run(parsed.doc.get(CHILDREN, []), unique=True))
    assert isinstance(run, _Run)
    return run


_MIRROR: Final = "index.mirror"
"""`Parsed.derived` key of the mirror's `_Run`."""


def _check_marker(marker: object) -> tuple[str, int] | None:
    """Return the generation and the log number metadata.json was written at (None: bad)."""
    if (
        not isinstance(marker, dict)
        or marker.keys() != {"format", "generation", "seq"}
        or type(marker["format"]) is not int
        or marker["format"] != 2
        or not isinstance(marker["generation"], str)
        or not _GENERATION.fullmatch(marker["generation"])
        or type(marker["seq"]) is not int
        or marker["seq"] < 0
    ):
        return None
    return marker["generation"], marker["seq"]


def _marker(generation: str, seq: int) -> dict[str, Any]:
    return {"format": 2, "generation": generation, "seq": seq}


def read_log(db: Database, path: NodePath, generation: str) -> Log:
    """Return the node's log as stored now: the newest snapshot and every piece after it."""
    rel = log_dir(path, generation)
    reason = ""
    for _ in range(_RETRIES):
        snapshots, pieces = _listing(db, rel)
        try:
            state = _load(db, rel, generation, snapshots, pieces)
        except _Vanished as exc:
            reason = str(exc) or "listed index pieces vanished"
            continue  # a compaction deleted what we listed: list again
        db.index_cache.put(rel, state)
        return state
    raise Replaced(db.storage.url_of(rel), reason)


class Replaced(Exception):
    """A node's log does not follow the metadata.json that named it: read that again.

    A reader lists a log after reading the metadata.json that names it; a reindex or a
    rebuild in between replaces both (pieces vanish, or fewer are left than metadata.json
    counts). `metatree._core.db.Database` reads the node again, a few times: damage stays,
    and is then reported as `CorruptMetadataError` (`url`, `reason`).
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class _Vanished(Exception):
    """A listed piece or snapshot was gone when read (a compaction deleted it)."""


def _listing(db: Database, rel: str) -> tuple[list[int], list[int]]:
    """Return the sequence numbers of the snapshots and of the pieces in `rel`, ascending.

    A listing equal to the one before (every read of a node lists its log) is not parsed
    again: the numbers are a function of the listing alone.
    """
    listed = _list_log(db, rel)
    known = db.index_cache.numbers(rel, listed)
    if known is not None:
        return list(known[0]), list(known[1])
    numbers = _numbers(listed)
    db.index_cache.remember_numbers(rel, listed, numbers)
    return numbers


def _list_log(db: Database, rel: str) -> dict[str, str]:
    """List a log directory (a missing one is empty; one that is a file is damage)."""
    try:
        listed = db.storage.listdir(rel)
    except NotFoundError:
        listed = {}
    if not listed and db.storage.kind(rel) == "file":  # an empty log lists nothing too
        raise CorruptMetadataError(db.storage.url_of(rel), "the index log is a file")
    return _log_entries(db, rel, listed)


def _numbers(entries: dict[str, str]) -> tuple[list[int], list[int]]:
    """Return the numbers of the snapshots and of the pieces a log's listing holds, ascending."""
    snapshots, pieces = [], []
    for name, kind in entries.items():
        if kind != "file":
            continue
        if (match := _SNAPSHOT.fullmatch(name)) is not None:
            snapshots.append(int(match[1]))
        elif (match := _PIECE.fullmatch(name)) is not None:
            pieces.append(int(match[1]))
    return sorted(snapshots), sorted(pieces)


def _log_entries(db: Database, rel: str, listed: dict[str, str]) -> dict[str, str]:
    """Return the listing with the true kind of a log name listed as a directory.

    Where a name can be a file and a directory at once (S3: a key and a prefix), a listing
    calls it a directory; a planted prefix must not hide a piece there (one request to ask).
    """
    if db.storage.capabilities.exclusive_names:
        return listed
    out = dict(listed)
    for name, kind in listed.items():
        if kind == "directory" and (_PIECE.fullmatch(name) or _SNAPSHOT.fullmatch(name)):
            out[name] = db.storage.kind(f"{rel}/{name}") or kind
    return out


def _load(db: Database, rel: str, generation: str, snapshots: list[int], pieces: list[int]) -> Log:
    floor = snapshots[-1] if snapshots else 0
    cached = db.index_cache.get(rel, generation)
    if cached is not None and cached.seq >= floor:
        state = cached
    elif snapshots:
        base, doc = _read_snapshot(db, rel, floor)
        state = Log(generation, floor, base, doc=doc)
    else:
        state = Log(generation, 0, _EMPTY_BASE)
    todo = [n for n in pieces if n > state.seq]
    if todo != list(range(state.seq + 1, state.seq + 1 + len(todo))) or (
        cached is not None and state is cached and cached.seq > max([floor, *pieces])
    ):
        # a gap, or committed pieces gone: a listing made while a compaction swapped pieces
        # for a snapshot can miss both; listed again, only damage stays
        raise _Vanished(f"index pieces {todo[:5]} do not follow {state.seq}")
    if todo:
        names = [f"{rel}/{n:020d}.json" for n in todo]
        for seq, data in zip(todo, db.storage.read_many(names, db.max_metadata_bytes), strict=True):
            if isinstance(data, NotFoundError):
                raise _Vanished(f"index piece {seq} vanished")
            if isinstance(data, MetatreeError):
                raise data
            url = db.storage.url_of(f"{rel}/{seq:020d}.json")
            add, remove, carried = _parse_piece(data, seq, url, generation)
            state = state.apply(seq, add, remove, carried)
    return state


def _read_snapshot(
    db: Database, rel: str, seq: int
) -> tuple[_Base, tuple[int, dict[str, Any]] | None]:
    name = f"{rel}/snapshot-{seq:020d}.json"
    url = db.storage.url_of(name)
    try:
        data, _ = db.storage.read_versioned(name, db.max_metadata_bytes)
    except NotFoundError:
        raise _Vanished(f"snapshot {seq} vanished") from None
    parsed = _parse(data, url, db.max_metadata_bytes)
    if not {"seq", "children"} <= parsed.keys() <= {"seq", "children", "doc"} or not _is_seq(
        parsed["seq"], seq
    ):
        raise CorruptMetadataError(url, "not a snapshot of this sequence number")
    names: list[str] = parsed["children"]  # checked, repeats dropped, by load_metadata
    doc = None
    if "doc" in parsed:
        entry = parsed["doc"]
        if not isinstance(entry, list) or len(entry) != 2 or type(entry[0]) is not int:
            raise CorruptMetadataError(url, "a malformed 'doc'")
        doc = (entry[0], _doc(entry[1], url, rel.rsplit("/", 1)[-1], entry[0]))
    return _Base(seq, tuple(names), frozenset(names)), doc


def _is_seq(value: object, seq: int) -> bool:
    return type(value) is int and value == seq


def _parse_piece(
    data: bytes, seq: int, url: str, generation: str
) -> tuple[list[str], list[str], dict[str, Any] | None]:
    parsed = _parse(data, url, None)
    if not parsed.keys() <= {"seq", "id", "add", "remove", "doc"} or not _is_seq(
        parsed.get("seq"), seq
    ):
        raise CorruptMetadataError(url, f"not the index piece {seq}")
    add = _names(parsed.get("add", []), url, "add")
    remove = _names(parsed.get("remove", []), url, "remove")
    doc = _doc(parsed["doc"], url, generation, seq) if "doc" in parsed else None
    return add, remove, doc


def _doc(value: object, url: str, generation: str, seq: int) -> dict[str, Any]:
    """Check a node's metadata.json carried by a piece as a read of metadata.json is checked."""
    if not isinstance(value, dict):
        raise CorruptMetadataError(url, "the metadata it carries is not an object")
    parsed = load_metadata(dump_metadata(value), url, LOGGED)
    if parsed.get(INDEX_KEY) != _marker(generation, seq):
        raise CorruptMetadataError(url, "the metadata it carries is not of this log and number")
    return parsed


def _parse(data: bytes, url: str, limit: int | None) -> dict[str, Any]:
    """Parse a piece or snapshot as metadata.json is parsed (depth bound, exact integers)."""
    if limit is not None and len(data) > limit:
        raise CorruptMetadataError(url, f"larger than {limit} bytes")
    return load_metadata(data, url, LOGGED)


def _names(value: object, url: str, what: str) -> list[str]:
    """Check a stored list of child names as `load_metadata` checks an inline index."""
    return check_names(value, url, repr(what), LOGGED)


def stale_entries(db: Database, path: NodePath, generation: str) -> list[str]:
    """Return the names in a node's live log that readers ignore (for fsck to clear).

    Temporaries of a killed write, and pieces and snapshots at or below the newest snapshot
    (a compaction killed before it deleted them). The newest snapshot and the pieces after
    it are the log: never listed here.
    """
    listed = _list_log(db, log_dir(path, generation))
    snapshots, _ = _numbers(listed)
    floor = snapshots[-1] if snapshots else 0
    stale = []
    for name, kind in listed.items():
        if kind != "file":  # a directory at a piece's name would block the next commit
            stale.append(name)
            continue
        piece, snapshot = _PIECE.fullmatch(name), _SNAPSHOT.fullmatch(name)
        if snapshot is not None and int(snapshot[1]) == floor:
            continue
        if piece is not None and int(piece[1]) > floor:
            continue
        stale.append(name)
    return stale


# -- writing ---------------------------------------------------------------------------------
def write(
    db: Database, path: NodePath, metadata: dict[str, Any], *, expect: object, durable: bool
) -> None:
    """Store a v2 node's metadata: its log's changes as one piece, the rest in metadata.json.

    - Only children changed (a put): the piece alone, the commit point.
    - Only the node's own metadata or its mirror changed: metadata.json alone (conditional on
      `expect`), as in format v1.
    - Both (a transaction): the piece carries the new metadata.json too, so one object
      commits both; metadata.json is rewritten after it. A reader that finds a piece's
      metadata newer than metadata.json's (the writer died between) uses the piece's.
    """
    children: Children = metadata[CHILDREN]
    log = children.log
    rest = {k: v for k, v in metadata.items() if k != CHILDREN}
    # the mirror changes only by removals: asked of them, not of a copy of the whole mirror
    changed = (
        children.doc is None
        or rest != children.doc
        or any(children.inline(name) for name in children.removed)
    )
    inline = inline_form(metadata) if changed else rest
    # a name both inline and logged (metatreedb appended it inline) goes from both
    logged_removed = [n for n in children.removed if not children.inline(n) or n in log]
    if not children.added and not logged_removed:
        if changed:
            inline[INDEX_KEY] = _marker(log.generation, log.seq)
            db.put_inline(path, inline, expect=expect, durable=durable)
        return
    seq = log.seq + 1
    piece: dict[str, Any] = {"seq": seq, "id": uuid.uuid4().hex}
    rel = log_dir(path, log.generation)
    if children.fresh:
        _switch(db, path, rel, piece, children, inline, expect=expect, durable=durable)
        return
    if logged_removed:
        piece["remove"] = logged_removed
    if children.added:
        piece["add"] = list(children.added)
    if changed:
        inline[INDEX_KEY] = _marker(log.generation, seq)
        piece["doc"] = inline
    _commit(db, path, rel, seq, piece)
    state = log.apply(seq, children.added, logged_removed, inline if changed else None)
    db.index_cache.put(rel, state)
    if changed:  # the piece committed it; metadata.json catches up (readers need not wait)
        with contextlib.suppress(LockLostError):  # rewritten meanwhile by whoever read it
            db.put_inline(path, inline, expect=expect, durable=durable)
    if state.pieces >= COMPACT_PIECES or state.tail >= COMPACT_NAMES:
        compact(db, path, state)


def _switch(
    db: Database,
    path: NodePath,
    rel: str,
    piece: dict[str, Any],
    children: Children,
    inline: dict[str, Any],
    *,
    expect: object,
    durable: bool,
) -> None:
    """Switch a v1 node to v2: its first piece, then metadata.json naming the log (the commit).

    The generation is new, so nothing else can be in its log, and no reader looks there
    before metadata.json names it: the conditional rewrite of metadata.json commits the
    switch, the piece's children and any other change of the node at once. A crash before
    it leaves a log no marker names (fsck removes it).
    """
    if children.added:
        piece["add"] = list(children.added)
    name = f"{rel}/{1:020d}.json"
    if not db.storage.create_exclusive(name, dump_metadata(piece)) and not _ours(
        db, name, piece["id"]
    ):  # a retried create whose first reply was lost finds its own piece there
        raise CorruptMetadataError(db.storage.url_of(name), "a new index log is not empty")
    inline[INDEX_KEY] = _marker(children.log.generation, 1)
    db.put_inline(path, inline, expect=expect, durable=durable)
    db.index_cache.put(rel, children.log.apply(1, children.added, ()))


def _commit(db: Database, path: NodePath, rel: str, seq: int, piece: dict[str, Any]) -> None:
    """Create piece `seq`, then check that it is a live piece of the node's current log.

    The exclusive create refuses a number another writer committed. A writer whose lease
    lapsed can still find its number free where the log moved on without it: a compaction
    deleted the folded pieces, or `reindex` (or a remove) deleted the whole generation. One
    listing tells: the pieces from the newest snapshot up to ours must all be there, and for
    a log's first piece metadata.json must still name the generation. Otherwise the piece is
    taken back and nothing was committed (`LockLostError`).
    """
    name = f"{rel}/{seq:020d}.json"
    url = db.storage.url_of(name)
    body = dump_metadata(piece)
    if not db.storage.create_exclusive(name, body) and not _ours(db, name, piece["id"]):
        raise LockLostError(
            db.lock.name,
            f"{url} was committed by another writer (our lease must have expired meanwhile)",
        )
    snapshots, pieces = _listing(db, rel)
    floor = snapshots[-1] if snapshots else 0
    live = floor < seq and [n for n in pieces if floor < n <= seq] == list(
        range(floor + 1, seq + 1)
    )
    if live and floor == 0 and seq == 1:
        live = _stored_generation(db, path) == rel.rsplit("/", 1)[-1]
    if not live:
        with contextlib.suppress(NotFoundError):
            db.storage.remove_file(name)
        raise LockLostError(
            db.lock.name,
            f"{url} was written after its log moved on (compacted or replaced); our lease "
            "must have expired meanwhile: nothing was committed",
        )


def _stored_generation(db: Database, path: NodePath) -> str | None:
    """Return the generation the node's stored metadata.json names, None if none or unreadable.

    Read from storage, never through `Database.read_metadata`: inside a transaction that
    returns the staged copy, which names the log the writer started from, not the live one.
    """
    rel = "/".join((*path, METADATA_FILE))
    try:
        data, _ = db.storage.read_versioned(rel, db.max_metadata_bytes)
        marker = db.parse_metadata(data, db.storage.url_of(rel), rel).get(INDEX_KEY)
    except MetatreeError:
        return None
    return marker.get("generation") if isinstance(marker, dict) else None


def _ours(db: Database, name: str, piece_id: str) -> bool:
    """Whether the piece at `name` is the one we wrote (a create whose reply was lost).

    A retried conditional create answers that the object exists: ours, when it holds our
    random id. A directory (or anything unreadable) there is damage, not another writer.
    """
    kind = db.storage.kind(name)
    if kind is None:
        return False
    try:
        if kind != "file":
            raise CorruptMetadataError(db.storage.url_of(name), f"it is a {kind}")
        data = db.storage.read_bytes(name)
    except MetatreeError as exc:
        raise CorruptMetadataError(
            db.storage.url_of(name), "something else holds the name of the next index piece"
        ) from exc
    try:
        return bool(orjson.loads(data).get("id") == piece_id)
    except (orjson.JSONDecodeError, AttributeError):
        return False


def inline_form(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Return what a node's metadata.json holds: for a v2 node, its mirror inline, not the log."""
    children = metadata.get(CHILDREN)
    if not isinstance(children, Children):
        return dict(metadata)
    mirror = [n for n in children.mirror if n not in children.removed]
    rest = {k: v for k, v in metadata.items() if k != CHILDREN}
    return {CHILDREN: mirror, **rest} if mirror else rest


def compact(db: Database, path: NodePath, state: Log) -> None:
    """Fold the log into a snapshot at `state.seq`, then delete what it folded.

    Safe at any crash point: a snapshot holds exactly the names of the pieces up to its
    number, so readers take it or the pieces alike; pieces at or below the newest snapshot
    are ignored, whoever deleted them or not.
    """
    rel = log_dir(path, state.generation)
    names = list(state)
    snapshot: dict[str, Any] = {"seq": state.seq, "children": names}
    if state.doc is not None:  # kept, should metadata.json not have caught up with it
        snapshot["doc"] = list(state.doc)
    body = dump_metadata(snapshot)
    db.storage.create_exclusive(f"{rel}/snapshot-{state.seq:020d}.json", body)
    base = _Base(state.seq, tuple(names), frozenset(names))
    db.index_cache.put(rel, Log(state.generation, state.seq, base, doc=state.doc))
    snapshots, pieces = _listing(db, rel)
    stale = [f"snapshot-{n:020d}.json" for n in snapshots if n < state.seq]
    stale += [f"{n:020d}.json" for n in pieces if n <= state.seq]
    for old in stale:
        try:
            db.storage.remove_file(f"{rel}/{old}")
        except NotFoundError:
            continue


def to_inline(db: Database, path: NodePath, metadata: dict[str, Any], expect: object) -> None:
    """Store a v2 node as format v1 again: its whole index inline, then drop the log."""
    children = metadata[CHILDREN]
    if not isinstance(children, Children):
        return
    rest = {k: v for k, v in metadata.items() if k not in (CHILDREN, INDEX_KEY)}
    names = list(children)
    db.put_inline(path, {CHILDREN: names, **rest} if names else rest, expect=expect, durable=True)
    with contextlib.suppress(NotFoundError):
        db.storage.remove_tree("/".join((*path, INDEX_DIR)))


def to_log(db: Database, path: NodePath, metadata: dict[str, Any], expect: object) -> None:
    """Store a v1 node as format v2 (its inline index becomes the mirror)."""
    if isinstance(metadata.get(CHILDREN), Children):
        return
    inline = {**metadata, INDEX_KEY: _marker(uuid.uuid4().hex, 0)}
    db.put_inline(path, inline, expect=expect, durable=True)
