"""Large metadata.json documents kept parsed and validated, by their exact bytes.

Every read of a node parses and validates its metadata.json (`metatree._metadata`). For a
large one, a v2 node's mirror of 10 000 names above all, the checks of each name cost twenty
times orjson's parse, and every find and put of a child reads its parent: a find of one
child of a node past the threshold cost 2.4 ms, 35 times a find at 10 children. A
`Database` keeps such documents here (`Database.metadata_cache`), found again only by the
exact bytes read, so an entry is never stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import orjson

from metatree._metadata import (
    _SCALARS,
    CHILDREN,
    _load,
    _reparse,
    copy_json,
    dump_metadata,
    load_metadata,
)
from metatree.errors import CorruptMetadataError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["MetadataCache", "Parsed"]


class Parsed:
    """A validated document kept by `MetadataCache`: never handed out, only `fresh` copies.

    `derived` holds what readers build from the document and may share because they never
    change it (`metatree._core.index`: the mirror's position and look-alike tables), so a
    large node's tables are built once per stored version, not once per read.
    """

    __slots__ = ("_copied", "data", "derived", "doc", "exact")

    def __init__(self, data: bytes, doc: dict[str, Any], exact: bool) -> None:
        self.data = data
        """The bytes it was parsed from: an entry is used only for these exact bytes."""
        self.doc = doc
        """The document as `load_metadata` returned it (repeats dropped); never changed."""
        self.exact = exact
        """Parsed by `json` (integers beyond 64 bits) rather than orjson."""
        self.derived: dict[str, Any] = {}
        # a copy in Python costs more than orjson's parse once the values hold many containers
        self._copied = _containers(doc, limit=_COPY_LIMIT) < _COPY_LIMIT

    def fresh(self, *, children: bool = True) -> dict[str, Any]:
        """Return the document as a new dict sharing nothing mutable with the cached one.

        Callers change what a read returns (append, pop, update, nested values too). Without
        `children`, the ``children`` key is left out (a reader that takes the index from
        `derived`).
        """
        doc = self.doc
        if self._copied:  # the index apart: a list of str is copied in one C-level call
            out = {
                k: v if type(v) in _SCALARS or k == CHILDREN else copy_json(v)
                for k, v in doc.items()
            }
        else:  # the same bytes again, through the same parser; validated once already
            out = _reparse(self.data) if self.exact else orjson.loads(self.data)
        if children and CHILDREN in doc:
            out[CHILDREN] = list(doc[CHILDREN])  # repeats dropped, as load_metadata did
        else:
            out.pop(CHILDREN, None)
        return out


_COPY_LIMIT: Final = 64
"""Containers outside the index up to which a hit copies the cached values in Python."""


def _containers(doc: dict[str, Any], limit: int) -> int:
    """Count the dicts and lists of `doc` outside its index, stopping at `limit`."""
    count, stack = 0, [v for k, v in doc.items() if k != CHILDREN]
    while stack and count < limit:
        item = stack.pop()
        if isinstance(item, dict):
            count += 1
            stack.extend(item.values())
        elif isinstance(item, list):
            count += 1
            stack.extend(item)
    return count


class MetadataCache:
    """A database's large metadata documents, parsed and validated, by their exact bytes.

    Every read of a node parses and validates its metadata.json; for a large one (a v2
    node's mirror of 10 000 names: 1.7 ms, of which orjson's parse is 80 us) the checks of
    each name cost twenty times the parse, and every find and put of a child reads its
    parent. The same bytes always parse and validate the same, so an entry is used only
    when the bytes just read equal the bytes it was parsed from (compared whole): it is
    never stale, whoever rewrote the file, and no time or stat is trusted. Documents
    smaller than `min_bytes` are parsed every time (faster than a copy is made and
    compared), and the entries are bounded in number and in bytes (least recently used
    first out); a document that failed validation is never kept, so it fails every read.
    """

    def __init__(
        self, min_bytes: int = 16 * 2**10, max_bytes: int = 2 * 2**20, entries: int = 32
    ) -> None:
        self.min_bytes = min_bytes
        """Smaller documents are parsed on every read (faster than a copy is made)."""
        self.max_bytes = max_bytes
        """Bytes of the kept documents, as stored. In memory, parsed, with the tables built
        on them, they take twenty times more (a mirror of 10 000 names: 79 KB stored, 1.7 MB
        held with its position and look-alike tables) to 35 times (short names with their
        tables; a million empty objects): 70 MB at most per database at the default 2 MiB.
        A larger document is never kept."""
        self.entries = entries
        """Documents kept at most (one per node read: the nodes a process works in)."""
        self._docs: OrderedDict[str, Parsed] = OrderedDict()
        self._lock = threading.Lock()

    def parse(self, data: bytes, key: str, url: Callable[[], str] | None = None) -> Parsed | None:
        """Return the validated entry of `data` read at `key`; None for a small document.

        `key` names the document (its URL, or its path in the database); `url` makes the
        URL that errors name when it is not `key` (called on a miss only: a hit costs no
        URL). `load_metadata` errors as for any read (nothing is kept then).
        """
        if len(data) < self.min_bytes:
            return None
        with self._lock:
            entry = self._docs.get(key)
        if entry is not None and entry.data == data:  # compared outside the lock: a fork
            with self._lock:  # while another thread holds it leaves the child locked out
                if self._docs.get(key) is entry:
                    self._docs.move_to_end(key)
            return entry
        doc, exact = _load(data, key if url is None else url(), "index entry")
        entry = Parsed(data, doc, exact)
        self._keep(key, entry, None)
        return entry

    def _keep(self, key: str, entry: Parsed, replacing: Parsed | None) -> None:
        """Keep `entry` at `key` (when `replacing` is given: only if it is still there)."""
        with self._lock:
            if replacing is not None and self._docs.get(key) is not replacing:
                return  # another entry was kept meanwhile
            self._docs.pop(key, None)
            if len(entry.data) <= self.max_bytes:
                self._docs[key] = entry
            # summed, not counted up and down: an interrupt between two steps cannot skew it
            while self._docs and (
                sum(len(e.data) for e in self._docs.values()) > self.max_bytes
                or len(self._docs) > self.entries
            ):
                self._docs.popitem(last=False)

    def load(self, data: bytes, url: str, key: str | None = None) -> dict[str, Any]:
        """Return the metadata `data` holds, as `load_metadata` does (the caller's to change).

        `key` names the document in the cache (default: `url`), as `parse` does.
        """
        entry = self.parse(data, url, None) if key is None else self.parse(data, key, lambda: url)
        return load_metadata(data, url) if entry is None else entry.fresh()

    def prime(self, data: bytes, key: str, doc: Mapping[str, Any]) -> None:
        """Keep `data`, just written from `doc`, when its index is the cached entry's own.

        An update of a large node's own metadata rewrites its file with the index it read:
        the names are those the entry at `key` validated, so only the rest of `doc` is
        parsed and checked (as `load_metadata` would, from its own serialisation: each
        value reads back alike wherever it stands), and the entry's derived tables carry
        over. Any other write leaves the entry as it is: the next read of other bytes
        validates them. The bytes are still compared on every read.
        """
        if len(data) < self.min_bytes or len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._docs.get(key)
        if old is None or (CHILDREN in doc) != (CHILDREN in old.doc):
            return
        children = old.doc.get(CHILDREN)
        if children is not None and doc[CHILDREN] != children:
            return
        rest = {k: v for k, v in doc.items() if k != CHILDREN}
        try:
            parsed, exact = _load(dump_metadata(rest), key, "index entry")
        except (CorruptMetadataError, TypeError, ValueError):
            return  # not kept: the next read parses the file and reports what is wrong
        if children is not None:
            parsed = {CHILDREN: children, **parsed}
        entry = Parsed(data, parsed, exact)
        entry.derived.update(old.derived)
        self._keep(key, entry, old)

    def clear(self) -> None:
        """Forget every entry (the next read of each document validates it again)."""
        with self._lock:
            self._docs.clear()
