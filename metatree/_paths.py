"""Names and locations: everything here is validated before any I/O happens.

A *location* names a node by one segment per tree level, as ``"model/<active>"`` or as a
dict ``{"model": "m", "version": {"metadata": "active"}}``. A segment is either a literal
name or a ``<key>`` placeholder that resolves to the value of ``key`` in the parent node's
metadata. Resolution needs that metadata, so it happens in the database; this module only
parses and checks what can be checked without reading anything (DESIGN.md invariant 4).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from metatree._names import RESERVED_NAMES, SYSTEM_PREFIX, is_reserved
from metatree.errors import PathError, TemplateSyntaxError, UnresolvedPathError

__all__ = [
    "GLOB",
    "MAX_NAME_BYTES",
    "Literal",
    "Location",
    "LocationLike",
    "Placeholder",
    "Segment",
    "check_location_name",
    "check_name",
    "check_stored_name",
    "is_invisible",
    "is_utf8",
    "parse_file_location",
    "parse_location",
    "plainly_safe",
    "resolve_segment",
]

MAX_NAME_BYTES: Final = 255  # NAME_MAX of ext4/xfs/apfs; longer names fail on local disk
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
"""Characters that would change what a name means as a path, stored or new."""
GLOB = re.compile(r"[\[\]*?]")
"""The characters fsspec expands as patterns in ``rm``, ``find``, ``mv`` and friends."""
_SYNTAX = re.compile(r"[/\\<>*?\[\]\x00-\x1f\x7f]")
"""What a location may never hold: separators, template and glob syntax, C0 controls."""
_FORBIDDEN = re.compile(
    r"[/\\<>*?\[\]:\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
_FORBIDDEN_WHY: Final = {
    "/": "'/' separates levels",
    "\\": "'\\' is a separator on Windows",
    "<": "'<' and '>' are template syntax",
    ">": "'<' and '>' are template syntax",
    "*": "glob characters are expanded by fsspec",
    "?": "glob characters are expanded by fsspec",
    "[": "glob characters are expanded by fsspec",
    "]": "glob characters are expanded by fsspec",
    ":": "':' is not allowed in HDFS names and is a drive separator on Windows",
    "\ufeff": "a byte order mark is invisible",
}
_KEY = re.compile(r"[^<>/\x00-\x1f\x7f]+")


def _refuse(characters: re.Pattern[str], name: str, location: str) -> None:
    """Raise `PathError` naming the first of `characters` in `name`, and why it is refused."""
    bad = characters.search(name)
    if bad:
        char = bad.group()
        raise PathError(location, f"name {name!r} contains {char!r}: {_why(char)}")


def is_invisible(char: str) -> bool:
    """Whether `char` shows as nothing, so that a name holding it looks like one without.

    That is a format character (Cf), another of Unicode's default-ignorable code points
    (combining grapheme joiner, variation selectors, Hangul fillers), or the blank braille
    pattern.
    """
    return unicodedata.category(char) == "Cf" or any(
        low <= ord(char) <= high for low, high in _IGNORABLE
    )


_IGNORABLE: Final = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
"""Default-ignorable code points (Unicode DerivedCoreProperties) that are not Cf."""


def _why(char: str) -> str:
    if char in _FORBIDDEN_WHY:
        return _FORBIDDEN_WHY[char]
    if is_invisible(char):
        return "invisible characters make look-alike names"
    return "control characters are not allowed"


def check_name(name: object, location: str) -> str:
    """Return `name` if it can be a new node or file name, else raise `PathError`.

    New names are held to the portable rules: no separators, template or glob syntax, ``:``,
    control or invisible format characters (bidi overrides, BOM), no leading or trailing
    white space, not reserved in any letter case, at most 255 UTF-8 bytes. `location` is the
    user's whole input, quoted in the error so the user sees where it is.
    """
    name = _check_safe(name, location)
    _refuse(_FORBIDDEN, name, location)
    invisible = next((c for c in name if is_invisible(c)), None)
    if invisible is not None:
        raise PathError(location, f"name {name!r} contains {invisible!r}: {_why(invisible)}")
    if name != name.strip():
        raise PathError(location, f"name {name!r} starts or ends with white space")
    return name


def check_location_name(name: object, location: str) -> str:
    """Return `name` if a location may name it, else raise `PathError`.

    Locations name what exists as well as what a put will create; names that only the portable
    rules of `check_name` refuse (``a:b``, ``" v2"``, stored by metatreedb 0.2.3) can still be
    found, read and removed. The database checks every name it creates with `check_name`.
    """
    name = _check_safe(name, location)
    _refuse(_SYNTAX, name, location)
    return name


def _check_safe(name: object, location: str) -> str:
    """Apply the rules no name may break, however it was written: it stays one level."""
    if not isinstance(name, str):
        raise PathError(location, f"a name must be a str, not {type(name).__name__}")
    if not name:
        raise PathError(location, "empty name (two '/' in a row, or an empty value)")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise PathError(location, "a name must be valid UTF-8 (it has a lone surrogate)") from None
    if name in (".", ".."):
        raise PathError(location, f"{name!r} would leave the node; names are single levels")
    _refuse(_UNSAFE, name, location)
    if "?versionId=" in name:
        raise PathError(location, f"name {name!r}: s3fs reads '?versionId=' as a version")
    if is_reserved(name):
        raise PathError(location, f"{name!r} is reserved by metatree")
    if size > MAX_NAME_BYTES:
        raise PathError(location, f"name longer than {MAX_NAME_BYTES} bytes")
    return name


def plainly_safe(names: list[str]) -> bool:
    """Whether every name of a stored index passes `check_stored_name`, decided in bulk.

    An index of a million children is read on every operation below its node: checking it
    name by name cost 17 times the parse (107 ms against 6 ms at 100 000 children). The
    rules are checked over the whole list at once, with C-level string operations; False
    means only "look closer" (a hit may be a false alarm, as ``.lock`` inside ``x.lock``),
    and the caller then checks name by name.
    """
    joined = "".join(names)
    folded = joined.casefold()
    return not (
        "/" in joined
        or "\\" in joined
        or not joined.isprintable()  # no control character (a false alarm for some others)
        or "?versionId=" in joined
        or any(reserved in folded for reserved in (*RESERVED_NAMES, SYSTEM_PREFIX))
        or "" in names
        or "." in names
        or ".." in names
        or not is_utf8(joined)
        # a name of at most 63 characters fits in 255 UTF-8 bytes (4 bytes at the most each)
        or (
            max(map(len, names), default=0) > 63
            and any(len(n.encode("utf-8")) > MAX_NAME_BYTES for n in names if len(n) > 63)
        )
    )


def is_utf8(text: str) -> bool:
    """Whether `text` encodes to UTF-8 (no lone surrogates), as JSON and paths need."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_stored_name(name: object, where: str) -> str:
    """Check a name read from storage (an index entry written by anyone) before it is a path.

    Stored names get the safety rules only (one level, not reserved): a tree written by
    metatreedb 0.2.3 may hold names the portable rules refuse today (``a:b``, ``" x"``), and
    they must stay readable. Raises `PathError`; callers turn it into `CorruptMetadataError`.
    """
    return _check_safe(name, where)


