"""The type aliases shared across modules, each defined once."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import os
    from typing import IO

__all__ = ["NodePath", "Source", "Version"]

NodePath: TypeAlias = tuple[str, ...]
"""A node's place in the tree: one name per level below the root (``()`` is the root)."""

Source: TypeAlias = "str | os.PathLike[str] | bytes | IO[bytes]"
"""What `put` stores: a local path, bytes, or a binary stream."""

Version: TypeAlias = "object | None"
"""Opaque version of a stored file (an ETag on S3, the body where contents are compared);
None where a backend cannot write conditionally."""
