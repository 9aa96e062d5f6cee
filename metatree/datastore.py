"""Values kept by reference: a `DataStore` of serialized objects, an `ArchiveStore` of a directory.

mltraq's DataStore and ArchiveStore (seeds 002 and 004), on every backend. Stored as a
metadata value (``node.update(results=DataStore(weights=arr))``), each value becomes a file of
that node, put like any other (recorded, checked when read), and the metadata keeps only a
reference:

``{".metatree.ref": "datastore", "values": {key: {"url": "m/v1/results.weights.npy",
"serializer": "numpy"}}}``

The URL is relative to the database, so a tree moved or copied elsewhere still resolves. The
files, the metadata and the removal of files a replaced value no longer references are one
locked transaction (`store_references`). Reading the field gives a `DataStore` whose values
load on first access (`bind_references`); a reference is stored data, checked before use: its
file must be a file of the node it is read in.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from fsspec.callbacks import NoOpCallback

from metatree._core.update import parse_reference
from metatree._metadata import REF_KEY, is_reference
from metatree._records import records_of, user_metadata
from metatree._streams import ChunkReader
from metatree._transfer import COPY_CHUNK
from metatree.errors import ConflictError, CorruptMetadataError, MetadataError, PathError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from metatree._node import Node

__all__ = [
    "VALUE_OF",
    "ArchiveStore",
    "DataStore",
    "bind_references",
    "plan_values",
    "store_values",
]


class DataStore(dict[str, Any]):
    """A dict whose values are also attributes, stored by reference when it is a metadata value.

    Keys are portable names (they become file names). A `DataStore` read back from a node
    loads each value on first access; pickled values load only after ``allow_pickle = True``
    (unpickling runs code: never for a tree you do not trust).

    Examples
    --------
    >>> ds = DataStore(alpha=1, beta=[1, 2])
    >>> ds.alpha, ds["beta"]
    (1, [1, 2])
    """

    def __init__(self, *args: Any, allow_pickle: bool = False, **values: Any) -> None:
        super().__init__(*args, **values)
        object.__setattr__(self, "allow_pickle", allow_pickle)
        object.__setattr__(self, "_source", None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "allow_pickle":
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, _Lazy):
            value = value.load(self.allow_pickle)
            super().__setitem__(key, value)
        return value

    def __iter__(self) -> Iterator[str]:
        # not dict's own iterator: dict(ds) and {**ds} then go through __getitem__ (loaded)
        return iter(list(dict.keys(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and dict(self.items()) == dict(other.items())

    __hash__ = None

    def copy(self) -> DataStore:
        """Return a shallow copy with every value loaded."""
        return DataStore(dict(self.items()), allow_pickle=self.allow_pickle)

    def pop(self, key: str, *default: Any) -> Any:
        """Remove `key` and return its value (loaded)."""
        if key not in self:
            return dict.pop(self, key, *default)
        value = self[key]
        dict.pop(self, key)
        return value

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the last (key, value) pair, the value loaded."""
        key = next(reversed(list(dict.keys(self))))
        return key, self.pop(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Return the value of `key` (loaded), setting it to `default` when missing."""
        if key not in self:
            dict.__setitem__(self, key, default)
        return self[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of `key` (loaded), or `default`."""
        return self[key] if key in self else default  # noqa: SIM401 - self.get is this method

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        """Yield the values, loading each not loaded yet."""
        return (self[k] for k in self)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        """Yield (key, value) pairs, loading each value not loaded yet."""
        return ((k, self[k]) for k in self)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}=<not loaded>" if isinstance(dict.__getitem__(self, k), _Lazy) else f"{k}={v!r}"
            for k, v in dict.items(self)
        )
        return f"DataStore({shown})"


