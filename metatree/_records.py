"""File records: what was stored, by whom, with which software; kept in the node's metadata.

Every put records each file it stores (a recursive put every file of the directory) under one
reserved key of the node's metadata.json, `RECORDS`::

    ".metatree.records": {
        "files": {"model.bin": {"size": 7, "sha256": "...", "created": "...Z", "put": "<id>"}},
        "puts": {"<id>": {"user": ..., "host": ..., "python": "python:3.11.7", "platform": ...,
                          "versions": {"metatree": ..., "fsspec": ...}, "info": {...}}}
    }

A put's provenance is stored once, under its uuid4, and shared by the files it stored: a
directory of 1 000 files would otherwise repeat it 1 000 times in a metadata.json that every
verified read downloads. A put entry no file refers to any more is dropped on the next write.

Records are stored data, so input (DESIGN.md invariant 6): `records_of` checks every field
before anything trusts it, and a malformed record is `CorruptMetadataError`, never a record
read as absent (that would turn verification off for whoever can write the bucket).
metatreedb 0.2.3 keeps the key when it updates a node (it rewrites only the values it is
given), and reads it as one more metadata value.
"""

from __future__ import annotations

import datetime
import functools
import getpass
import importlib.metadata
import platform
import re
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from metatree._metadata import (
    CHILDREN,
    RESERVED_KEY_PREFIX,
    _parse_json,
    check_value,
    dump_metadata,
)
from metatree._paths import check_stored_name
from metatree.errors import CorruptMetadataError, MetadataError, PathError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

__all__ = [
    "RECORDS",
    "FileRecord",
    "Provenance",
    "check_info",
    "drop_records",
    "record_of",
    "recorded_names",
    "records_of",
    "runtime",
    "set_records",
    "spelled",
    "user_metadata",
]

RECORDS: Final = ".metatree.records"
"""The reserved metadata key holding a node's file records (user metadata cannot write it)."""

LIBRARIES: Final = ("fsspec", "s3fs", "pyarrow", "numpy", "pandas", "scikit-learn", "torch")
"""Libraries whose versions a record names, when installed (metatree's is always named)."""

MAX_INFO_BYTES: Final = 64 * 1024
"""Largest caller-given provenance (`info=`), serialised: it is stored in the node's metadata."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PUT_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who stored a file, where, and with which software; one per put."""

    uuid: str
    """The put's uuid4 (hex): the files of one recursive put share it."""
    user: str
    host: str
    python: str
    """The Python runtime, ``"python:3.11.7"``."""
    platform: str
    versions: dict[str, str] = field(default_factory=dict)
    """metatree's version and those of the key libraries that were installed."""
    info: dict[str, Any] = field(default_factory=dict)
    """What the caller passed as ``put(..., info=...)``."""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What metatree recorded when it stored a file: its size, sha256, time and provenance."""

    name: str
    """The file's name in its node (``"ckpt/weights.bin"`` inside a stored directory)."""
    size: int
    sha256: str
    created: datetime.datetime
    """When the put stored it (UTC)."""
    provenance: Provenance


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without passwd entry)
        return ""


@functools.cache
def runtime() -> dict[str, Any]:
    """Return this process's user, host, Python, platform and library versions (computed once).

    Versions come from the installed distributions' metadata (no import of torch or pandas
    for a put); a library that is not installed is left out.
    """
    from metatree import __version__

    versions = {"metatree": __version__}
    for library in LIBRARIES:
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "user": _user(),
        "host": socket.gethostname(),
        "python": f"python:{platform.python_version()}",
        "platform": platform.platform(),
        "versions": versions,
    }


def check_info(info: object, shown: str) -> dict[str, Any]:
    """Validate the caller's extra provenance (`put(..., info=)`) before any I/O."""
    if info is None:
        return {}
    if not isinstance(info, dict):
        raise MetadataError("info", f"a dict of JSON values, not {type(info).__name__}")
    check_value(info, "info")
    data = dump_metadata(info)
    if len(data) > MAX_INFO_BYTES:
        raise MetadataError("info", f"larger than {MAX_INFO_BYTES} bytes once serialised")
    # a copy of every level, as it will read back: a transaction keeps it until its commit,
    # and the caller's later changes to a nested value must not reach the store
    checked: dict[str, Any] = _parse_json(data)
    return checked


