"""The serializers that need no optional package: bytes, JSON and (opt-in) pickle."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, cast

import orjson

from metatree._metadata import _parse_json, check_value
from metatree._streams import BufferReader
from metatree.errors import CorruptMetadataError, MetadataError, MetatreeError
from metatree.serializers._base import Serializer, _source_name

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["BytesSerializer", "JsonSerializer", "PickleSerializer"]


class BytesSerializer(Serializer):
    name = "bytes"
    suffix = ".bin"
    streams = True

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

    def source(self, value: object) -> BinaryIO | None:
        return (
            cast("BinaryIO", BufferReader([cast("bytes", value)])) if self.accepts(value) else None
        )

    def load(self, source: BinaryIO) -> object:
        return source.read()


class JsonSerializer(Serializer):
    name = "json"
    suffix = ".json"
    streams = True

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
        data = source.read()  # outside: the stream's own errors are not the format's
        try:
            return _parse_json(data)
        except ValueError as exc:  # orjson.JSONDecodeError, too deep
            raise CorruptMetadataError(_source_name(source), f"not JSON: {exc}") from None


class PickleSerializer(Serializer):
    """Anything picklable. Loading runs code from the stream: never from an untrusted tree."""

    name = "pickle"
    suffix = ".pkl"
    streams = True
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
        except Exception as exc:
            if isinstance(exc, MetatreeError):  # the stream's own (IntegrityError, StorageError)
                raise
            raise CorruptMetadataError(_source_name(source), f"not a pickle: {exc}") from None
