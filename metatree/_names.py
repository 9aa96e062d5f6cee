"""System names: every name metatree writes for itself, and the one maker of fresh ones.

A database holds three fixed system files (the config, the lock object, each node's index),
on local disk the OS lock's file ``.metatree.lock`` while a writer holds it, and, for
moments, reserved names of the form ``.metatree.<purpose>.<uuid>``: temp files renamed over
their target, trash directories being deleted, staging copies of a put, a transaction's
staged files, the lock's tomb. They are made only by `reserved_name`, so one
rule (`is_reserved`) recognises every one of them: such names are refused as user names
(`metatree._paths.check_name`) and hidden from listings, so a leftover of a crash is never
read as data. No I/O here.
"""

from __future__ import annotations

import uuid
from typing import Final, Literal, TypeAlias, get_args

__all__ = [
    "CONFIG_FILE",
    "LOCK_FILE",
    "METADATA_FILE",
    "OS_LOCK_FILE",
    "PURPOSES",
    "RESERVED_NAMES",
    "SYSTEM_PREFIX",
    "Purpose",
    "is_reserved",
    "reserved_beside",
    "reserved_name",
]

METADATA_FILE: Final = "metadata.json"
"""Each node's metadata and children index (metatreedb 0.2.3's name)."""
CONFIG_FILE: Final = ".metatree"
"""The database's config at the root: keys and the locking setting."""
LOCK_FILE: Final = ".lock"
"""The lock object's name; metatreedb 0.2.3 uses the same one, so each sees the other's lock."""
OS_LOCK_FILE: Final = ".metatree.lock"
"""Local disk only: the empty file the OS file lock is held on, present while held
(docs/locking.md); reserved by `SYSTEM_PREFIX`, so never a user's name."""
SYSTEM_PREFIX: Final = ".metatree"
"""Every name we create besides the three above (temp files, future system data) starts so."""
RESERVED_NAMES: Final = frozenset({METADATA_FILE, CONFIG_FILE, LOCK_FILE})

Purpose: TypeAlias = Literal["tmp", "trash", "staging", "tx", "tomb"]
"""What a reserved name is for: a temp file renamed over its target (``tmp``), a directory
being deleted (``trash``), a put's complete copy waiting to replace its target (``staging``),
a transaction's staged file (``tx``), the lock object moved aside to be checked (``tomb``)."""
PURPOSES: Final[tuple[Purpose, ...]] = get_args(Purpose)


def is_reserved(name: str) -> bool:
    """Return whether `name` belongs to the system (config, lock, metadata, temp files).

    The comparison ignores case: on case-insensitive filesystems (macOS, Windows)
    ``METADATA.JSON`` *is* the node's index.

    Examples
    --------
    >>> is_reserved("metadata.json"), is_reserved(".metatree.tmp.1"), is_reserved("model.pkl")
    (True, True, False)
    >>> is_reserved("METADATA.JSON"), is_reserved(".MetaTree.x")
    (True, True)
    """
    folded = name.casefold()
    return folded in RESERVED_NAMES or folded.startswith(SYSTEM_PREFIX)


def reserved_name(purpose: Purpose) -> str:
    """Return a fresh reserved name, ``.metatree.<purpose>.<uuid4 hex>``.

    The uuid makes it unique among concurrent writers, so nobody else can hold it; each
    backend joins it to a directory in its own path syntax.

    Examples
    --------
    >>> name = reserved_name("tmp")
    >>> name.startswith(".metatree.tmp."), is_reserved(name)
    (True, True)
    """
    return f"{SYSTEM_PREFIX}.{purpose}.{uuid.uuid4().hex}"


def reserved_beside(rel: str, purpose: Purpose) -> str:
    """Return a fresh reserved name in the directory of `rel` (a ``/``-joined path).

    Examples
    --------
    >>> reserved_beside("m/v1/model.bin", "staging").startswith("m/v1/.metatree.staging.")
    True
    >>> reserved_beside("top", "trash").startswith(".metatree.trash.")
    True
    """
    parent, _, _ = rel.rpartition("/")
    name = reserved_name(purpose)
    return f"{parent}/{name}" if parent else name
