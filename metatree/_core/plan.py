"""Put planning: where a put lands, what it creates, and what it must refuse before writing.

`plan_put` walks the target once (`metatree._core.resolve.descend`) to the deepest node that
exists and names the nodes to create below it; `claim` and `check_target` then check the
spot against what is stored, so that everything refusable is refused before the first write
(`metatree._core.put` carries the plan out). Nothing here writes, but `claim` clears an orphan.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metatree._core import index
from metatree._core.db import children_of, rel_path
from metatree._core.read import is_orphan_listing
from metatree._core.resolve import Ahead, descend
from metatree._core.update import check_unreferenced
from metatree._paths import Placeholder, check_name
from metatree.errors import AlreadyExistsError, PathError, UnresolvedPathError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from metatree._core.db import Database
    from metatree._core.resolve import Target
    from metatree._types import NodePath

__all__ = ["PutPlan", "check_target", "claim", "plan_put"]


@dataclass(slots=True)
class PutPlan:
    """Where a put stores `name`: below the existing `anchor`, in the nodes `new` it creates."""

    anchor: NodePath
    """The deepest node on the way that exists."""
    metadata: dict[str, Any]
    """The anchor's metadata (where the file's record goes, when the put creates no node)."""
    version: object
    """The version of the anchor's metadata.json that was read, for the conditional commit."""
    new: list[str]
    """The names of the nodes to create below the anchor, top first (empty: none)."""
    name: str
    """The stored file's name."""
    listed: dict[str, str] | None = None
    """The directory of the top new node (or, with none, of the node) as the walk's wave
    listed it (`Ahead.listing`), complete; None: not listed ahead."""

    @property
    def node(self) -> NodePath:
        """The node that receives the file."""
        return (*self.anchor, *self.new)

    @property
    def target(self) -> str:
        """The file's storage path."""
        return rel_path(self.node, self.name)

    @property
    def claimed(self) -> str:
        """The storage path this put makes its own: the top new node, or the file."""
        return rel_path(self.anchor, self.new[0]) if self.new else self.target


def plan_put(db: Database, target: Target, name: str) -> PutPlan:
    """Walk the target once: the deepest existing node, its metadata, the names to create.

    New names follow the portable rules (`check_name`); names found in an index need not. A
    ``<key>`` can only resolve in a node that exists.
    """
    anchor, missing, later = descend(db, target, Ahead(listing=True, locked=True))
    early = anchor.early
    if missing is None:
        metadata, version = anchor.read()  # the file's record goes into it
        listed = None if early is None else early.listed(anchor.path)
        return PutPlan(anchor.path, metadata, version, [], name, listed)
    new = [missing]
    for segment in later:
        if isinstance(segment, Placeholder):
            raise UnresolvedPathError(
                target.shown, f"{segment} cannot resolve in {missing!r}, which does not exist yet"
            )
        new.append(segment.name)
    try:
        for created in new:
            check_name(created, target.shown)
    except PathError as exc:
        segment = target.segments[len(anchor.path)]
        if isinstance(segment, Placeholder):
            raise UnresolvedPathError(
                target.shown, f"{segment} resolves to {missing!r}: {exc.reason}"
            ) from None
        raise
    metadata, version = anchor.read()
    listed = None if early is None else early.listed((*anchor.path, missing))
    return PutPlan(anchor.path, metadata, version, new, name, listed)


def claim(db: Database, plan: PutPlan, listed: Mapping[str, str] | None = None) -> None:
    """Make sure the top new node starts empty: clear an orphan, refuse anything else.

    Refuses first a name that only differs from a sibling's in Unicode form or case (NFC
    and NFD spellings of one name look the same and are two names on Linux but one on
    macOS; names differing in case only are one on case-insensitive filesystems, where the
    new node would land in the sibling's directory and replace its index). Then, since the
    index does not list the name, a directory there is either an orphan node (a crashed put
    or remove, a rolled-back transaction: it has a metadata.json), which is removed so that
    the new node never inherits its files, or a directory a user stored with
    ``put(recursive=True)``, which is in the way. `listed` is what is stored at the name when
    the caller already knows it (a transaction's listing of the anchor: `Transaction.listed`).
    """
    name = plan.new[0]
    fold = _fold if db.case_insensitive else _nfc
    wanted = fold(name)
    sibling = index.find_lookalike(children_of(plan.metadata), wanted, fold)
    if sibling is not None:
        what = "case or Unicode form" if db.case_insensitive else "Unicode form"
        raise AlreadyExistsError(
            db.url(plan.anchor, name),
            f"node {sibling!r} differs from it only in {what}; use that name",
        )
    rel = plan.claimed
    if listed is None:
        listed = plan.listed
    if listed is None:
        listed = db.storage.listdir(rel)
    if not listed:
        return
    if not is_orphan_listing(listed):
        raise AlreadyExistsError(
            db.url(plan.anchor, name), "a stored directory has this name; a node cannot"
        )
    db.storage.remove_tree(rel)


def check_target(db: Database, plan: PutPlan, *, force: bool, recursive: bool) -> str | None:
    """Refuse what `put` must not replace in an existing node; return what is there now.

    The answer is `Storage.kind`'s. Nothing is deleted here: a forced replace puts the new
    data in place first and the old goes only once the new is complete (`metatree._core.put`),
    so a failed put loses nothing.
    """
    url = db.url(plan.node, plan.name)
    if plan.name in children_of(plan.metadata):
        raise AlreadyExistsError(url, "a child node has this name")
    kind = _listed_kind(db, plan)
    if kind == "":
        kind = db.storage.kind(plan.target)
    if kind is None:  # a field's file gone missing: a put would plant that field's value
        check_unreferenced(plan.metadata, plan.node, plan.name, url)
        return None
    if not force:
        raise AlreadyExistsError(url)
    check_unreferenced(plan.metadata, plan.node, plan.name, url)
    if kind == "directory" and not recursive:
        raise AlreadyExistsError(url, "it is a directory: pass recursive=True to replace it")
    return kind


def _listed_kind(db: Database, plan: PutPlan) -> str | None:
    """Return None when the listing read ahead says nothing is at the target; ``""``: ask.

    It answers only "nothing there", the common case (a new file), and only where a name
    means one thing (not where names fold: a case-insensitive store). Whatever is there is
    asked about with `Storage.kind`, which tells a key from a prefix of the same name (S3)
    and refuses a planted link (local disk) as a put did before.
    """
    if plan.listed is None or db.case_insensitive or plan.name in plan.listed:
        return ""
    return None


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()
