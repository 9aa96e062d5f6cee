"""pandas frames and Arrow tables as Parquet, through pyarrow; column types round-trip."""

from __future__ import annotations

import base64
import shutil
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from metatree._metadata import _parse_json, check_value
from metatree._streams import BufferReader
from metatree.errors import CorruptMetadataError, MetadataError, MetatreeError
from metatree.serializers._base import Serializer, _loaded, _require, _source_name

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["ArrowSerializer", "PandasSerializer"]


_SCHEMA_KEY: Final = b"ARROW:schema"
_SERIES_KEY: Final = b"metatree.series"
_SERIES_COLUMN: Final = "__metatree_series__"


def _encode_parquet(table: Any, serializer: str) -> BinaryIO:
    """Return the Parquet file of `table` as a stream over one buffer in Arrow's memory.

    Encoded natively: written through a Python file object, pyarrow ran about 3 times
    slower (a call into Python per write). The buffer is the compressed file, smaller than
    the table it encodes.
    """
    pa = _require("pyarrow", serializer)
    pq = _require("pyarrow.parquet", serializer)
    sink = pa.BufferOutputStream()
    try:
        pq.write_table(table, sink)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise MetadataError(serializer, f"Parquet cannot store this table: {exc}") from None
    return cast("BinaryIO", BufferReader([sink.getvalue()]))


def _read_parquet(source: BinaryIO, serializer: str) -> Any:
    """Read a Parquet stream and cast it back to the Arrow schema that was written.

    Parquet has no ``date64`` or second timestamps: pyarrow reads them as ``date32`` and
    milliseconds, though it stores the original schema in the file. The cast restores it.
    """
    pa = _require("pyarrow", serializer)
    pq = _require("pyarrow.parquet", serializer)
    try:
        file = pq.ParquetFile(_random_access(pa, source))
        table = file.read()
        stored = (file.metadata.metadata or {}).get(_SCHEMA_KEY)
        if stored is not None:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
            if not table.schema.equals(schema):
                table = table.cast(schema)
    except (pa.ArrowException, ValueError, OSError) as exc:  # thrift errors are OSErrors
        if isinstance(exc, MetatreeError):  # the stream's own (IntegrityError, StorageError)
            raise
        raise CorruptMetadataError(_source_name(source), f"not Parquet: {exc}") from None
    return table


def _random_access(pa: Any, source: BinaryIO) -> Any:
    """Return `source` as Parquet's reader wants it: seekable (its footer is at the end).

    A forward-only stream (a download, `metatree._streams.ChunkReader`) is read into memory:
    as the chunks arrive, not into a buffer of the size its record claims (a forged record
    must not allocate what the file does not hold). A seekable one is read where it is.
    """
    if source.seekable():
        return source
    return pa.py_buffer(source.read())


class _ParquetSerializer(Serializer):
    """What the Parquet serializers share: the file is encoded once, into memory (`_encode`)."""

    suffix = ".parquet"
    streams = True

    def dump(self, value: object, out: BinaryIO) -> None:
        with self.source(value) as encoded:
            shutil.copyfileobj(encoded, out)

    def source(self, value: object) -> BinaryIO:
        return self._encode(value)

    def _encode(self, value: object) -> BinaryIO:
        raise NotImplementedError


class PandasSerializer(_ParquetSerializer):
    """DataFrame and Series as Parquet, with pandas' own metadata (index, dtypes) in it.

    A Series is written as a one-column frame, its name kept in the schema metadata.
    """

    name = "pandas"

    def accepts(self, value: object) -> bool:
        pd = _loaded(value, "pandas")
        return pd is not None and type(value) in (pd.DataFrame, pd.Series)

    def _encode(self, value: object) -> BinaryIO:
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
        except (pa.ArrowException, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise MetadataError(self.name, f"Arrow cannot store this frame: {exc}") from None
        if series_name is not None:
            table = table.replace_schema_metadata(
                {**table.schema.metadata, _SERIES_KEY: series_name}
            )
        return _encode_parquet(table, self.name)

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
        except (
            pa.ArrowException,
            ValueError,
            LookupError,
            TypeError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            # pandas follows the metadata stored in the file: hostile metadata fails anywhere
            raise CorruptMetadataError(_source_name(source), f"not a pandas frame: {exc}") from None
        return series


class ArrowSerializer(_ParquetSerializer):
    name = "arrow"

    def accepts(self, value: object) -> bool:
        pa = _loaded(value, "pyarrow")
        return pa is not None and type(value) is pa.Table

    def _encode(self, value: object) -> BinaryIO:
        if not self.accepts(value):
            raise MetadataError(self.name, f"{type(value).__name__} is not a pyarrow.Table")
        return _encode_parquet(value, self.name)

    def load(self, source: BinaryIO) -> object:
        return _read_parquet(source, self.name)
