"""A model's files onto the local disk: all of them checked, or none of them there.

`download_files` fetches every file of a version (already resolved, its record checked)
under temporary names in the target directory, each checked against its file record; then
places the plain files, then extracts the archive (read from its verified local copy). A
failure at any step takes back what this download placed and the directories it created, so
a failed download can simply be retried. With ``overwrite``, a file replaced before the
failure stays replaced (the old bytes are gone by then).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fsspec.callbacks import DEFAULT_CALLBACK

from metatree._core.read import get
from metatree._extract import extract
from metatree._localfiles import local_call
from metatree._storage import CHUNK_SIZE
from metatree.errors import AlreadyExistsError, PathError, StorageError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._core.resolve import Resolved

__all__ = ["download_files", "local_directory"]

VERIFIED: Final[dict[str, Any]] = {
    "recursive": False,
    "chunk_size": CHUNK_SIZE,
    "callback": DEFAULT_CALLBACK,
    "verify": True,
}
"""How the model store reads a file: checked against its record, as `Metatree.get` does."""


def local_directory(local_path: object) -> Path:
    """Return the absolute local directory a download goes to, checked before any request."""
    if not isinstance(local_path, str | os.PathLike):
        raise PathError(repr(local_path)[:80], "local_path must be a local directory path")
    path = os.fspath(local_path)
    if not isinstance(path, str) or not path or "\x00" in path:
        raise PathError(repr(local_path)[:80], "local_path must be a non-empty str path")
    local = Path(path).absolute()
    if os.path.lexists(local) and not local.is_dir():
        raise AlreadyExistsError(str(local), "local_path is not a directory")
    return local


def download_files(node: Resolved, record: dict[str, Any], local: Path, *, overwrite: bool) -> str:
    """Download the files `record` names from `node` into `local`; return the model's path.

    The model's path is `local` itself for an archive (extracted there), else its file.
    """
    stored, archive = record["model"]["file"], record["model"]["type"] == "archive"
    plain = [*([] if archive else [stored]), *record["extra"]]
    for name in plain:  # refused before anything is read
        _check_target(local / name, overwrite)
    created = _make_directories(local)
    temps: dict[str, str] = {}
    placed: list[Path] = []
    try:
        for name in [*([stored] if archive else []), *plain]:
            temps[name] = str(local / f".metatree-download-{uuid.uuid4().hex}")
            get(node, name, temps[name], **VERIFIED)
        placed = _place({n: temps[n] for n in plain}, local, overwrite)
        if archive:
            extract(_chunks(temps[stored]), str(local), overwrite=overwrite, name=stored)
    except BaseException:
        _remove([*map(Path, temps.values()), *placed], created)
        raise
    _remove([Path(t) for t in temps.values()], [])
    return str(local) if archive else str(local / stored)


def _remove(files: list[Path], directories: list[Path]) -> None:
    """Remove what a download made: its files, then the directories it created.

    Directories go innermost first, and only when empty: a concurrent writer's files stay.
    """
    for path in files:
        with contextlib.suppress(OSError):
            path.unlink()
    for directory in reversed(directories):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse a download target that exists (without `overwrite`) or is a directory."""
    if target.is_dir() and not target.is_symlink():
        raise AlreadyExistsError(str(target), "a directory has the name of a file to download")
    if not overwrite and os.path.lexists(target):
        raise AlreadyExistsError(str(target), "pass overwrite=True to replace it")


def _make_directories(local: Path) -> list[Path]:
    """Create `local` and its missing parents; return those created, outermost first."""
    missing = []
    for directory in [local, *local.parents]:
        if os.path.lexists(directory):
            break
        missing.append(directory)
    local_call(str(local), local.mkdir, parents=True, exist_ok=True)
    return missing[::-1]


def _place(temps: dict[str, str], local: Path, overwrite: bool) -> list[Path]:
    """Move downloaded files into place; return those that did not exist before.

    With `overwrite` a file is replaced (``os.replace``). Without it, by a hard link, which
    fails rather than replace a file that appeared meanwhile; where the filesystem has no
    hard links (FAT, some network shares), by a rename after one more look (a window the
    link closes). On a failure the files placed so far are taken back.
    """
    placed: list[Path] = []
    try:
        for name, temp in temps.items():
            target = local / name
            existed = os.path.lexists(target)
            if overwrite:
                local_call(str(target), os.replace, temp, target)
            else:
                _link(temp, target)
            if not existed:
                placed.append(target)
    except BaseException:
        for path in placed:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return placed


def _link(temp: str, target: Path) -> None:
    try:
        os.link(temp, target)
    except FileExistsError:
        raise AlreadyExistsError(str(target), "pass overwrite=True to replace it") from None
    except OSError as exc:  # no hard links here
        if os.path.lexists(target):
            raise AlreadyExistsError(str(target), "pass overwrite=True to replace it") from None
        try:
            os.rename(temp, target)
        except OSError:
            raise StorageError(str(target), f"local filesystem: {exc}") from None


def _chunks(path: str) -> Iterator[bytes]:
    """Read a local file in chunks (the archive, already checked, for `extract`)."""
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            yield chunk