class ArchiveStore:
    """A local directory kept as one ``.tar.gz`` file of the node it is stored in.

    As a metadata value it is archived when stored (`Metatree.put` with ``archive=True``);
    read back, `extract(target)` unpacks it safely (nothing outside `target`) and
    `get_target()` extracts into a new temporary directory and returns it.
    """

    def __init__(
        self,
        src_dir: str | os.PathLike[str] | None = None,
        include: list[str] | tuple[str, ...] | None = None,
        exclude: list[str] | tuple[str, ...] | None = None,
        hidden: bool = False,
    ) -> None:
        if src_dir is not None and not isinstance(src_dir, str | os.PathLike):
            raise PathError(repr(src_dir)[:80], "an ArchiveStore archives a local directory path")
        self.src_dir = None if src_dir is None else os.fspath(src_dir)
        self.include, self.exclude, self.hidden = include, exclude, hidden
        self._source: tuple[Node, str] | None = None

    def extract(self, target: str | os.PathLike[str], *, overwrite: bool = False) -> str:
        """Extract the stored archive into `target` (created if missing); return its path."""
        if self._source is None:
            raise MetadataError("ArchiveStore", "only an ArchiveStore read from a node extracts")
        node, name = self._source
        list(node.get(name, extract_to=target, overwrite=overwrite))
        return os.fspath(target)

    def get_target(self) -> str:
        """Extract into a new temporary directory and return it (the caller removes it)."""
        return self.extract(tempfile.mkdtemp(prefix="metatree-archive-"))

    def __repr__(self) -> str:
        where = self.src_dir if self._source is None else self._source[1]
        return f"ArchiveStore({where!r})"


class _Lazy:
    """A value of a read DataStore, loaded on first access: one verified read of its file.

    Verified against the file's record in the metadata the reference was read with: the
    reference and the record are of one version of the node, and no request re-reads them.
    """

    def __init__(self, node: Node, name: str, serializer: str, stored: dict[str, Any]) -> None:
        self.node, self.name, self.serializer, self.stored = node, name, serializer, stored

    def load(self, allow_pickle: bool) -> Any:
        from metatree._core.read import get
        from metatree._core.resolve import Resolved
        from metatree.serializers import serializer_named

        chosen = serializer_named(self.serializer, allow_pickle=allow_pickle)
        url = f"{self.node.location}/{self.name}"
        record = records_of(self.stored, self.node.location).get(self.name)
        if record is None:  # metatree puts a value's file with a record: this one is not ours
            raise CorruptMetadataError(url, "a DataStore value's file has no record")
        node = Resolved(self.node.db, self.node.path, url, _read=(self.stored, None))
        chunks = get(
            node, self.name, None, recursive=False, chunk_size=COPY_CHUNK, callback=NoOpCallback()
        )
        if not chosen.streams:  # it may seek: a local copy, checked whole before it loads
            with tempfile.TemporaryFile() as local:
                for chunk in chunks:
                    local.write(chunk)
                local.seek(0)
                try:
                    return chosen.load(local)
                except CorruptMetadataError as exc:  # name the stored file, not the copy
                    raise CorruptMetadataError(url, exc.reason) from None
        with ChunkReader(chunks, record.size) as stream:
            try:
                value = chosen.load(cast("BinaryIO", stream))
            except Exception as exc:  # noqa: BLE001 - any loader's failure: its cause first
                raise _cause(stream, exc, url) from None
            complete = stream.finish()  # where the sha256 is confirmed
            _check_size(stream, url)
            if not complete:
                raise CorruptMetadataError(url, f"bytes after the {self.serializer} value")
        return value


def _cause(stream: ChunkReader, exc: Exception, url: str) -> Exception:
    """Return the error a failed load reports: the bytes' fault before the format's.

    A failed download (`IntegrityError`, `StorageError`) is the cause, whatever the loader
    made of it. Otherwise the rest is read: bytes that differ from their record are
    `IntegrityError` (damage, not a format error); a file replaced since its record was read
    is `ConflictError`; only then is it the format's own error, naming the stored file.
    """
    if stream.failed is not None:
        return stream.failed
    try:
        stream.finish()
        _check_size(stream, url)
    except Exception as found:  # noqa: BLE001 - the stream's error is the better cause
        return found
    if isinstance(exc, CorruptMetadataError):
        return CorruptMetadataError(url, exc.reason)
    return exc


def _check_size(stream: ChunkReader, url: str) -> None:
    """Raise `ConflictError` if the file held other than the bytes its record said.

    The stream passed its check, so a forced put replaced the file (and its record) after
    the metadata was read: the value was read for a record that no longer holds.
    """
    if stream.tell() != stream.size:
        raise ConflictError(url, "the value's file was replaced while it was read; read it again")


def bind_references(stored: dict[str, Any], node: Node) -> dict[str, Any]:
    """Return the user's metadata of `stored` (the node's metadata.json as read), references bound.

    Each stored reference becomes a lazy `DataStore`/`ArchiveStore`. Nothing is read: the
    values load on access, checked against the file records of `stored`. A malformed
    reference, or one naming a file outside `node`, is `CorruptMetadataError` here, before
    anything could be read.
    """
    metadata = user_metadata(stored)
    if not any(is_reference(v) for v in metadata.values()):
        return metadata
    bound = dict(metadata)
    for key, value in metadata.items():
        if is_reference(value):
            bound[key] = _bind(value, node, key, stored)
    return bound