def set_records(
    metadata: dict[str, Any],
    name: str,
    files: Iterable[tuple[str, int, str]],
    info: Mapping[str, Any],
    where: str,
    *,
    fold: bool = False,
    checked: bool = False,
) -> None:
    """Record the files one put stored as `name` (replacing what `name` held before).

    `files` are (name relative to the node, size, sha256). The put gets a new uuid4 and
    this process's provenance plus `info`. With `fold` (a case-insensitive filesystem), the
    records of a name differing only in case go too: it was the same file. `checked` says
    the stored records were checked already (`records_of`), in this same metadata: a put
    checks them before its first write, and 100 000 records take 0.2 s to check again.
    """
    put_id = uuid.uuid4().hex
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    files_map, puts = _stored(metadata, where, checked=checked)
    for old in _under(files_map, name, fold):
        del files_map[old]
    for file, size, sha256 in files:
        files_map[file] = {"size": size, "sha256": sha256, "created": created, "put": put_id}
    puts[put_id] = {**runtime(), "info": dict(info)}
    _prune(metadata, files_map, puts)


def drop_records(metadata: dict[str, Any], name: str, where: str, *, fold: bool = False) -> bool:
    """Forget the records of `name` (a file, or every file of a stored directory).

    Returns whether there was any (then `metadata` changed and must be written). `fold` as in
    `set_records`.
    """
    if RECORDS not in metadata:
        return False
    files_map, puts = _stored(metadata, where)
    gone = _under(files_map, name, fold)
    for old in gone:
        del files_map[old]
    _prune(metadata, files_map, puts)
    return bool(gone)


def spelled(records: Collection[str], name: str, fold: bool) -> str:
    """Return the name under which `name`'s records are kept.

    That is `name` itself, except on a case-insensitive filesystem (`fold`), where the file
    ``Model.bin`` is also read as ``model.bin``: its record keeps the spelling it was put with.
    """
    if not fold or name in records or any(k.startswith(f"{name}/") for k in records):
        return name
    key = name.casefold()
    for recorded in records:
        top = recorded.split("/", 1)[0]
        if top.casefold() == key:
            return top
    return name


def _under(files_map: Mapping[str, Any], name: str, fold: bool) -> list[str]:
    """Return the recorded names that are `name` or below it (in any case, with `fold`)."""
    if fold:
        key = name.casefold()
        return [f for f in files_map if f.split("/", 1)[0].casefold() == key]
    return [f for f in files_map if f == name or f.startswith(f"{name}/")]


def _prune(metadata: dict[str, Any], files_map: dict[str, Any], puts: dict[str, Any]) -> None:
    used = {entry["put"] for entry in files_map.values()}
    for put_id in [p for p in puts if p not in used]:
        del puts[put_id]
    if files_map:
        metadata[RECORDS] = {"files": files_map, "puts": puts}
    else:
        metadata.pop(RECORDS, None)


