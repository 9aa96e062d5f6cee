"""numpy arrays as ``.npy``, never pickled, checked against their header before allocating."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from metatree.errors import CorruptMetadataError, MetadataError
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
