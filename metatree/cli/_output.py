"""Output and exit codes: data on stdout (text or one JSON document), people on stderr.

Scripts read stdout and the exit code; everything meant for a person (errors, progress,
notes) goes to stderr, so ``metatree ls --json | jq`` never sees a message. The exit code of an
error is its class's ``exit_code`` (metatree/errors.py keeps the table: 0 ok, 1 other, 2 usage,
3 not found, 4 conflict or lock, 5 corrupt or integrity); click's own usage errors exit 2.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "EXIT_DAMAGE",
    "Failure",
    "emit",
    "failure_of",
    "json_option",
    "note",
    "printable",
    "stderr_is_terminal",
]

F = TypeVar("F", bound="Callable[..., Any]")

EXIT_DAMAGE = 5
"""Exit code of a check (verify, fsck) that found damage: the code of `IntegrityError`."""


class Failure(click.ClickException):
    """An error that ends a command: its message on stderr, its class's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar; one instance attribute per error is simpler
        # than a subclass per code
        setattr(self, "exit_code", exit_code)  # noqa: B010


def failure_of(error: Exception) -> Failure:
    """Turn an exception a command raised into its `Failure` (message and exit code).

    A `MetatreeError` carries its exit code; any other exception is 1 ("other"), named by
    its type because its message alone (``[Errno 13] ...``) may not say what failed.
    """
    from metatree.errors import MetatreeError

    if isinstance(error, MetatreeError):
        return Failure(f"{type(error).__name__}: {error}", type(error).exit_code)
    if isinstance(error, ImportError):
        return Failure(f"{error} (install the extra this command needs)", 1)
    return Failure(f"{type(error).__name__}: {error}", 1)


def json_option(command: F) -> F:
    """Add ``--json`` to a command that prints data: one JSON document on stdout."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document (keys documented in docs/cli.md).",
    )(command)


def emit(as_json: bool, data: Any, lines: Iterable[str]) -> None:
    """Print `data` as one JSON document, or `lines` as text, on stdout.

    Text lines hold stored names and keys, which anyone with write access to the tree
    chose: control characters in them are shown escaped (`printable`), so a name cannot
    forge a line of output or drive the terminal.
    """
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(printable(line))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Return `text` with every control character (newline, ESC, ...) escaped as its hex code."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def note(message: str, *, quiet: bool = False) -> None:
    """Tell the person at the terminal something (stderr); nothing with ``-q``."""
    if not quiet:
        click.echo(message, err=True)


def stderr_is_terminal() -> bool:
    """Whether a person watches stderr (progress bars are drawn only then)."""
    return sys.stderr.isatty()
