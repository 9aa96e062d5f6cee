"""metadata.json and .metatree: parsing, validation and serialisation with orjson.

A node's metadata is a JSON object whose ``children`` key is the node's index (names of child
nodes, insertion order, no duplicates) and whose other keys are free user metadata. Values keep
their JSON types (metatreedb 0.2.3 turned every value into a str).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from metatree._paths import check_stored_name, is_utf8, plainly_safe
from metatree.errors import CorruptMetadataError, DatabaseError, MetadataError, PathError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CHILDREN",
    "FORMAT_VERSION",
    "REF_KEY",
    "Config",
    "check_metadata_update",
    "check_names",
    "check_value",
    "dump_metadata",
    "is_reference",
    "load_metadata",
]

CHILDREN: Final = "children"
RESERVED_KEY_PREFIX: Final = ".metatree"
REF_KEY: Final = ".metatree.ref"
"""Marks a metadata value that references files of its node (metatree/datastore.py)."""
"""Metadata keys of metatree's own (file records: ``.metatree.records``), refused in updates."""
FORMAT_VERSION: Final = 1
MAX_DEPTH: Final = 100
"""Nesting limit of metadata, written (`check_metadata_update`) or stored (`load_metadata`)."""
_MAX_INT: Final = 2**63  # orjson stores 64-bit integers; larger ones would not round-trip


