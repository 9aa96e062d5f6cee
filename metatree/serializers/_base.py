"""The `Serializer` base class and the helpers its built-ins share (lazy optional imports)."""

from __future__ import annotations

import importlib
import sys
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from metatree.errors import MetadataError

if TYPE_CHECKING:
    from types import ModuleType
    from typing import BinaryIO

__all__ = ["Serializer"]


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
    streams: ClassVar[bool] = False
    """Whether `load` reads its stream front to back, never seeking: then it is given the
    stored file as it downloads (checked as it passes). False, the default, gives it a local,
    seekable copy checked whole before `load` starts (``torch.load`` and ``zipfile`` seek)."""

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
        """Read a value written by `dump`; `CorruptMetadataError` if the stream is not one.

        With `streams` set, the data store gives a forward-only stream of the stored file as
        it downloads (not seekable); `metatree.serializers.stream_size` tells its size in
        advance, which is the file's recorded size. Its bytes are checked against the record
        as they pass, the last check when its end is read: read no further than the value
        needs, the caller reads the rest (bytes left after the value are
        `CorruptMetadataError`). Without it, a seekable local copy, already checked.
        """

    def source(self, value: object) -> BinaryIO | None:
        """Return a readable, seekable stream of exactly what `dump` writes, or None.

        For values whose serialized bytes already exist in memory (an array's buffer): the
        put then streams them from the value itself, with no temporary copy. None (the
        default) makes the caller `dump` into a temporary file first.
        """
        return None

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
