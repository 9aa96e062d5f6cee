"""The options every command shares: the database URL, storage options, ``-q``.

The tree is opened only when a command asks for it (`Context.tree`), so ``--help`` and usage
errors never touch storage or import a backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from metatree.cli._options import check_options

if TYPE_CHECKING:
    from collections.abc import Iterable

    from metatree import Metatree

__all__ = ["Context", "parse_assignments", "parse_value"]


def parse_value(text: str) -> Any:
    """Parse a command-line value: its JSON value when it parses, else the text.

    ``3`` is an int, ``true`` a bool, ``'"3"'`` the string ``3``, ``v1`` the string ``v1``.
    ``NaN`` and ``Infinity`` are not JSON (Python's parser takes them): they stay text, as
    does a value with spaces around it (``' 1 '``: what was typed is what is stored).
    """
    if text != text.strip():
        return text
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_assignments(pairs: Iterable[str], what: str, *, strings: bool = False) -> dict[str, Any]:
    """Parse ``key=value`` arguments (values as in `parse_value`, or text with `strings`).

    A pair without ``=`` or with an empty key is a usage error (exit 2), named.
    """
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=what)
        parsed[key] = value if strings else parse_value(value)
    return parsed


@dataclass
class Context:
    """What the group's options chose, handed to every command (``click.pass_obj``)."""

    root: str | None
    """The database URL (``--root`` or ``METATREE_URL``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Storage options for fsspec (``-o key=value``)."""
    quiet: bool = False
    """``-q``: no progress bars, no notes."""
    _tree: Metatree | None = None

    def require_root(self) -> str:
        """Return the database URL, or raise a usage error saying how to give it."""
        if not self.root:
            raise click.UsageError("no database: pass --root URL or set METATREE_URL")
        return self.root

    def tree(self) -> Metatree:
        """Open the existing database (never creates one: a typo must not make a tree)."""
        if self._tree is None:
            from metatree import Metatree

            root = self.require_root()
            check_options(root, self.options)
            self._tree = Metatree(root, None, create=False, **self.options)
        return self._tree

    def create(self, keys: tuple[str, ...]) -> Metatree:
        """Create the database with `keys`; `AlreadyExistsError` if one is there."""
        from metatree import Metatree
        from metatree.errors import AlreadyExistsError, CorruptDatabaseError, DatabaseError

        root = self.require_root()
        check_options(root, self.options)
        try:
            Metatree(root, None, create=False, **self.options)
        except CorruptDatabaseError:
            raise  # a damaged database is there: never a new one over it
        except DatabaseError:
            return Metatree(root, keys, create=True, **self.options)
        raise AlreadyExistsError(root, "a database is there already: use it with --root")