def check_value(value: object, where: str, depth: int = 0) -> None:
    """Refuse what would not round-trip through JSON with the same type and value."""
    if depth > MAX_DEPTH:
        raise MetadataError(where, f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str) and not is_utf8(value):
            raise MetadataError(where, "str with lone surrogates is not valid JSON")
        return
    if isinstance(value, int):
        if not -_MAX_INT <= value < 2**64:
            raise MetadataError(where, f"integer {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MetadataError(where, f"{value!r} is not a JSON number")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_value(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not is_utf8(key):
                raise MetadataError(where, f"dict key {key!r} is not a valid str")
            check_value(item, f"{where}.{key}", depth + 1)
        return
    hint = " (use a list)" if isinstance(value, tuple) else ""
    raise MetadataError(where, f"{type(value).__name__} is not a JSON type{hint}")


def is_reference(value: object) -> bool:
    """Whether a metadata value is a stored reference to files (a DataStore, an ArchiveStore)."""
    return isinstance(value, dict) and REF_KEY in value


def check_metadata_update(metadata: Mapping[str, object]) -> dict[str, Any]:
    """Validate user metadata for `update` and return it as a plain dict.

    Examples
    --------
    >>> check_metadata_update({"active": "v2", "score": 0.9})
    {'active': 'v2', 'score': 0.9}
    >>> check_metadata_update({})
    {}
    >>> check_metadata_update({"children": []})
    Traceback (most recent call last):
    ...
    metatree.errors.MetadataError: cannot store metadata 'children': ...
    """
    for key, value in metadata.items():
        raw: object = key  # update(**{1: 2}) is refused by Python, a Mapping argument is not
        if not isinstance(raw, str) or not key or not is_utf8(key):
            raise MetadataError(str(key), "keys are non-empty, valid UTF-8 str")
        if key == CHILDREN:
            raise MetadataError(key, "the children index is maintained by metatree")
        if key.startswith(RESERVED_KEY_PREFIX):
            raise MetadataError(key, "keys starting with '.metatree' are metatree's own")
        if is_reference(value):  # only metatree writes references: a forged one would read files
            raise MetadataError(key, f"a dict with the key {REF_KEY!r} is metatree's own")
        check_value(value, key)
    return dict(metadata)


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def copy_json(value: Any) -> Any:
    """Copy a JSON value: new dicts and lists, the same (immutable) scalars.

    A file record and its provenance nest four levels deep: `copy.deepcopy`, with its memo
    and per-type dispatch, took a tenth of a bulk load's put. Anything that is not JSON is
    left to it.
    """
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _SCALARS else copy_json(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else copy_json(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


def _parse_json(data: bytes) -> Any:
    """Parse JSON as metadata is parsed (`_parse_exact`), for the serialisers."""
    return _parse_exact(data)[0]


def _parse_exact(data: bytes) -> tuple[Any, bool]:
    """Parse with orjson; a document that may hold integers beyond 64 bits, exactly.

    orjson reads an integer beyond 64 bits as a float, so a hand-written ``2**70`` would come
    back changed on the next write. Only a document with a float that large can hold one: it
    is parsed again by `json`, which keeps integers exact (and refuses NaN and Infinity, as
    orjson does). Raises `_TooDeep` for nesting deeper than `MAX_DEPTH`. Returns the value
    and whether `json` parsed it.
    """
    parsed = orjson.loads(data)
    if not _walk_shape(parsed):
        return parsed, False
    return _reparse(data), True  # depth checked by the walk


def _reparse(data: bytes) -> Any:
    return json.loads(data, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _TooDeep(ValueError):
    """Metadata nested deeper than `MAX_DEPTH`."""


def _walk_shape(value: Any) -> bool:
    """Check the nesting (`_TooDeep`); return whether a float might be a big integer.

    Iterative (no recursion limit); a container of scalars only (the children index above
    all) is passed over with one C-level pass over its item types, not a Python loop.
    """
    if type(value) is float:  # a document that is one number
        return abs(value) >= _MAX_INT
    big = False
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(item, dict | list):
            continue
        values = list(item.values()) if isinstance(item, dict) else item
        types = set(map(type, values))
        if float in types:
            big = big or any(type(v) is float and abs(v) >= _MAX_INT for v in values)
        if types <= _SCALARS:
            continue
        stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))
    return big


def check_names(value: object, where: str, what: str, entry_is: str) -> list[str]:
    """Check a stored list of child names (an index, a v2 log's): each stays one level down.

    Anything else is `CorruptMetadataError` naming `what`, or the entry as `entry_is` (fsck
    tells an inline index entry from a logged name by it).
    """
    if not isinstance(value, list) or not set(map(type, value)) <= {str}:
        raise CorruptMetadataError(where, f"{what} is not a list of names")
    if not plainly_safe(value):
        for entry in value:
            try:
                check_stored_name(entry, where)
            except PathError as exc:
                raise CorruptMetadataError(where, f"{entry_is} {entry!r}: {exc.reason}") from None
    return value


def load_metadata(data: bytes, path: str, entry_is: str = "index entry") -> dict[str, Any]:
    """Parse a metadata.json; anything but an object with a valid index is corrupt.

    The index is input like any argument (another client, metatreedb 0.2.3 or an attacker may
    have written it): every entry must be a name that stays one level below the node and is
    not reserved, or the node is corrupt (`CorruptMetadataError` naming the entry as
    `entry_is`: a v2 log's snapshot or piece says "logged name", so that fsck does not take
    it for an inline entry its plain repair could drop). Repeated entries are dropped,
    keeping the first: harmless, and metatreedb could write them.
    """
    return _load(data, path, entry_is)[0]


def _load(data: bytes, path: str, entry_is: str) -> tuple[dict[str, Any], bool]:
    """`load_metadata`, also telling whether `json` parsed it (integers beyond 64 bits)."""
    try:
        parsed, exact = _parse_exact(data)
    except _TooDeep as exc:
        raise CorruptMetadataError(path, str(exc)) from None
    except (orjson.JSONDecodeError, ValueError) as exc:
        reason = "empty file" if not data.strip() else f"invalid JSON ({exc})"
        raise CorruptMetadataError(path, reason) from None
    if not isinstance(parsed, dict):
        raise CorruptMetadataError(path, f"a JSON object was expected, not {type(parsed).__name__}")
    children = check_names(parsed.get(CHILDREN, []), path, "'children'", entry_is)
    if len(set(children)) != len(children):
        parsed[CHILDREN] = list(dict.fromkeys(children))
    return parsed, exact


def dump_metadata(metadata: Mapping[str, Any]) -> bytes:
    """Serialise metadata, ``children`` first as metatreedb writes it.

    An integer beyond 64 bits can only come from a stored file (`check_metadata_update`
    refuses new ones); orjson cannot write it, so such a document is written by `json`.
    """
    ordered = dict(metadata)
    if CHILDREN in metadata:
        ordered = {CHILDREN: metadata[CHILDREN]}
        ordered.update((k, v) for k, v in metadata.items() if k != CHILDREN)
    try:
        return orjson.dumps(ordered)
    except TypeError:
        text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Config:
    """The database's ``.metatree`` file."""

    keys: tuple[str, ...]
    """The tree's levels, outermost first."""
    locking_enabled: bool = True
    """Whether writers take the DB lock (metatreedb's switch, kept)."""
    format: int = FORMAT_VERSION
    """On-disk format version; metatreedb's trees have none and read as 1."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys we do not know, kept so that rewriting the config never drops them."""

    @classmethod
    def from_bytes(cls, data: bytes, root: str) -> Config:
        """Parse and validate a ``.metatree`` file."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise DatabaseError(root, ".metatree is not valid JSON") from None
        if not isinstance(raw, dict):
            raise DatabaseError(root, ".metatree is not a JSON object")
        keys = raw.get("keys")
        if not isinstance(keys, list):
            raise DatabaseError(root, f".metatree has no valid 'keys' list: {keys!r}")
        try:
            check_keys(keys, root)
        except DatabaseError as exc:
            raise DatabaseError(root, f".metatree is invalid: {exc.reason}") from None
        locking = raw.get("locking_enabled", True)
        if not isinstance(locking, bool):
            raise DatabaseError(root, f".metatree: locking_enabled is {locking!r}, not a bool")
        version = raw.get("format", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise DatabaseError(root, f"format {version!r} is not supported (this is v1)")
        known = {"keys", "locking_enabled", "format"}
        extra = {k: v for k, v in raw.items() if k not in known}
        return cls(tuple(keys), locking, FORMAT_VERSION, extra)

    def to_bytes(self) -> bytes:
        """Serialise, with the keys metatreedb reads first."""
        return orjson.dumps(
            {
                "keys": list(self.keys),
                "locking_enabled": self.locking_enabled,
                "format": self.format,
                **self.extra,
            }
        )


def check_keys(keys: object, root: str) -> tuple[str, ...]:
    """Validate the tree's levels given by the user."""
    if isinstance(keys, str) or not isinstance(keys, (tuple, list)):
        raise DatabaseError(root, f"keys must be a tuple of level names, not {keys!r}")
    if not keys:
        raise DatabaseError(root, "keys must name at least one level")
    if not all(isinstance(k, str) and k for k in keys):
        raise DatabaseError(root, f"every key must be a non-empty str: {keys!r}")
    if len(set(keys)) != len(keys):
        raise DatabaseError(root, f"keys must be distinct: {keys!r}")
    return tuple(keys)
