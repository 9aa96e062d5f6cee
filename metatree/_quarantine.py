"""The quarantine: where a repair moves things, with a manifest that doubles as its journal.

A repair may be killed at any point. Each batch's ``manifest.json`` is written *before* any
fix of the pass it describes (docs/fsck.md): one entry per thing to move or copy (``name``
its place in the batch), and one per force fix that moves nothing (``name`` null: a dropped
record, a dropped records key). Once every fix of the pass is applied the entries are
marked ``"done": true`` (one more write of the manifest, by the repair that wrote it: no
repair rewrites a manifest it did not write). An entry not done is a fix that a repair
planned and may not have finished. A manifest proves nothing about who wrote it (any
co-writer can plant one), so it grants nothing: the next plain repair does what a plain
repair always does (repair kinds, found again), and the force kinds a killed repair had
planned are reported as such (`Journal.planned`) and wait for the next forced repair. Nothing
is deleted on the way: every move is a rename (or a copy, for a corrupt metadata.json, which
is replaced only after its copy is complete).
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from metatree._links import move_link
from metatree._names import SYSTEM_PREFIX
from metatree.backends.base import translate_errors
from metatree.errors import MetatreeError

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = [
    "MANIFEST",
    "MAX_MANIFEST",
    "QUARANTINE",
    "Journal",
    "Move",
    "mark_done",
    "move",
    "new_batch",
    "plan",
]

QUARANTINE = f"{SYSTEM_PREFIX}.quarantine"
"""The root directory repairs move things into (reserved: never a node, hidden from reads)."""
MANIFEST = "manifest.json"
MAX_MANIFEST = 16 * 1024 * 1024
"""Bytes a manifest may have (one entry is ~200): a bigger one is planted, and not read."""
_FILE_KINDS = frozenset({"mismatched-file", "unreferenced-value", "unrecorded-file"})
"""Kinds whose fix drops a record and then moves the file: in between, it is unrecorded."""


@dataclass(frozen=True)
class Move:
    """One fix of a pass, as its manifest entry records it."""

    rel: str
    """What it is about, relative to the root (a moved thing; a node's metadata.json)."""
    kind: str
    why: str
    move: bool = True
    """Whether something moves (or is copied) into the batch; else a fix in place."""


def new_batch() -> str:
    """Return a fresh batch directory: the UTC time (for people) and 8 hex digits (unique)."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{QUARANTINE}/{stamp}-{uuid.uuid4().hex[:8]}"


def _read(storage: Storage, batch: str) -> list[dict[str, Any]] | None:
    """Return a batch's manifest entries (malformed entries left out); None if too big.

    Bounded (`MAX_MANIFEST`): a planted manifest of any size costs one bounded read.
    """
    try:
        data, _ = storage.read_versioned(f"{batch}/{MANIFEST}", MAX_MANIFEST)
        if len(data) > MAX_MANIFEST:
            return None
        parsed = orjson.loads(data)
    except (MetatreeError, orjson.JSONDecodeError):
        return []
    if not isinstance(parsed, list):
        return []
    return [e for e in parsed if isinstance(e, dict) and isinstance(e.get("from"), str)]


def _write(storage: Storage, batch: str, entries: list[dict[str, Any]]) -> None:
    storage.write_atomic(f"{batch}/{MANIFEST}", orjson.dumps(entries, option=orjson.OPT_INDENT_2))


def plan(storage: Storage, batch: str, fixes: list[Move]) -> list[tuple[Move, str]]:
    """Write the pass's intent into `batch`'s manifest; return each move with its target.

    Written first (it also makes the batch's directory on local disk). Targets are numbered
    after what the batch holds already (an earlier pass of the same repair).
    """
    entries = _read(storage, batch) or []  # this repair's batch: its own manifest
    start = sum(1 for e in entries if e.get("name") is not None)
    out: list[tuple[Move, str]] = []
    number = start
    for fix in fixes:
        name = None
        if fix.move:
            name = f"{number:04d}-{fix.rel.rsplit('/', 1)[-1][:50]}"  # short, and unique
            number += 1
            out.append((fix, f"{batch}/{name}"))
        entries.append({"name": name, "from": fix.rel, "kind": fix.kind, "why": fix.why})
    _write(storage, batch, entries)
    return out


def move(storage: Storage, fix: Move, target: str) -> None:
    """Move (a corrupt metadata.json: copy) `fix.rel` to `target`; what is gone is done."""
    if fix.kind == "link":
        move_link(storage, fix.rel, target)
        return
    kind = storage.kind(fix.rel)
    if kind == "file" and fix.kind == "corrupt-metadata":
        _copy(storage, fix.rel, target)  # the node keeps a metadata.json till the rebuild
    elif kind is not None:
        storage.replace_tree(fix.rel, target, None)
        if storage.kind(fix.rel) == "directory" and not storage.listdir(fix.rel):
            storage.remove_tree(fix.rel)  # an empty directory a filesystem kept (memory's)


def _copy(storage: Storage, rel: str, target: str) -> None:
    """Copy a file on the server (whole, whatever its size: no read into memory)."""
    with translate_errors(storage.url_of(rel)):
        storage.backend.fs.cp_file(storage.abs(rel), storage.abs(target))


def mark_done(storage: Storage, batch: str) -> None:
    """Mark every entry of `batch` (written by this repair) done: its pass ended."""
    entries = _read(storage, batch)
    if entries and not all(e.get("done") is True for e in entries):
        _write(storage, batch, [{**e, "done": True} for e in entries])


@dataclass
class Journal:
    """The unfinished fixes of earlier, interrupted repairs (entries not done): a report only.

    A manifest may be planted (`metatree._quarantine`): it never makes a repair do more than
    it would do without it; it only says which findings a killed repair had planned to fix.
    """

    kinds: dict[str, set[str]] = field(default_factory=dict)
    """Location -> the kinds of fix planned for it there and not done."""
    too_big: list[str] = field(default_factory=list)
    """Batches whose manifest exceeds `MAX_MANIFEST`: not read (planted)."""

    @classmethod
    def read(cls, storage: Storage) -> Journal:
        """Read every batch's manifest (one listing, one bounded read per batch)."""
        journal = cls()
        if storage.kind(QUARANTINE) != "directory":
            return journal
        for name in sorted(storage.listdir(QUARANTINE)):
            batch = f"{QUARANTINE}/{name}"
            entries = _read(storage, batch)
            if entries is None:
                journal.too_big.append(batch)
                continue
            for entry in entries:
                if entry.get("done") is not True:
                    journal.kinds.setdefault(entry["from"], set()).add(str(entry.get("kind")))
        return journal

    def planned(self, kind: str, rel: str) -> bool:
        """Whether a finding of `kind` at `rel` is what an interrupted repair meant to fix.

        The same kind at the same place, or a file a file fix had already unrecorded (its
        record dropped, the file not yet moved) when the repair was killed.
        """
        planned = self.kinds.get(rel, set())
        return kind in planned or (kind == "unrecorded-file" and bool(planned & _FILE_KINDS))