def _bind(
    value: dict[str, Any], node: Node, field: str, stored: dict[str, Any]
) -> DataStore | ArchiveStore:
    entries = parse_reference(value, node.path, f"{node.location} ({field})", field)
    if value[REF_KEY] == "archive":
        archive = ArchiveStore()
        archive._source = (node, entries[""][0])
        return archive
    store = DataStore()
    for key, (name, serializer) in entries.items():
        dict.__setitem__(store, key, _Lazy(node, name, serializer, stored))
    return store


_PART = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a field or a key may be when it names a file: no dot, so that ``<field>.<key>`` can
never be read two ways (``a.b`` + ``c`` against ``a`` + ``b.c``)."""


def plan_values(field: str, value: DataStore | ArchiveStore) -> list[tuple[str, Any, Any]]:
    """Check a value before anything is written; return (key, value, serializer) per value.

    The field and the keys must be letters, digits, ``_`` or ``-`` (they name files), keys
    unique in any letter case, and each value must have a serializer.
    """
    _check_part(field, field, "field")
    if isinstance(value, ArchiveStore):
        if value.src_dir is None:
            raise MetadataError(field, "an ArchiveStore read from a node is stored where it is")
        return []
    from metatree.serializers import serializer_for

    planned, seen = [], set()
    for key in dict.keys(value):
        _check_part(key, field, "DataStore key")
        if key.casefold() in seen:
            raise MetadataError(field, f"DataStore keys differing only in case: {key!r}")
        seen.add(key.casefold())
        item = value[key]  # a read DataStore's value loads here, before the lock
        planned.append(
            (
                key,
                item,
                serializer_for(item, allow_pickle=value.allow_pickle, where=f"{field}.{key}"),
            )
        )
    return planned


def _check_part(part: object, field: str, what: str) -> None:
    if not isinstance(part, str) or not _PART.fullmatch(part):
        raise MetadataError(
            field, f"a {what} kept as files is 1-64 letters, digits, '_' or '-', not {part!r}"
        )


VALUE_OF = "metatree_value_of"
"""The provenance `info` key of a value's file: the field it was stored for. fsck and gc judge
a file unreferenced only when its record says so: a user's file that merely looks like a value
(``cfg.notes.deadbeef.txt``) is never one."""


def store_values(
    node: Node, field: str, value: DataStore | ArchiveStore, planned: list[tuple[str, Any, Any]]
) -> dict[str, Any]:
    """Put a value's files into `node` (in the caller's transaction); return its reference.

    Each update writes new files, named with a token of its own, never over the files of the
    value it replaces: a failure before the metadata's commit leaves the old value whole (the
    old files go only after the commit). A name some file of the node already has is refused
    (`AlreadyExistsError`): a value never overwrites a file it does not own.
    """
    prefix = "/".join(node.path) + "/" if node.path else ""
    token = uuid.uuid4().hex[:8]
    if isinstance(value, ArchiveStore):
        name = f"{field}.{token}.tar.gz"
        node.put(
            os.fspath(value.src_dir or ""),
            name=name,
            archive=True,
            include=value.include,
            exclude=value.exclude,
            hidden=value.hidden,
            info={VALUE_OF: field},
        )
        return reference("archive", {"": (prefix + name, "archive")})
    entries = {}
    for key, item, chosen in planned:
        name = f"{field}.{key}.{token}{chosen.suffix}"
        direct = chosen.source(item)  # the value's own memory, where it can be streamed
        if direct is not None:
            with direct:
                node.put(direct, name=name, info={VALUE_OF: field})
        else:
            with tempfile.TemporaryFile() as local:  # serializers write streams; puts read them
                chosen.dump(item, local)
                local.seek(0)
                node.put(local, name=name, info={VALUE_OF: field})
        entries[key] = (prefix + name, chosen.name)
    return reference("datastore", entries)


def reference(kind: str, values: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Return the stored reference of `kind` for ``{key: (url, serializer)}``."""
    return {
        REF_KEY: kind,
        "values": {k: {"url": url, "serializer": s} for k, (url, s) in values.items()},
    }