@dataclass(frozen=True, slots=True)
class Literal:
    """A segment naming a child directly."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A ``<key>`` segment: the child named by ``key`` in the parent node's metadata."""

    key: str

    def __str__(self) -> str:
        return f"<{self.key}>"


Segment: TypeAlias = Literal | Placeholder
Location: TypeAlias = tuple[Segment, ...]
SegmentSpec: TypeAlias = str | Mapping[str, str]
LocationLike: TypeAlias = str | Mapping[str, SegmentSpec]


def _parse_segment(text: str, location: str) -> Segment:
    if text.startswith("<") and text.endswith(">") and len(text) > 1:
        key = text[1:-1]
        if not _KEY.fullmatch(key):
            raise TemplateSyntaxError(location, f"{text!r} is not a <key> placeholder")
        return Placeholder(key)
    if "<" in text or ">" in text:
        raise TemplateSyntaxError(
            location, f"unmatched '<' or '>' in {text!r}: a placeholder is a whole segment"
        )
    return Literal(check_location_name(text, location))


def _split(location: str) -> list[str]:
    if "\x00" in location:
        raise PathError(location, "NUL character")
    if location.startswith("/"):
        raise PathError(location, "absolute locations are refused: locations are relative")
    stripped = location.rstrip("/")
    return stripped.split("/") if stripped else []


