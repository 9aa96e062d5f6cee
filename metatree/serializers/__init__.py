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

import re
import threading
from typing import Final

from metatree._streams import stream_size
from metatree.errors import MetadataError
from metatree.serializers._base import Serializer
from metatree.serializers._builtins import BytesSerializer, JsonSerializer, PickleSerializer
from metatree.serializers._numpy import NumpySerializer
from metatree.serializers._parquet import ArrowSerializer, PandasSerializer

__all__ = [
    "Serializer",
    "register_serializer",
    "serializer_for",
    "serializer_named",
    "stream_size",
]

_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SUFFIX: Final = re.compile(r"\.[a-z0-9]{1,16}")

_BUILTINS: Final[tuple[Serializer, ...]] = (
    BytesSerializer(),
    NumpySerializer(),
    PandasSerializer(),
    ArrowSerializer(),
    JsonSerializer(),
    PickleSerializer(),
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

    Examples
    --------
    >>> serializer_for(b"raw").name, serializer_for({"a": [1.5]}).suffix
    ('bytes', '.json')
    >>> serializer_for(float("nan"), where="results.loss")
    Traceback (most recent call last):
    ...
    metatree.errors.MetadataError: cannot store metadata 'results.loss': nan is not a JSON number...
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
