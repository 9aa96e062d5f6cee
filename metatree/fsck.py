"""fsck and gc: find what a crash or a hand edit left in a tree, repair what is safe, collect.

A crash leaves at worst an unlisted orphan, a leftover temporary, or a file whose record is
missing or stale (docs/format.md, invariant 2); a hand edit or another client can leave
anything. `fsck` reads the whole tree (one `scan`, plus one listing per node) and reports each
finding with what fixes it; ``repair=True`` then fixes, under the DB lock, what is safe: index
entries that lead nowhere or break the format's rules are dropped, orphans, writers' leftover
temporaries (a replace killed after its swap leaves the old data in one) and files that nobody
names are *moved* into the quarantine (``.metatree.quarantine`` at the root) where a person can
look at them, planted symbolic links too (the link, never its target: `metatree._links`), dead
lock objects go (a lease judged by the storage's clock as well as ours: `metatree._stale`).
What would lose data a person may still want (a corrupt metadata.json, the record of a missing
or changed file, a file planted among recorded ones) is changed only with ``force=True``. Each
pass journals its fixes in its quarantine batch first (`metatree._quarantine`): a repair
killed midway is finished by the next one with the same force (a plain one finishes the safe
part; the force fixes it had planned are reported as such). `gc` deletes the quarantine and the
DataStore value files no metadata references. docs/fsck.md lists it all.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import orjson

from metatree._core import index
from metatree._core.db import children_of, rel_path
from metatree._core.index import INDEX_DIR, Children
from metatree._core.read import is_orphan_listing
from metatree._core.scan import Progress, Skipped, check_progress, scan
from metatree._core.update import referenced
from metatree._core.verify import VerifyReport, _hash, verify_node
from metatree._links import has_links, is_link, links_in, move_link, walk_with_links
from metatree._locking import LeaseInfo
from metatree._metadata import CHILDREN, is_reference
from metatree._names import (
    CONFIG_FILE,
    LOCK_FILE,
    METADATA_FILE,
    OS_LOCK_FILE,
    SYSTEM_PREFIX,
    is_reserved,
    reserved_name,
)
from metatree._paths import check_stored_name
from metatree._quarantine import (
    MAX_MANIFEST,
    QUARANTINE,
    Journal,
    Move,
    mark_done,
    move,
    new_batch,
    plan,
)
from metatree._records import RECORDS, drop_records, records_of
from metatree._stale import silent
from metatree.backends.base import translate_errors
from metatree.datastore import VALUE_OF
from metatree.errors import CorruptMetadataError, LockError, MetatreeError, NotFoundError, PathError
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from metatree._core.db import Database
    from metatree._types import NodePath

__all__ = ["KINDS", "QUARANTINE", "Finding", "FsckReport", "GcItem", "GcReport", "fsck", "gc"]


Fix = Literal["repair", "force", "gc", "none"]

KINDS: dict[str, Fix] = {
    "orphan-directory": "repair",  # an unlisted directory holding a node's leftovers
    "ambiguous-directory": "force",  # the same with user metadata: maybe another client's data
    "dangling-entry": "repair",  # an index entry without its directory or metadata.json
    "invalid-entry": "repair",  # an index entry that breaks the format's name rules
    "leftover-temporary": "repair",  # a .metatree.* temp/staging/trash name in a node
    "stale-lock": "repair",  # a lock object whose holder is provably gone or long expired
    "unreferenced-value": "repair",  # a DataStore value file no metadata value names
    "corrupt-metadata": "force",  # a metadata.json that does not parse or is not an object
    "corrupt-records": "force",  # a malformed .metatree.records
    "missing-file": "force",  # a recorded file that is not stored
    "mismatched-file": "force",  # a stored file whose size (or sha256) differs from its record
    "unrecorded-file": "force",  # a stored file without record in a node that has records
    "foreign-lock": "force",  # a lock object metatree did not write (metatreedb's, or junk)
    "link": "repair",  # a symbolic link planted in a local tree (the link moves, not its target)
}
"""Every kind of finding, and what fixes it: ``repair``, ``repair`` with ``force``."""

_EDITS = (
    "invalid-entry",
    "missing-file",
    "mismatched-file",
    "unreferenced-value",
    "corrupt-records",
)
"""Kinds fixed by rewriting the metadata.json of the finding's node itself."""
_AMBIGUOUS = (
    "no index lists it, and its metadata.json holds user metadata: a removed node's leftovers, "
    "or a directory another client stored"
)
_LINK = "a symbolic link (metatree never stores one): planted; its target is never read"
_ASIDE = (LOCK_FILE, OS_LOCK_FILE, QUARANTINE)
"""Root names the repair itself needs (to lock, to quarantine): a link there is renamed aside
first, to a reserved name that the repair then moves into the quarantine like any link."""
_ROUNDS = 4
"""Repair passes at most: fixing a node (a dropped bad entry) can expose damage below it."""
_VALUE = re.compile(
    r"([A-Za-z0-9_-]{1,64})\.(?:[A-Za-z0-9_-]{1,64}\.)?[0-9a-f]{8}(\.[A-Za-z0-9_-]+)*"
)
"""A DataStore value's file name (``field.key.token.suffix``) or an archive's."""


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the tree."""

    kind: str
    """One of `KINDS`."""
    location: str
    """Where, relative to the root (``""``: the root; ``m/v1/model.bin``)."""
    detail: str
    """What is wrong, for people."""
    fix: Fix
    """What fixes it: ``repair``, ``force`` (repair with force), ``none``."""
    path: NodePath = field(default=(), repr=False, compare=False)
    name: str | None = field(default=None, repr=False, compare=False)


@dataclass
class FsckReport:
    """What `Metatree.fsck` found and, with ``repair=True``, what it did."""

    findings: list[Finding] = field(default_factory=list)
    """What is wrong (after a repair: what is still wrong, such as damage left for force)."""
    repaired: list[Finding] = field(default_factory=list)
    """What the repair fixed (empty without ``repair``)."""
    quarantine: str | None = None
    """Where the repair moved things (a directory under ``.metatree.quarantine``), if it did."""

    @property
    def clean(self) -> bool:
        """Whether nothing is wrong (what a cron job or ``metatree fsck``'s exit code checks)."""
        return not self.findings


@dataclass(frozen=True)
class GcItem:
    """A file `gc` removes (or, in a dry run, would remove)."""

    location: str
    size: int
    kind: Literal["quarantine", "unreferenced-value"]


@dataclass
class GcReport:
    """What `Metatree.gc` removed, or with ``dry_run`` would remove."""

    items: list[GcItem] = field(default_factory=list)
    dry_run: bool = True

    @property
    def size(self) -> int:
        """Bytes freed (or that would be)."""
        return sum(item.size for item in self.items)


def fsck(
    db: Database, *, repair: bool, verify: bool, force: bool, progress: Progress | None = None
) -> FsckReport:
    """Check the tree; with `repair`, fix what is safe (with `force`, more) under the DB lock.

    `progress` is passed to each scan of the tree (`scan`: nodes read so far).
    """
    check_progress(progress, db.storage.url)  # a repair writes before its first scan
    if not repair:
        return FsckReport(findings=_check(db, verify=verify, held=False, progress=progress))
    _outside_transaction(db, "fsck(repair=True)")
    report = FsckReport()
    _links_aside(db)
    for finding in _check_locks(db):
        if finding.fix == "force" and not force:
            raise LockError(
                f"{db.lock.name} is a lock object metatree did not write (metatreedb's?): "
                "nothing was repaired; stop that client, or pass force=True to break it"
            )
        db.break_lock(force=finding.fix == "force")
        report.repaired.append(finding)
    with db.write_lock():
        for _ in range(_ROUNDS):
            todo = [
                f
                for f in _check(db, verify=verify, held=True, progress=progress)
                if f.fix == "repair" or (force and f.fix == "force")
            ]
            if not todo:
                break
            report.quarantine = _apply(db, todo, report.quarantine)
            report.repaired.extend(f for f in todo if f not in report.repaired)
    report.findings = _journaled(db, _check(db, verify=verify, held=False, progress=progress))
    return report


def _journaled(db: Database, findings: list[Finding]) -> list[Finding]:
    """Say which force findings an interrupted repair had planned (its manifest: a report only).

    A manifest grants nothing (anyone can plant one: `metatree._quarantine`): a killed forced
    repair is finished by a forced repair. Too big a manifest is reported in the same way.
    """
    journal = Journal.read(db.storage)
    out = [
        replace(f, detail=f"{f.detail}; {_PLANNED}")
        if f.fix == "force" and journal.planned(f.kind, _subject(f))
        else f
        for f in findings
    ]
    for batch in journal.too_big:
        warnings.warn(
            f"{db.storage.url_of(batch)}/manifest.json is over {MAX_MANIFEST} bytes: not read "
            "(no repair writes one that big: planted?)",
            MetatreeWarning,
            stacklevel=4,
        )
    return out


_PLANNED = (
    "an interrupted repair had planned its fix: a repair with force finishes it "
    "(fsck(repair=True, force=True); metatree fsck --repair --force)"
)


def gc(db: Database, *, dry_run: bool) -> GcReport:
    """List (with `dry_run`) or delete the quarantine and unreferenced DataStore value files."""
    if dry_run:
        return GcReport(_collectable(db), dry_run=True)
    _outside_transaction(db, "gc(dry_run=False)")
    if any(f.kind == "foreign-lock" for f in _check_locks(db)):
        # as repair: a lock metatree did not write may be metatreedb's, writing now; taking it
        # over after its time out (what the lock would do) would delete under that writer
        raise LockError(
            f"{db.lock.name} is a lock object metatree did not write (metatreedb's?): nothing "
            "was collected; stop that client, then break it (Metatree.break_lock(force=True))"
        )
    with db.write_lock():
        items = _collectable(db)
        values = [i for i in items if i.kind == "unreferenced-value"]
        _drop_records(db, [(_split(i.location)) for i in values])
        for item in values:
            db.storage.remove_file(item.location)
        if any(i.kind == "quarantine" for i in items):
            db.storage.remove_tree(QUARANTINE)
    return GcReport(items, dry_run=False)


def _outside_transaction(db: Database, what: str) -> None:
    """Refuse to repair inside a transaction: moves and deletes cannot be staged or undone."""
    if db.active_tx() is not None:
        raise LockError(f"{what} cannot run inside a transaction: run it after the block")


# -- checking -------------------------------------------------------------------------------
def _check(
    db: Database, *, verify: bool, held: bool, progress: Progress | None = None
) -> list[Finding]:
    """Return every finding, in tree order (the lock object first).

    `held`: the caller holds the DB lock (or does not care about the lock object, as gc):
    the lock object is then not judged, and a file that differs from its record is final,
    since no writer can be between a file and its record (`_check_files`).
    """
    found = [] if held else list(_check_locks(db))
    db.index_cache.clear()  # judge the logs as stored, not as this process read them before
    try:
        root = db.read_metadata(())
    except CorruptMetadataError as exc:
        return [*found, _finding("corrupt-metadata", (), None, exc.reason)]
    except PathError:  # a link: nothing can be judged without the root's index
        if not is_link(db.storage, METADATA_FILE):
            raise
        return [*found, _finding("link", (), METADATA_FILE, _LINK)]
    skipped: list[Skipped] = []
    nodes: list[tuple[NodePath, dict[str, Any]]] = [((), root)]
    nodes += [(p, m) for p, m, _ in scan(db, on_error="skip", skipped=skipped, progress=progress)]
    urls = {
        db.url((*path, child)): (*path, child)
        for path, metadata in nodes
        if len(path) < len(db.keys)
        for child in children_of(metadata)
    }
    for skip in skipped:
        where = urls.get(skip.location)
        if where is not None:
            found.extend(_unreadable(db, where, skip.error))
    for path, metadata in nodes:
        found.extend(_check_node(db, path, metadata, verify=verify, held=held))
    return found


def _check_locks(db: Database) -> list[Finding]:
    """Return a finding for a lock object whose holder is gone, or that is not a lease.

    With locking disabled nobody takes or breaks the lock here: its object is not ours to judge.
    """
    if not db.config.locking_enabled:
        return []
    if is_link(db.storage, LOCK_FILE):
        return []  # the root's listing reports it; a repair renames it aside first
    try:
        body = db.storage.read_bytes(LOCK_FILE)
    except NotFoundError:
        return []
    info = LeaseInfo.parse(body)
    if info is None:
        return [_finding("foreign-lock", (), LOCK_FILE, "a lock object metatree did not write")]
    if db.lock_status() is None or silent(db.storage, LOCK_FILE, info):
        return [_finding("stale-lock", (), LOCK_FILE, f"held by {info.describe()}: gone")]
    return []  # a live writer's lease: not damage


def _unreadable(db: Database, path: NodePath, error: MetatreeError) -> list[Finding]:
    """Classify a node the scan could not read: dangling, a bad index entry, or corrupt.

    A listed node whose metadata.json is gone but whose directory still holds data (its
    children, its files) is not dangling: dropping its entry would hide all of that. It is
    corrupt, for force to rebuild its index from what is there.
    """
    if isinstance(error, PathError) and (
        is_link(db.storage, rel_path(path)) or links_in(db.storage, rel_path(path))
    ):
        if is_link(db.storage, rel_path(path)):
            return []  # its parent's listing reports the link
        return [
            _finding("link", path, n, _LINK) for n in sorted(links_in(db.storage, rel_path(path)))
        ]
    if isinstance(error, NotFoundError):
        rel = rel_path(path)
        if db.storage.kind(rel) == "directory" and not all(
            map(is_reserved, db.storage.listdir(rel))
        ):
            return [
                _finding("corrupt-metadata", path, None, "its metadata.json is gone, not its data")
            ]
        return [_finding("dangling-entry", path, None, "listed by its parent, but not stored")]
    reason = getattr(error, "reason", str(error))
    if "index entry" in reason:
        return [_finding("invalid-entry", path, None, reason)]
    return [_finding("corrupt-metadata", path, None, reason)]


def _check_node(
    db: Database, path: NodePath, metadata: dict[str, Any], *, verify: bool, held: bool
) -> list[Finding]:
    """Check one readable node: its directory's entries, its records, its value files."""
    found: list[Finding] = []
    listed = db.storage.listdir(rel_path(path))
    links = links_in(db.storage, rel_path(path))
    found.extend(_finding("link", path, name, _LINK) for name in sorted(links))
    children = set(children_of(metadata)) if len(path) < len(db.keys) else set()
    try:
        records = records_of(metadata, db.url(path))
    except CorruptMetadataError as exc:
        found.append(_finding("corrupt-records", path, None, exc.reason))
        records = None
    recorded_dirs = {n.split("/", 1)[0] for n in records or ()}
    stored: list[str] = []  # the node's files, those in stored directories too
    for name, kind in sorted(listed.items()):
        if name in links:
            continue
        if is_reserved(name):
            if name == INDEX_DIR and kind == "directory":
                found.extend(_check_log_dir(db, path, metadata))
            elif _leftover(path, name):
                found.append(_finding("leftover-temporary", path, name, f"a {kind} of a writer"))
        elif (
            kind == "directory"
            and len(path) < len(db.keys)  # in a leaf, a directory is stored data, never a node
            and name not in children
            and name not in recorded_dirs
            and is_orphan_listing(db.storage.listdir(rel_path(path, name)))
        ):
            if _metatrees_own(db, rel_path(path, name)):
                found.append(_finding("orphan-directory", path, name, "no index lists it"))
            else:  # a removed node's leftovers, or a directory metatreedb stored: not ours
                found.append(_finding("ambiguous-directory", path, name, _AMBIGUOUS))
        elif kind == "file":
            stored.append(name)
        elif name not in children and (records or has_links(db.storage)):
            files, below = walk_with_links(db.storage, rel_path(path, name))
            stored.extend(f"{name}/{sub}" for sub in files if records)
            found.extend(_finding("link", path, f"{name}/{sub}", _LINK) for sub in below)
            links |= {f"{name}/{sub}" for sub in below}
    if records is None:
        return found
    if records:
        linked = {n for n in records if any(n == k or n.startswith(f"{k}/") for k in links)}
        checked = {n: r for n, r in records.items() if n not in linked}  # after the link moves
        found.extend(_check_files(db, path, metadata, checked, stored, verify, held, bool(links)))
    found.extend(_unreferenced(db, path, metadata, records))
    return found


def _check_log_dir(db: Database, path: NodePath, metadata: dict[str, Any]) -> list[Finding]:
    """Find what does not belong in a node's index log directory (docs/format.md, "Format v2").

    Only the generation the node's marker names is its log: another generation (left by a
    crash between `reindex` and the removal of the old log) and the whole directory of a
    node without a marker are leftovers. In the live log, a name that is neither a piece nor
    a snapshot is a writer's temporary; pieces at or below the newest snapshot are folded
    (a compaction killed before its deletes) and go too.
    """
    children = metadata.get(CHILDREN)
    if not isinstance(children, Children):
        return [_finding("leftover-temporary", path, INDEX_DIR, "the log of a node without one")]
    found = []
    live = children.log.generation
    for generation in sorted(db.storage.listdir(rel_path(path, INDEX_DIR))):
        name = f"{INDEX_DIR}/{generation}"
        if generation != live:
            found.append(_finding("leftover-temporary", path, name, "an old generation's log"))
    found.extend(
        _finding("leftover-temporary", path, f"{INDEX_DIR}/{live}/{entry}", _FOLDED)
        for entry in sorted(index.stale_entries(db, path, live))
    )
    return found


_FOLDED = "not a live piece or snapshot of the node's log"


def _metatrees_own(db: Database, rel: str) -> bool:
    """Whether an unlisted directory is what a killed put leaves: metatree's alone.

    A put writes a new node's metadata.json before anything else, holding nothing of the
    user's (its index, its file records). One with user metadata is a removed node's leftover
    or a directory another client stored (metatreedb, whose stored directories may hold a
    metadata.json): never moved without force.
    """
    try:
        data = db.storage.read_bytes(f"{rel}/{METADATA_FILE}")
        parsed = orjson.loads(data) if len(data) <= 2**20 else None
    except (MetatreeError, orjson.JSONDecodeError):
        return not db.storage.listdir(rel) or all(map(is_reserved, db.storage.listdir(rel)))
    return isinstance(parsed, dict) and all(
        key == CHILDREN or key.startswith(SYSTEM_PREFIX) for key in parsed
    )


def _leftover(path: NodePath, name: str) -> bool:
    """Whether the reserved `name` in the node's directory is a writer's leftover."""
    if path:
        return name.casefold().startswith(SYSTEM_PREFIX)
    return name not in (CONFIG_FILE, LOCK_FILE, METADATA_FILE, OS_LOCK_FILE, QUARANTINE) and (
        name.casefold().startswith(SYSTEM_PREFIX)
    )


def _check_files(
    db: Database,
    path: NodePath,
    metadata: dict[str, Any],
    records: dict[str, Any],
    stored: list[str],
    verify: bool,
    held: bool,
    linked: bool = False,
) -> list[Finding]:
    """Check the node's stored files against its records (sizes; sha256 with `verify`).

    Without the lock, a sha256 mismatch is confirmed as `Metatree.verify` confirms it (a
    writer may be between a file and its record: it is waited for). Under our own lock that
    wait would be for ourselves; no writer can be there, so the file is hashed and judged.
    """
    if verify and not held and not linked:  # verify_node stops at a link: hash them here
        report = VerifyReport()
        verify_node(db, path, report, None, metadata)
        cut = len(rel_path(path)) + 1 if path else 0  # locations back to names in the node
        judged = (
            ("mismatched-file", report.mismatched, "differs from its record"),
            ("missing-file", report.missing, "recorded, not stored"),
            ("unrecorded-file", sorted(report.unexpected + report.unrecorded), "no record"),
        )
        return [_finding(k, path, loc[cut:], why) for k, locs, why in judged for loc in locs]
    out, have = [], set(stored)
    for name, record in sorted(records.items()):
        if name not in have:
            out.append(_finding("missing-file", path, name, "recorded, not stored"))
            continue
        if verify:
            digest, size = _hash(db, rel_path(path, name))
        else:
            digest, size = record.sha256, _size(db, rel_path(path, name))
        if (digest, size) != (record.sha256, record.size):
            detail = f"{size} bytes stored, {record.size} recorded"
            detail += ", sha256 differs" if digest != record.sha256 else ""
            out.append(_finding("mismatched-file", path, name, detail))
    unrecorded = sorted(have - set(records))
    out.extend(_finding("unrecorded-file", path, n, "stored without record") for n in unrecorded)
    return out


def _unreferenced(
    db: Database, path: NodePath, metadata: dict[str, Any], records: dict[str, Any]
) -> list[Finding]:
    """Find recorded DataStore value files of a field that no longer references them.

    An update that replaced a value deletes the old files after its commit; a crash there
    leaves them, recorded, named ``<field>.<key>.<token>...``, while the field now holds
    another value. Only files of a field that holds a reference now are judged: a user's own
    file that merely looks like one, beside a plain field or none, is left alone (so are the
    old files of a value replaced by a plain one: telling them from a user's is guesswork).
    """
    named: set[str] = set()
    broken: set[str] = set()
    where = db.url(path)
    for key, value in metadata.items():
        if is_reference(value):
            try:
                named |= referenced(value, path, where, key)
            except CorruptMetadataError:  # which files it means is unknown: none is judged
                broken.add(key)
    out = []
    for name, record in sorted(records.items()):
        match = _VALUE.fullmatch(name)
        if not match or name in named:
            continue
        field = match.group(1)
        if field in broken or not is_reference(metadata.get(field)):
            continue
        if record.provenance.info.get(VALUE_OF) != field:  # a user's file, named alike
            continue
        out.append(_finding("unreferenced-value", path, name, f"field {field!r} names it not"))
    return out


def _finding(kind: str, path: NodePath, name: str | None, detail: str) -> Finding:
    location = rel_path(path, name) if name is not None else rel_path(path)
    return Finding(kind, location, detail, KINDS[kind], path, name)


def _split(location: str) -> tuple[NodePath, str]:
    """Split a file location into its node and its name (`location` is ``node/name``)."""
    node, _, name = location.rpartition("/")
    return tuple(node.split("/")) if node else (), name


def _size(db: Database, rel: str) -> int:
    with translate_errors(db.storage.url_of(rel)):
        return int(db.storage.backend.fs.size(db.storage.abs(rel)))


# -- repairing ------------------------------------------------------------------------------
def _apply(db: Database, todo: list[Finding], batch: str | None) -> str | None:
    """Fix `todo` (under the lock): the journal, metadata, data, rebuilds, the journal again.

    Metadata before data, as a remove orders its writes; the manifest (`plan`) before both,
    so that a repair killed anywhere in here is finished by the next (`Journal`).
    """
    edits: dict[NodePath, list[Finding]] = {}
    for f in todo:
        if f.kind == "dangling-entry":  # the parent's index names it
            edits.setdefault(f.path[:-1], []).append(f)
        elif f.kind in _EDITS:  # the node's own metadata (its index, its records)
            edits.setdefault(f.path, []).append(f)
    journaled = [
        Move(_subject(f), f.kind, f.detail, move=f.kind in _MOVES)
        for f in todo
        if f.kind in _MOVES or f.fix == "force"  # repair kinds in place are found again
    ]
    moves = []
    if journaled:
        batch = batch or new_batch()
        moves = plan(db.storage, batch, journaled)
    for path, fixes in edits.items():
        _edit(db, path, fixes)
    for fix, target in moves:
        move(db.storage, fix, target)
    for f in todo:
        if f.kind == "corrupt-metadata":
            _rebuild(db, f.path)
    if batch is not None:
        mark_done(db.storage, batch)
    return batch


_MOVES = (
    "orphan-directory",
    "ambiguous-directory",
    "leftover-temporary",  # may hold the old data a killed replace swapped out
    "mismatched-file",
    "unrecorded-file",
    "unreferenced-value",
    "link",
    "corrupt-metadata",  # copied: the node keeps a metadata.json till its rebuild
)
"""Kinds whose fix moves (or copies) something into the quarantine."""


def _subject(f: Finding) -> str:
    """Return what a fix of `f` moves or rewrites: its location (a node's: its metadata.json)."""
    return rel_path(f.path, METADATA_FILE) if f.kind == "corrupt-metadata" else f.location


def _links_aside(db: Database) -> None:
    """Rename a link at a root name the repair needs (the lock, the quarantine) out of its way.

    Taking the lock or writing into the quarantine through a link is refused (it would write
    wherever the link points); renamed to a reserved name, the link is then found and moved
    into the quarantine like any other. Done before the lock: no writer can hold a lock
    whose object or lock file is a link, since every primitive refuses to use one.
    """
    for name in _ASIDE:
        if is_link(db.storage, name):
            move_link(db.storage, name, reserved_name("tmp"))


def _edit(db: Database, path: NodePath, fixes: list[Finding]) -> None:
    """Apply the metadata fixes of one node in one conditional read-modify-write."""
    if any(f.kind == "invalid-entry" for f in fixes):
        metadata, version = _read_raw(db, path)
    else:
        metadata, version = db.read_for_write(path)
    where = db.url(path)
    drop = {f.path[-1] for f in fixes if f.kind == "dangling-entry"}
    if isinstance(metadata.get(CHILDREN), Children):  # a v2 index: one piece removes them
        for name in sorted(drop):
            index.discard(metadata, name)
    elif drop or any(f.kind == "invalid-entry" for f in fixes):
        kept = [c for c in children_of(metadata) if c not in drop and _valid(c, where)]
        metadata[CHILDREN] = list(dict.fromkeys(kept))
    if any(f.kind == "corrupt-records" for f in fixes):
        metadata.pop(RECORDS, None)
    else:
        for f in fixes:
            if f.name is not None:  # a file's finding: its record goes
                drop_records(metadata, f.name, where)
    db.write_metadata(path, metadata, commit=True, expect=version)


def _read_raw(db: Database, path: NodePath) -> tuple[dict[str, Any], object]:
    """Read a node whose index breaks the rules (an object with a list of strings, else corrupt)."""
    data, version = db.storage.read_versioned(rel_path(path, METADATA_FILE), db.max_metadata_bytes)
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:  # integers beyond 64 bits: repair by hand (force)
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get(CHILDREN), list):
        raise CorruptMetadataError(db.url(path), "not an index that can be repaired")
    parsed[CHILDREN] = [c for c in parsed[CHILDREN] if isinstance(c, str)]
    return parsed, version