def _parse_dict(location: Mapping[str, object], keys: tuple[str, ...]) -> Location:
    shown = repr(dict(location))
    unknown = [k for k in location if k not in keys]
    if unknown:
        raise PathError(shown, f"unknown level(s) {unknown}; the levels are {list(keys)}")
    segments: list[Segment] = []
    for level in keys[: len(location)]:
        if level not in location:
            raise PathError(shown, f"level {level!r} is missing before a deeper level")
        spec = location[level]
        if isinstance(spec, str):
            segments.append(Literal(check_location_name(spec, shown)))
        elif isinstance(spec, Mapping) and len(spec) == 1 and "value" in spec:
            segments.append(Literal(check_location_name(spec["value"], shown)))
        elif isinstance(spec, Mapping) and len(spec) == 1 and "metadata" in spec:
            key = spec["metadata"]
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise TemplateSyntaxError(shown, f"bad metadata key {key!r} for {level!r}")
            segments.append(Placeholder(key))
        else:
            raise PathError(
                shown,
                f"level {level!r} must be a name, {{'value': name}} or {{'metadata': key}}, "
                f"not {spec!r}",
            )
    return tuple(segments)


def parse_location(location: object, keys: tuple[str, ...]) -> Location:
    """Parse a node location; at most one segment per level of `keys`.

    Examples
    --------
    >>> parse_location("m/<active>", ("model", "version"))
    (Literal(name='m'), Placeholder(key='active'))
    >>> parse_location({"model": "m", "version": {"metadata": "active"}}, ("model", "version"))
    (Literal(name='m'), Placeholder(key='active'))
    """
    if isinstance(location, Mapping):
        return _parse_dict(location, keys)
    if not isinstance(location, str):
        raise PathError(repr(location), f"a location is a str or a dict, not {type(location)}")
    parts = _split(location)
    if len(parts) > len(keys):
        raise PathError(
            location, f"{len(parts)} levels, but the tree has {len(keys)}: {list(keys)}"
        )
    return tuple(_parse_segment(part, location) for part in parts)


def parse_file_location(location: object, keys: tuple[str, ...]) -> tuple[Location, Segment]:
    """Split ``"node/location/file"`` into the node's location and the file segment.

    Examples
    --------
    >>> parse_file_location("m/<active>/<model_file>", ("model", "version"))
    ((Literal(name='m'), Placeholder(key='active')), Placeholder(key='model_file'))
    """
    if not isinstance(location, str):
        raise PathError(repr(location), "a file location is a str like 'node/.../file'")
    parts = _split(location)
    if not parts:
        raise PathError(location, "no file name: a file location ends with the file's name")
    if len(parts) > len(keys) + 1:
        raise PathError(
            location, f"{len(parts) - 1} node levels, but the tree has {len(keys)}: {list(keys)}"
        )
    *node, last = (_parse_segment(part, location) for part in parts)
    return tuple(node), last


def resolve_segment(
    segment: Segment, metadata: Mapping[str, object], location: str, owner: str = "the parent"
) -> str:
    """Return the child name `segment` stands for, given the metadata of `owner`.

    `owner` names the node whose metadata is read (the parent for a node segment, the node
    itself for a file segment), so an error says where the key is missing.
    """
    if isinstance(segment, Literal):
        return segment.name
    if segment.key not in metadata or segment.key.startswith(SYSTEM_PREFIX):
        # metatree's own keys (the file records) are not the user's to name a node with
        keys = sorted(k for k in metadata if k != "children" and not k.startswith(SYSTEM_PREFIX))
        raise UnresolvedPathError(
            location, f"{segment} is not a key of the metadata of {owner} (its keys: {keys})"
        )
    value = metadata[segment.key]
    if not isinstance(value, str):
        raise UnresolvedPathError(
            location,
            f"{segment} is {_short(value)} in the metadata of {owner}, not a name (str)",
        )
    try:
        return check_location_name(value, location)
    except PathError as exc:
        raise UnresolvedPathError(
            location, f"{segment} resolves to {_short(value)} in {owner}: {exc.reason}"
        ) from None


def _short(value: object, limit: int = 80) -> str:
    """Return the repr of a stored value for a message, cut to `limit` characters."""
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}..."
