"""Serializers of the data store: one value to one local binary stream and back.

A `DataStore` value is written to a file of its node; the metadata keeps a reference that
names the serializer (``"numpy"``) so that the value can be loaded again. This module is that
registry: `serializer_for` picks a serializer for a value, `serializer_named` finds the one a
stored reference names, and `register_serializer` adds a user's. Serializers never touch the
tree: they write to and read from streams the caller opens.

Built-ins, in the order `serializer_for` tries them (user serializers come before them):

======== ======== ================================================================
name     suffix   values
======== ======== ================================================================
bytes    .bin     bytes, bytearray, C-contiguous memoryview (loaded as bytes)
numpy    .npy     numpy.ndarray (and memmap) without Python objects in its dtype
pandas   .parquet pandas DataFrame and Series (a Series comes back a Series)
arrow    .parquet pyarrow.Table
json     .json    values that `check_value` admits as metadata (JSON round trip)
pickle   .pkl     anything picklable, only with ``allow_pickle=True``
======== ======== ================================================================

numpy, pandas and pyarrow are optional. Nothing here imports them to decide whether a value
is theirs: a value's type names its module, and an instance of a module's type means the
module is already loaded (`_loaded`). They are imported when a value is written or read.

Pickle runs code from the stream it loads: a tree written by someone else can run anything
on the reader's machine. So it is opt-in on both sides (``allow_pickle``), as numpy does.
"""

from __future__ import annotations

import base64
import importlib
import math
import pickle
import re
import sys
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

import orjson

from metatree._metadata import _parse_json, check_value
from metatree.errors import CorruptMetadataError, MetadataError

if TYPE_CHECKING:
    from types import ModuleType
    from typing import BinaryIO

__all__ = ["Serializer", "register_serializer", "serializer_for", "serializer_named"]

_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SUFFIX: Final = re.compile(r"\.[a-z0-9]{1,16}")


class Serializer(ABC):
    """Write one kind of value to a binary stream and read it back.

    Subclass it, set `name` and `suffix`, implement the three methods, and pass an instance
    to `register_serializer`. Instances hold no state: one serves every value.
    """

    name: ClassVar[str]
    """Stored in the reference, so it must never change once trees hold it."""
    suffix: ClassVar[str]
    """Suffix of the file the value is written to (``".npy"``)."""
    unsafe: ClassVar[bool] = False
    """Whether loading can run code from the stream: then only with ``allow_pickle=True``."""

    @abstractmethod
    def accepts(self, value: object) -> bool:
        """Whether `dump` writes `value` so that `load` gives back an equal value.

        Must be cheap and must not import a module to say no.
        """

    @abstractmethod
    def dump(self, value: object, out: BinaryIO) -> None:
        """Write `value` to `out`, streaming, without a second copy of it where possible.

        Raises `MetadataError` for a value it cannot write. A failed dump may have written
        part of the value: the caller discards the stream.
        """

    @abstractmethod
    def load(self, source: BinaryIO) -> object:
        """Read a value written by `dump`; `CorruptMetadataError` if the stream is not one."""

    def explain(self, value: object) -> str | None:
        """Why `accepts` refuses a value of a kind this serializer handles, or None.

        `serializer_for` puts it in its error: "NaN at x[3] is not JSON" says more than
        "no serializer for list".
        """
        return None


def _loaded(value: object, module: str) -> ModuleType | None:
    """Return the optional `module` if `value`'s type comes from it, else None; never import."""
    if type(value).__module__.partition(".")[0] != module:
        return None
    return sys.modules.get(module)


def _require(module: str, serializer: str) -> Any:
    """Import an optional module, or say which package a serializer needs."""
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f"the {serializer!r} serializer needs {module.partition('.')[0]}"
        raise MetadataError(serializer, f"{hint}: pip install it") from None


def _source_name(source: BinaryIO) -> str:
    """Name a stream in errors: fsspec files have ``path``, local files ``name``."""
    return str(getattr(source, "path", None) or getattr(source, "name", "<stream>"))


class _Bytes(Serializer):
    name = "bytes"
    suffix = ".bin"

    def accepts(self, value: object) -> bool:
        if isinstance(value, memoryview):
            return value.c_contiguous  # a strided view would need a copy to be written
        return isinstance(value, (bytes, bytearray))

    def explain(self, value: object) -> str | None:
        return "a memoryview that is not C-contiguous" if isinstance(value, memoryview) else None

    def dump(self, value: object, out: BinaryIO) -> None:
        if not self.accepts(value):
            raise MetadataError(self.name, f"cannot write {type(value).__name__}")
        out.write(cast("bytes", value))  # accepts: a contiguous buffer

    def load(self, source: BinaryIO) -> object:
        return source.read()


