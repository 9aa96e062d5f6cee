"""Planted symbolic links, as fsck sees them: found with ``lstat``, moved, never followed.

metatree never stores a link, so one in a local tree was planted (by hand, by another tool).
Every storage primitive refuses a path through one (`metatree.backends.local.confine_local`),
which keeps reads and writes inside the root but would stop fsck at the first link. These
helpers let fsck report each link and move the link itself (``rename(2)`` of the link, not
of its target) into the quarantine. Only stores whose data is this host's filesystem can
hold links; elsewhere they find none.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from fsspec.implementations.local import LocalFileSystem

from metatree._names import SYSTEM_PREFIX

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["has_links", "is_link", "links_in", "move_link", "walk_with_links"]


def has_links(storage: Storage) -> bool:
    """Whether the store's data is this host's filesystem, where links can be planted."""
    return isinstance(storage.fs, LocalFileSystem)


def _raw(storage: Storage, rel: str) -> str:
    """Return the local path of `rel`, unchecked: only ever ``lstat``-ed or renamed, never opened."""
    return f"{storage.root.rstrip('/')}/{rel}" if rel else storage.root


def is_link(storage: Storage, rel: str) -> bool:
    """Whether `rel` itself is a symbolic link (its parents are the caller's to have checked)."""
    if not has_links(storage) or not rel:
        return False
    try:
        return stat.S_ISLNK(os.lstat(_raw(storage, rel)).st_mode)
    except OSError:
        return False


def links_in(storage: Storage, rel: str) -> set[str]:
    """Return the names in the directory `rel` that are symbolic links (none elsewhere)."""
    if not has_links(storage):
        return set()
    try:
        with os.scandir(storage.abs(rel)) as entries:  # `abs` refuses a link on the way
            return {entry.name for entry in entries if entry.is_symlink()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def walk_with_links(
    storage: Storage, rel: str, *, system: bool = False
) -> tuple[list[str], list[str]]:
    """Return the files and the links below the stored directory `rel`, relative to it.

    Links are listed, never followed; metatree's own temporaries are left out of both
    unless `system`. Without links this is `Storage.walk_files`.
    """
    if not has_links(storage):
        files = [sub for sub in storage.walk_files(rel) if system or not _system(sub)]
        return files, []
    top = storage.abs(rel)
    files, links, stack = [], [], [""]
    while stack:
        sub = stack.pop()
        for entry in _entries(f"{top}/{sub}" if sub else top):
            name = f"{sub}/{entry.name}" if sub else entry.name
            if not system and _system(name):
                continue
            if entry.is_symlink():
                links.append(name)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(name)
            else:
                files.append(name)
    return sorted(files), sorted(links)


def _entries(folder: str) -> list[os.DirEntry[str]]:
    """List a directory (none if it is gone: the walk of a missing directory finds nothing)."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _system(sub: str) -> bool:
    return any(part.casefold().startswith(SYSTEM_PREFIX) for part in sub.split("/"))


def move_link(storage: Storage, rel: str, target: str) -> None:
    """Move the link `rel` itself to `target` (a fresh name in a checked directory).

    ``os.rename`` renames the link, never what it points to; `target` goes through `abs`,
    so the quarantine it lands in is checked for links first. A `rel` that is no longer a
    link (replaced meanwhile) is left alone.
    """
    destination = storage.abs(target)
    storage.abs(rel.rpartition("/")[0])  # no link on the way to it: only it is moved
    if is_link(storage, rel):
        os.rename(_raw(storage, rel), destination)