def _valid(name: str, where: str) -> bool:
    try:
        check_stored_name(name, where)
    except PathError:
        return False
    return True


def _rebuild(db: Database, path: NodePath) -> None:
    """Replace a corrupt (now quarantined) metadata.json with an index of the node's children.

    The children are the directories with a metadata.json at their top, with valid names;
    user metadata and records are lost (a copy is in the quarantine): hence only with force.
    """
    children: list[str] = []
    if len(path) < len(db.keys):
        for name, kind in sorted(db.storage.listdir(rel_path(path)).items()):
            if (
                kind == "directory"
                and not is_reserved(name)
                and _valid(name, db.url(path))
                and METADATA_FILE in db.storage.listdir(rel_path(path, name))
            ):
                children.append(name)
    db.put_metadata(path, {CHILDREN: children} if children else {}, expect=None)


def _drop_records(db: Database, files: list[tuple[NodePath, str]]) -> None:
    by_node: dict[NodePath, list[str]] = {}
    for path, name in files:
        by_node.setdefault(path, []).append(name)
    for path, names in by_node.items():
        metadata, version = db.read_for_write(path)
        for name in names:
            drop_records(metadata, name, db.url(path))
        db.write_metadata(path, metadata, commit=True, expect=version)


# -- collecting -----------------------------------------------------------------------------
def _collectable(db: Database) -> list[GcItem]:
    """Return the quarantine's files and the unreferenced value files, with their sizes."""
    files, links = walk_with_links(db.storage, QUARANTINE, system=True)
    items = [
        GcItem(
            f"{QUARANTINE}/{sub}",
            0 if sub in links else _size(db, f"{QUARANTINE}/{sub}"),
            "quarantine",
        )
        for sub in sorted([*files, *links])
    ]  # a quarantined link is removed, never followed: it frees nothing
    items.extend(
        GcItem(f.location, _size(db, f.location), "unreferenced-value")
        for f in _check(db, verify=False, held=True)
        if f.kind == "unreferenced-value"
    )
    return items