def _stored(
    metadata: Mapping[str, Any], where: str, *, checked: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return copies of the stored files and puts maps, checked (see `records_of`)."""
    if not checked:
        records_of(metadata, where)  # refuse to build on a malformed record
    raw = metadata.get(RECORDS)
    if raw is None:
        return {}, {}
    return {k: dict(v) for k, v in raw["files"].items()}, dict(raw["puts"])


def user_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Return the node's metadata as users see it: without metatree's own keys.

    Those are the file records and the model store's state (``.metatree.models``): every
    key with the reserved prefix, which user updates cannot write.
    """
    children = metadata.get("children")
    if children is not None and not isinstance(children, list):  # a v2 index: all its names
        metadata = {**metadata, "children": list(children)}
    if not any(k.startswith(RESERVED_KEY_PREFIX) for k in metadata):
        return metadata
    return {k: v for k, v in metadata.items() if not k.startswith(RESERVED_KEY_PREFIX)}


def record_of(metadata: Mapping[str, Any], name: str, where: str) -> FileRecord | None:
    """Return the record of the file `name`, or None when it has none (metatreedb wrote it)."""
    return records_of(metadata, where, under=name).get(name)


def records_of(
    metadata: Mapping[str, Any], where: str, under: str | None = None
) -> dict[str, FileRecord]:
    """Return the node's file records, every field checked (`where` names the node in errors).

    With `under`, only the records of that file or stored directory (and only those are
    checked: a verified get of one file in a node of 100 000 records checks one, not all).
    A node without the key (written by metatreedb or before records existed) has none.
    """
    files, puts = _shape(metadata, where)
    provenances: dict[str, Provenance] = {}
    if under is None:
        names: Iterable[str] = files
        for put_id, entry in puts.items():  # every put, even one no record names
            provenances[put_id] = _provenance(put_id, entry, where)
    else:
        names = [k for k in files if k == under or k.startswith(f"{under}/")]
    children = set(metadata.get(CHILDREN, ()))
    return {name: _record(name, files[name], puts, provenances, children, where) for name in names}


def recorded_names(metadata: Mapping[str, Any], where: str) -> Collection[str]:
    """Return the names the node has records for, unchecked but for the shape (`spelled`)."""
    return _shape(metadata, where)[0].keys()


def _shape(metadata: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the raw files and puts maps of the records (empty without any), shape checked."""
    raw = metadata.get(RECORDS)
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict) or set(raw) != {"files", "puts"}:
        raise _corrupt(where, "it must be an object with 'files' and 'puts'")
    files, puts = raw["files"], raw["puts"]
    if not isinstance(files, dict) or not isinstance(puts, dict):
        raise _corrupt(where, "'files' and 'puts' must be objects")
    return files, puts


def _record(
    name: str,
    entry: object,
    puts: Mapping[str, Any],
    provenances: dict[str, Provenance],
    children: set[str],
    where: str,
) -> FileRecord:
    _check_file_name(name, where)
    if "/" in name and name.split("/", 1)[0] in children:
        # a path into a child node would claim its files (a single name may be a file beside
        # a child of that name: object stores hold a key and a prefix alike, docs/requests.md)
        raise _corrupt(where, f"recorded file name {name!r} is inside a child node")
    if not isinstance(entry, dict) or set(entry) != {"size", "sha256", "created", "put"}:
        raise _corrupt(where, f"the record of {name!r} must hold size, sha256, created and put")
    size, sha256, created, put_id = entry["size"], entry["sha256"], entry["created"], entry["put"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _corrupt(where, f"the size of {name!r} is not a non-negative integer")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _corrupt(where, f"the sha256 of {name!r} is not 64 lowercase hex digits")
    when = _timestamp(created)
    if when is None:
        raise _corrupt(where, f"the created time of {name!r} is not an ISO 8601 UTC time")
    if not isinstance(put_id, str) or put_id not in puts:
        raise _corrupt(where, f"the record of {name!r} names no stored put")
    if put_id not in provenances:
        provenances[put_id] = _provenance(put_id, puts[put_id], where)
    return FileRecord(name, size, sha256, when, provenances[put_id])


def _check_file_name(name: str, where: str) -> None:
    """Refuse a recorded name that is not a relative path of safe segments (it becomes a path)."""
    if not name or len(name) > 4096:
        raise _corrupt(where, f"recorded file name {name[:80]!r} is empty or too long")
    for segment in name.split("/"):
        try:
            check_stored_name(segment, where)
        except PathError as exc:
            raise _corrupt(where, f"recorded file name {name!r}: {exc.reason}") from None


def _timestamp(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value.endswith("+00:00"):
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return None


def _provenance(put_id: str, entry: object, where: str) -> Provenance:
    if not _PUT_ID.fullmatch(put_id):
        raise _corrupt(where, f"put id {put_id[:80]!r} is not a uuid4 in hex")
    fields = ("user", "host", "python", "platform", "versions", "info")
    if not isinstance(entry, dict) or set(entry) != set(fields):
        raise _corrupt(where, f"the provenance of put {put_id} must hold {', '.join(fields)}")
    user, host, python, system = (entry[k] for k in fields[:4])
    versions, info = entry["versions"], entry["info"]
    if not all(isinstance(t, str) for t in (user, host, python, system)):
        raise _corrupt(where, f"the provenance of put {put_id} has a non-str field")
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        raise _corrupt(where, f"the versions of put {put_id} are not a map of str")
    if not isinstance(info, dict):
        raise _corrupt(where, f"the info of put {put_id} is not an object")
    return Provenance(put_id, user, host, python, system, dict(versions), dict(info))


def _corrupt(where: str, reason: str) -> CorruptMetadataError:
    return CorruptMetadataError(where, f"file records ({RECORDS}): {reason}")