class _Json(Serializer):
    name = "json"
    suffix = ".json"

    def accepts(self, value: object) -> bool:
        try:
            check_value(value, "value")
        except MetadataError:
            return False
        return True

    def explain(self, value: object) -> str | None:
        try:
            check_value(value, "value")
        except MetadataError as exc:
            return exc.reason if isinstance(value, (list, dict, str, int, float)) else None
        return None

    def dump(self, value: object, out: BinaryIO) -> None:
        check_value(value, "value")  # the metadata rules: what would not round-trip is refused
        out.write(orjson.dumps(value))

    def load(self, source: BinaryIO) -> object:
        try:
            return _parse_json(source.read())
        except ValueError as exc:  # orjson.JSONDecodeError, too deep
            raise CorruptMetadataError(_source_name(source), f"not JSON: {exc}") from None


def _npy_header(np: Any, source: BinaryIO, version: tuple[int, int]) -> Any:
    """Read a ``.npy`` header: (shape, fortran order, dtype); ValueError if malformed."""
    fmt = np.lib.format
    if version == (1, 0):
        return fmt.read_array_header_1_0(source)
    if version == (2, 0):
        return fmt.read_array_header_2_0(source)
    # 3.0 (UTF-8 field names): numpy reads it only in a private function, so be it
    return np.lib._format_impl._read_array_header(source, version)


class _Numpy(Serializer):
    """``.npy`` through `numpy.lib.format`, never pickling.

    Only exact ``ndarray`` and ``memmap``: a masked array (a subclass) would lose its mask.
    `load` reads ``.npy`` only: `numpy.load` would also open an ``.npz`` zip, lazily.
    """

    name = "numpy"
    suffix = ".npy"

    def accepts(self, value: object) -> bool:
        np = _loaded(value, "numpy")
        return np is not None and type(value) in (np.ndarray, np.memmap) and not self.explain(value)

    def explain(self, value: object) -> str | None:
        dtype = getattr(value, "dtype", None)
        if _loaded(value, "numpy") is None or dtype is None or not dtype.hasobject:
            return None
        return f"a numpy array of dtype {dtype} holds Python objects (pickle them: allow_pickle)"

    def dump(self, value: object, out: BinaryIO) -> None:
        if not self.accepts(value):
            reason = self.explain(value) or f"{type(value).__name__} is not a numpy array"
            raise MetadataError(self.name, reason)
        fmt = _require("numpy.lib.format", self.name)
        fmt.write_array(out, value, allow_pickle=False)  # in 16 MiB chunks to a non-file

    def load(self, source: BinaryIO) -> object:
        np = _require("numpy", self.name)
        fmt = np.lib.format
        where = _source_name(source)
        try:
            if source.seekable():  # check the size before numpy allocates what the header says
                start = source.tell()
                version = fmt.read_magic(source)
                shape, _, dtype = _npy_header(np, source, version)
                expected = math.prod(shape) * dtype.itemsize  # exact: no wrap-around
                data_start = source.tell()
                size = source.seek(0, 2) - data_start
                if size != expected:
                    raise CorruptMetadataError(where, f"{size} data bytes, header says {expected}")
                source.seek(start)
            return fmt.read_array(source, allow_pickle=False)
        except (ValueError, EOFError, OverflowError) as exc:
            if isinstance(exc, CorruptMetadataError):
                raise
            raise CorruptMetadataError(where, f"not a .npy array: {exc}") from None


_SCHEMA_KEY: Final = b"ARROW:schema"
_SERIES_KEY: Final = b"metatree.series"
_SERIES_COLUMN: Final = "__metatree_series__"


def _write_parquet(table: Any, out: BinaryIO, serializer: str) -> None:
    pq = _require("pyarrow.parquet", serializer)
    pq.write_table(table, out)


def _read_parquet(source: BinaryIO, serializer: str) -> Any:
    """Read a Parquet stream and cast it back to the Arrow schema that was written.

    Parquet has no ``date64`` or second timestamps: pyarrow reads them as ``date32`` and
    milliseconds, though it stores the original schema in the file. The cast restores it.
    """
    pa = _require("pyarrow", serializer)
    pq = _require("pyarrow.parquet", serializer)
    try:
        file = pq.ParquetFile(source)
        table = file.read()
        stored = (file.metadata.metadata or {}).get(_SCHEMA_KEY)
        if stored is not None:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
            if not table.schema.equals(schema):
                table = table.cast(schema)
    except (pa.ArrowException, ValueError) as exc:  # binascii.Error is a ValueError
        raise CorruptMetadataError(_source_name(source), f"not Parquet: {exc}") from None
    return table


