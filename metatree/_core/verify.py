"""Verify: check a node's stored files against their records, without a download.

Each recorded file is hashed as it streams (one pass, bounded memory); a mismatch is
confirmed as a get confirms it (`metatree._core.integrity.Check`), so a file replaced by a
concurrent put is not reported. Files without a record are listed, not judged: metatreedb
and older versions stored files without one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metatree._core.db import children_of, rel_path
from metatree._core.integrity import Check
from metatree._core.read import entries, orphan_to_hide, readable, walk
from metatree._core.scan import check_progress
from metatree._names import SYSTEM_PREFIX
from metatree._records import record_of, records_of, spelled
from metatree.errors import ConflictError, IntegrityError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._core.db import Database
    from metatree._core.resolve import Resolved
    from metatree._core.scan import Progress
    from metatree._types import NodePath

__all__ = ["VerifyReport", "verify", "verify_node"]

_ATTEMPTS = 3
"""Reads of one file while concurrent puts keep replacing it, before verify gives up."""


@dataclass
class VerifyReport:
    """What `Metatree.verify` found; each list holds locations (``"m/v1/model.bin"``)."""

    ok: list[str] = field(default_factory=list)
    """Files whose bytes match their record."""
    mismatched: list[str] = field(default_factory=list)
    """Files whose size or sha256 differs from their record (changed after the put)."""
    missing: list[str] = field(default_factory=list)
    """Recorded files that are not stored any more."""
    unexpected: list[str] = field(default_factory=list)
    """Files inside a recorded directory that its put did not store (planted, copied in)."""
    unrecorded: list[str] = field(default_factory=list)
    """Stored files without a record (written by metatreedb, an older version, or by hand)."""

    @property
    def clean(self) -> bool:
        """Whether every recorded file is present and intact, and no directory gained files.

        Unrecorded files outside recorded directories are allowed: metatreedb writes them.
        """
        return not self.mismatched and not self.missing and not self.unexpected


def verify(
    node: Resolved, name: str | None, *, recursive: bool, progress: Progress | None = None
) -> VerifyReport:
    """Verify what `name` names in `node`: a child node, a file or a stored directory.

    None (or a child node) verifies the node's files, with `recursive` every node's below;
    `progress` is then called with the number of nodes checked so far.
    """
    db, report = node.db, VerifyReport()
    check_progress(progress, db.storage.url)
    if name is not None and (name not in children_of(node.metadata) or node.is_leaf):
        verify_node(db, node.path, report, name)  # a file or stored directory
        if report == VerifyReport():
            raise NotFoundError(db.url(node.path, name), "node or file")
        return report
    start = node.path if name is None else (*node.path, name)
    if not recursive:
        verify_node(db, start, report, None)
        return report
    for count, (path, metadata) in enumerate(walk(db, start), 1):
        verify_node(db, path, report, None, metadata)
        if progress is not None:
            progress(count)
    return report


def verify_node(
    db: Database,
    path: NodePath,
    report: VerifyReport,
    only: str | None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Check the files of one node (or only `only`: a file or stored directory) against records.

    `metadata` is the node's, when the caller has read it. Inside a transaction the files it
    staged are read, checked against its staged records.
    """
    if metadata is None:
        metadata = db.read_metadata(path)
    records = records_of(metadata, db.url(path))
    recorded_dirs = {name.split("/", 1)[0] for name in records if "/" in name}
    if only is None:
        stored = set(_stored_files(db, path, metadata, recorded_dirs))
    else:
        stored = set(_stored_below(db, path, only, recorded=only in recorded_dirs))
        only = spelled(records, only, db.case_insensitive)  # as get finds its record
        records = {k: v for k, v in records.items() if k == only or k.startswith(f"{only}/")}
    checks = {name: Check(db, path, name, record) for name, record in records.items()}
    for name in sorted(stored - set(records)):
        if name.split("/", 1)[0] not in recorded_dirs:
            report.unrecorded.append(rel_path(path, name))
            continue
        try:
            checks[name] = Check.unrecorded(db, path, name)  # unless a put records it now
        except IntegrityError:
            report.unexpected.append(rel_path(path, name))
        except ConflictError:
            continue  # its directory was replaced meanwhile: checked by the next verify
    for name, check in sorted(checks.items()):
        verdict = _verify_file(check)
        if verdict is not None:
            getattr(report, verdict).append(rel_path(path, name))


def _verify_file(check: Check) -> str | None:
    """Return "ok", "mismatched" or "missing" for one recorded file (None: no longer recorded).

    A file replaced or removed by a concurrent put while it was hashed (`ConflictError`) is
    checked again against its new record, a few times; a tree rewritten faster than that
    raises the `ConflictError` (retry the verify).
    """
    for attempt in range(_ATTEMPTS):
        try:
            try:
                digest, size = _hash(check.db, _where(check.db, check.path, check.name))
            except NotFoundError:
                check.missing()
            else:
                check.confirm(digest, size)
        except IntegrityError as exc:
            return exc.kind
        except ConflictError:
            if attempt == _ATTEMPTS - 1:
                raise
            try:
                record = record_of(check.db.read_metadata(check.path), check.name, check.url)
            except NotFoundError:
                return None  # the node was removed meanwhile
            if record is None:
                return None  # the file was removed meanwhile
            check = Check(check.db, check.path, check.name, record)
        else:
            return "ok"
    return None  # pragma: no cover - the loop returns or raises


def _hash(db: Database, rel: str) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    for chunk in db.storage.iter_bytes(rel):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def _stored_files(
    db: Database, path: NodePath, metadata: dict[str, Any], recorded: set[str]
) -> Iterator[str]:
    """Yield the names of the node's stored files, those inside stored directories too.

    As this task sees the node (`entries`): in a transaction, with the files it staged.
    `recorded` names the node's stored directories that have records.
    """
    children = set(children_of(metadata)) if len(path) < len(db.keys) else set()
    listed = db.storage.listdir(rel_path(path))  # kinds, without a request per entry
    # entries() hides a directory that looks like an orphan; a recorded one is listed anyway
    for name in sorted(set(entries(db, path)) | recorded):
        if name not in children:
            yield from _stored_below(db, path, name, listed.get(name), recorded=name in recorded)


def _stored_below(
    db: Database, path: NodePath, name: str, listed: str | None = None, *, recorded: bool = False
) -> Iterator[str]:
    """Yield `name` if it is a stored file, or the files of the stored directory `name`.

    `listed` is its kind in the node's listing, if known (a staged copy is looked up). A
    directory with records (`recorded`) is never taken for an orphan, and everything in it
    but metatree's own temp names (``.metatree*``, as a download skips them) is listed: a
    planted ``metadata.json`` or ``.lock`` there is unexpected, not invisible.
    """
    try:
        rel = readable(db, path, name)
    except NotFoundError:
        return  # removed in this transaction
    kind = listed if listed is not None and rel == rel_path(path, name) else db.storage.kind(rel)
    if kind == "file":
        yield name
    elif kind == "directory" and not orphan_to_hide(db, path, name, rel, recorded=recorded):
        for sub in db.storage.walk_files(rel):
            if not any(part.startswith(SYSTEM_PREFIX) for part in sub.split("/")):
                yield f"{name}/{sub}"


def _where(db: Database, path: NodePath, name: str) -> str:
    """Return where the recorded file `name` is read from (inside a staged directory too)."""
    top, _, below = name.partition("/")
    base = readable(db, path, top)
    return f"{base}/{below}" if below else base
