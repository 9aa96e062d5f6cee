"""numpy arrays as ``.npy``, never pickled, checked against their header before allocating."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, Final, cast

from metatree._streams import BufferReader, stream_size
from metatree.errors import CorruptMetadataError, MetadataError, MetatreeError
from metatree.serializers._base import Serializer, _loaded, _require, _source_name

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["NumpySerializer"]


def _npy_header(np: Any, source: BinaryIO, version: tuple[int, int]) -> Any:
    """Read a ``.npy`` header: (shape, fortran order, dtype); ValueError if malformed."""
    fmt = np.lib.format
    if version == (1, 0):
        return fmt.read_array_header_1_0(source)
    if version == (2, 0):
        return fmt.read_array_header_2_0(source)
    # 3.0 (UTF-8 field names): numpy reads it only in a private function, so be it
    return np.lib._format_impl._read_array_header(source, version)


class NumpySerializer(Serializer):
    """``.npy`` through `numpy.lib.format`, never pickling.

    Only exact ``ndarray`` and ``memmap``: a masked array (a subclass) would lose its mask.
    `load` reads ``.npy`` only: `numpy.load` would also open an ``.npz`` zip, lazily.
    """

    name = "numpy"
    suffix = ".npy"
    streams = True

    def accepts(self, value: object) -> bool:
        np = _loaded(value, "numpy")
        return np is not None and type(value) in (np.ndarray, np.memmap) and not self.explain(value)

    def explain(self, value: object) -> str | None:
        np = _loaded(value, "numpy")
        dtype = getattr(value, "dtype", None)
        if np is None or dtype is None or type(value) not in (np.ndarray, np.memmap):
            return None
        if dtype.hasobject:
            return (
                f"a numpy array of dtype {dtype} holds Python objects (pickle them: allow_pickle)"
            )
        try:
            _header(np, value)
        except MetadataError as exc:
            return exc.reason
        return None

    def dump(self, value: object, out: BinaryIO) -> None:
        if not self.accepts(value):
            reason = self.explain(value) or f"{type(value).__name__} is not a numpy array"
            raise MetadataError(self.name, reason)
        np = _require("numpy", self.name)
        _header(np, value)  # refuses a header no loader would read, before a byte is written
        np.lib.format.write_array(out, value, allow_pickle=False)  # 16 MiB chunks to a non-file

    def source(self, value: object) -> BinaryIO | None:
        """Return the header, then the array's own memory: no copy (None for a strided array)."""
        if not self.accepts(value):
            return None
        np = _require("numpy", self.name)
        array: Any = value
        if array.flags.c_contiguous:
            data = array
        elif array.flags.f_contiguous:  # stored as Fortran order: the transpose's C order
            data = array.T
        else:
            return None  # dump gathers the strided elements in chunks
        header = _header(np, array)
        if header is None:
            return None
        try:
            body = data.reshape(-1).view(np.uint8)
        except (ValueError, TypeError):  # a dtype without bytes to view (itemsize 0)
            return None
        return cast("BinaryIO", BufferReader([header, body]))

    def load(self, source: BinaryIO) -> object:
        np = _require("numpy", self.name)
        where = _source_name(source)
        size = stream_size(source)
        try:
            if size is None or not hasattr(source, "readinto"):
                return np.lib.format.read_array(source, allow_pickle=False)
            return _read_sized(np, source, size, where)
        except (ValueError, EOFError, OverflowError, TypeError) as exc:
            if isinstance(exc, MetatreeError):  # the stream's own (IntegrityError), or ours
                raise
            raise CorruptMetadataError(where, f"not a .npy array: {exc}") from None


MAX_HEADER: Final = 10_000
"""The largest ``.npy`` header `load` parses: numpy's own limit (``ast.literal_eval`` runs on it)."""


def _header(np: Any, array: Any) -> bytes | None:
    """Return the ``.npy`` header `dump` writes for `array` (None: only numpy writes it, 3.0).

    A header over `MAX_HEADER` bytes (a structured dtype of a thousand fields) is refused with
    `MetadataError`: it would store fine and then never load.
    """
    fields = np.lib.format.header_data_from_array_1_0(array)
    for write in (np.lib.format.write_array_header_1_0, np.lib.format.write_array_header_2_0):
        out = io.BytesIO()
        try:
            write(out, fields)
        except ValueError:  # over 64 KiB for 1.0, or field names beyond latin-1
            continue
        header = out.getvalue()
        if len(header) > MAX_HEADER:
            raise MetadataError(
                "numpy",
                f"its .npy header is {len(header)} bytes, over the {MAX_HEADER} numpy loads",
            )
        return header
    return None


def _read_sized(np: Any, source: BinaryIO, size: int, where: str) -> Any:
    """Read a ``.npy`` stream of `size` bytes straight into the array it holds.

    The header must account for every byte after it, checked before the array is allocated
    (a forged shape allocates nothing); the data then goes into the array's own memory.
    """
    version = np.lib.format.read_magic(source)
    shape, fortran, dtype = _npy_header(np, source, version)
    if dtype.hasobject:
        raise CorruptMetadataError(where, f"dtype {dtype} holds Python objects")
    count = math.prod(shape)
    expected = count * dtype.itemsize  # exact: no wrap-around
    held = size - source.tell()
    if held != expected:
        raise CorruptMetadataError(where, f"{held} data bytes, header says {expected}")
    if np.empty(0, dtype=dtype).dtype != dtype:  # numpy makes U0/S0 one wide: memory unread
        raise CorruptMetadataError(where, f"dtype {dtype} holds no bytes per element")
    array = np.empty(count, dtype=dtype)
    if expected:
        _fill(source, memoryview(array.reshape(-1).view(np.uint8)), where)
    if fortran:  # shaped as numpy.lib.format.read_array does
        array.shape = shape[::-1]
        return array.transpose()
    array.shape = shape
    return array


def _fill(source: BinaryIO, out: memoryview, where: str) -> None:
    """Read exactly ``len(out)`` bytes of `source` into `out` (the array's own memory)."""
    readinto: Any = getattr(source, "readinto")  # noqa: B009 - BinaryIO does not declare it
    got = 0
    while got < len(out):
        n = readinto(out[got:])
        if not n:
            raise CorruptMetadataError(where, f"the data ends after {got} of {len(out)} bytes")
        got += n