class _Pandas(Serializer):
    """DataFrame and Series as Parquet, with pandas' own metadata (index, dtypes) in it.

    A Series is written as a one-column frame, its name kept in the schema metadata.
    """

    name = "pandas"
    suffix = ".parquet"

    def accepts(self, value: object) -> bool:
        pd = _loaded(value, "pandas")
        return pd is not None and type(value) in (pd.DataFrame, pd.Series)

    def dump(self, value: object, out: BinaryIO) -> None:
        if not self.accepts(value):
            raise MetadataError(self.name, f"{type(value).__name__} is not a DataFrame or Series")
        pa = _require("pyarrow", self.name)
        frame: Any = value
        series_name = None
        if frame.ndim == 1:  # a Series
            check_value(frame.name, "Series.name")
            series_name = orjson.dumps(frame.name)
            frame = frame.to_frame(name=_SERIES_COLUMN)
        try:  # before anything is written: a column Arrow cannot type fails here
            table = pa.Table.from_pandas(frame)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise MetadataError(self.name, f"Arrow cannot store this frame: {exc}") from None
        if series_name is not None:
            table = table.replace_schema_metadata(
                {**table.schema.metadata, _SERIES_KEY: series_name}
            )
        _write_parquet(table, out, self.name)

    def load(self, source: BinaryIO) -> object:
        table = _read_parquet(source, self.name)
        pa = _require("pyarrow", self.name)
        try:
            frame = table.to_pandas()
            stored_name = (table.schema.metadata or {}).get(_SERIES_KEY)
            if stored_name is None:
                return frame
            series = frame[_SERIES_COLUMN]
            series.name = _parse_json(stored_name)
        except (pa.ArrowException, ValueError, KeyError, TypeError) as exc:
            raise CorruptMetadataError(_source_name(source), f"not a pandas frame: {exc}") from None
        return series


class _Arrow(Serializer):
    name = "arrow"
    suffix = ".parquet"

    def accepts(self, value: object) -> bool:
        pa = _loaded(value, "pyarrow")
        return pa is not None and type(value) is pa.Table

    def dump(self, value: object, out: BinaryIO) -> None:
        if not self.accepts(value):
            raise MetadataError(self.name, f"{type(value).__name__} is not a pyarrow.Table")
        _write_parquet(value, out, self.name)

    def load(self, source: BinaryIO) -> object:
        return _read_parquet(source, self.name)


class _Pickle(Serializer):
    """Anything picklable. Loading runs code from the stream: never from an untrusted tree."""

    name = "pickle"
    suffix = ".pkl"
    unsafe = True

    def accepts(self, value: object) -> bool:
        return True  # whether it pickles shows only when it is dumped

    def dump(self, value: object, out: BinaryIO) -> None:
        try:
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise MetadataError(self.name, f"cannot pickle {type(value).__name__}: {exc}") from None

    def load(self, source: BinaryIO) -> object:
        try:
            return pickle.load(source)  # opt-in, documented as unsafe
        except Exception as exc:  # noqa: BLE001 - unpickling can raise anything
            raise CorruptMetadataError(_source_name(source), f"not a pickle: {exc}") from None


_BUILTINS: Final[tuple[Serializer, ...]] = (
    _Bytes(),
    _Numpy(),
    _Pandas(),
    _Arrow(),
    _Json(),
    _Pickle(),
)
_registered: list[Serializer] = []
"""User serializers, newest first: tried before the built-ins."""
_lock = threading.Lock()


def _all() -> tuple[Serializer, ...]:
    return (*_registered, *_BUILTINS)


def register_serializer(serializer: Serializer) -> None:
    """Add a user serializer, tried (newest first) before the built-ins by `serializer_for`.

    Raises
    ------
    MetadataError
        If `serializer` is not a `Serializer`, its name or suffix is malformed, or a
        serializer of that name exists (a stored reference must name exactly one).
    """
    if not isinstance(serializer, Serializer):
        raise MetadataError(repr(serializer), "a serializer is a metatree.serializers.Serializer")
    name = getattr(serializer, "name", None)
    suffix = getattr(serializer, "suffix", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MetadataError(str(name), f"a serializer name matches {_NAME.pattern}")
    if not isinstance(suffix, str) or not _SUFFIX.fullmatch(suffix):
        raise MetadataError(name, f"suffix {suffix!r} does not match {_SUFFIX.pattern}")
    with _lock:
        if any(existing.name == name for existing in _all()):
            raise MetadataError(name, "a serializer of that name is already registered")
        _registered.insert(0, serializer)


def serializer_for(
    value: object, *, allow_pickle: bool = False, where: str = "value"
) -> Serializer:
    """Return the first serializer that accepts `value`; `where` names it in the error.

    Raises
    ------
    MetadataError
        If none does (or only an unsafe one, and `allow_pickle` is false).
    """
    reasons = []
    for serializer in _all():
        if serializer.unsafe and not allow_pickle:
            continue
        if serializer.accepts(value):
            return serializer
        reason = serializer.explain(value)
        if reason is not None:
            reasons.append(reason)
    reason = reasons[0] if reasons else f"no serializer takes {type(value).__qualname__}"
    hint = "" if allow_pickle else " (pickle is opt-in: allow_pickle=True)"
    raise MetadataError(where, reason + hint)


def serializer_named(name: object, *, allow_pickle: bool = False) -> Serializer:
    """Return the serializer a stored reference names, to load its value.

    `name` comes from stored data, so it may be anything.

    Raises
    ------
    MetadataError
        If no serializer has that name, or it is unsafe and `allow_pickle` is false.
    """
    for serializer in _all():
        if isinstance(name, str) and serializer.name == name:
            if serializer.unsafe and not allow_pickle:
                raise MetadataError(name, "loading a pickle runs its code: allow_pickle=True")
            return serializer
    raise MetadataError(str(name), "no serializer of that name is registered")
