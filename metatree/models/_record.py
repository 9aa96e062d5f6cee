"""An upload's inputs and its record: what `upload` accepts, and what it stores about it.

The record is modelstore's meta-data (seed 000): ``model``, ``storage``, ``code``, ``extra``
and ``metadata``, kept as the version node's metadata. Whatever a record holds was read from
storage, so `checked_record` checks every field a download acts on: the file names become
local paths. No I/O on the tree here; the upload's inputs are checked on the local disk.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final

import orjson

from metatree._metadata import check_value
from metatree._paths import check_name, check_stored_name
from metatree._records import runtime
from metatree.errors import (
    AlreadyExistsError,
    CorruptMetadataError,
    MetadataError,
    NotFoundError,
    PathError,
)
from metatree.models._state import fold

if TYPE_CHECKING:
    from metatree._records import FileRecord

__all__ = [
    "ARCHIVE_NAME",
    "RECORD_KEYS",
    "checked_record",
    "extra_paths",
    "make_record",
    "upload_source",
    "user_metadata",
]

ARCHIVE_NAME: Final = "artifacts.tar.gz"
BYTES_NAME: Final = "model.bin"
RECORD_KEYS: Final = ("model", "storage", "code", "extra", "metadata")
MAX_USER_METADATA: Final = 64 * 1024
_TYPES: Final = ("file", "archive", "bytes")
_OBJECT_STORES: Final = ("s3", "s3a", "gs", "gcs", "az", "abfs")


def upload_source(source: object, name: object) -> tuple[str, str, bool]:
    """Return (type, stored name, archive?) of an upload's source, checked before any I/O.

    A directory is stored as one ``artifacts.tar.gz`` (as modelstore's archive), a file under
    its own name, bytes as `name` (default ``model.bin``).
    """
    if name is not None:
        check_name(name, str(name))
    if isinstance(source, bytes | bytearray | memoryview):
        return "bytes", str(name or BYTES_NAME), False
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not isinstance(path, str):
            raise PathError(repr(source)[:80], "a local path is a str")
        if os.path.isdir(path):
            if name is not None and name != ARCHIVE_NAME:
                raise PathError(path, f"a directory is stored as {ARCHIVE_NAME}")
            return "archive", ARCHIVE_NAME, True
        if not os.path.isfile(path):
            raise NotFoundError(path, "local file or directory to upload")
        return "file", str(name or check_name(os.path.basename(path), path)), False
    raise PathError(repr(source)[:80], "upload a local file or directory path, or bytes")


def extra_paths(extras: object, source: object, stored: str, archive: bool) -> list[str]:
    """Return the extra files' paths: existing local files, each with a name of its own.

    A download writes the model, the extras and (for an archive) the archive's top level into
    one directory, so an extra cannot share a name with any of them (folded as `fold` does).
    One path is taken as a list of one, as modelstore does.
    """
    if extras is None:
        return []
    if isinstance(extras, str | os.PathLike):
        extras = [extras]
    if not isinstance(extras, list | tuple):
        raise PathError(repr(extras)[:80], "extras is a local file path, or a list of them")
    seen = {fold(name) for name in _written_beside(source, stored, archive)}
    paths: list[str] = []
    for extra in extras:
        if not isinstance(extra, str | os.PathLike):
            raise PathError(repr(extra)[:80], "an extra is a local file path")
        path = os.fspath(extra)
        if not isinstance(path, str) or not os.path.isfile(path):
            raise NotFoundError(str(path), "local extra file")
        base = fold(check_name(os.path.basename(path), path))
        if base in seen:
            raise AlreadyExistsError(
                path, "an extra file needs a name of its own (not the model's, nor one in it)"
            )
        seen.add(base)
        paths.append(path)
    return paths


def _written_beside(source: object, stored: str, archive: bool) -> list[str]:
    if not archive or not isinstance(source, str | os.PathLike):
        return [stored]
    names = [stored, "python-info.json"]
    with contextlib.suppress(OSError):
        names.extend(str(n) for n in os.listdir(os.fspath(source)))
    return names


def user_metadata(metadata: object) -> dict[str, Any]:
    """Return the caller's metadata for the record: JSON values, at most 64 KiB."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise MetadataError("metadata", f"a dict of JSON values, not {type(metadata).__name__}")
    check_value(metadata, "metadata")
    if len(orjson.dumps(metadata)) > MAX_USER_METADATA:
        raise MetadataError("metadata", f"larger than {MAX_USER_METADATA} bytes as JSON")
    return dict(metadata)


def make_record(
    root: str,
    url: str,
    where: tuple[str, str],
    kind: str,
    files: dict[str, FileRecord],
    stored: str,
    user: dict[str, Any],
) -> dict[str, Any]:
    """Return an upload's record from the file records its puts just made (`url`: the model's)."""
    domain, model_id = where
    model = files[stored]
    facts = runtime()
    scheme = root.split("://", 1)[0]
    storage: dict[str, Any] = {
        "type": scheme,
        "root": root,
        "path": f"{domain}/{model_id}/{stored}",
        "url": url,
        "size": model.size,
        "sha256": model.sha256,
    }
    if scheme in _OBJECT_STORES:
        storage["bucket"] = root.split("://", 1)[1].split("/", 1)[0]
    return {
        "model": {"domain": domain, "model_id": model_id, "type": kind, "file": stored},
        "storage": storage,
        "code": {
            "runtime": facts["python"],
            "user": facts["user"],
            "host": facts["host"],
            "platform": facts["platform"],
            "created": model.created.isoformat(timespec="microseconds"),
            "dependencies": dict(facts["versions"]),
        },
        "extra": {n: {"size": r.size, "sha256": r.sha256} for n, r in files.items() if n != stored},
        "metadata": user,
    }


def checked_record(metadata: dict[str, Any], where: tuple[str, str], url: str) -> dict[str, Any]:
    """Return the record stored in a version node, checked: it names the files to download.

    Each name must be a stored name of one level (the rules of names read from storage), and
    no two may fold alike: both would land on one local file.
    """
    if "model" not in metadata:
        raise NotFoundError(url, "model-store record (the node was not uploaded as a model)")
    record: dict[str, Any] = {k: metadata.get(k) for k in RECORD_KEYS}
    if not all(isinstance(record[k], dict) for k in RECORD_KEYS):
        raise CorruptMetadataError(url, "model store: the model's record is malformed")
    model: dict[str, Any] = record["model"]
    if (model.get("domain"), model.get("model_id")) != where or model.get("type") not in _TYPES:
        raise CorruptMetadataError(url, "model store: the record names another model")
    names = [model.get("file"), *record["extra"]]
    for name in names:
        try:
            check_stored_name(name, url)
        except PathError as exc:
            raise CorruptMetadataError(url, f"model store: file name {exc.reason}") from None
    if len({fold(n) for n in names}) != len(names):
        raise CorruptMetadataError(url, "model store: two files of the record share a name")
    return record
