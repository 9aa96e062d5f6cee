"""The ``metatree`` click group: shared options, error handling, the command modules.

Only click is imported at start; metatree's modules load when a command runs (measured in
docs/cli.md), so ``metatree --help`` and shell completion stay fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import click

from metatree.cli import _admin, _models, _nodes, _query
from metatree.cli._context import Context, parse_assignments
from metatree.cli._output import failure_of

__all__ = ["cli", "main"]


class _Group(click.Group):
    """A group that turns any error of a command into its message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None
        except BrokenPipeError:
            _stdout_gone()
            raise click.exceptions.Exit(PIPE_CLOSED) from None
        except Exception as error:
            raise failure_of(error) from error


INTERRUPTED = 130
"""Exit code after Ctrl-C: the shell's (128 + SIGINT), not 1, so a script can tell."""

PIPE_CLOSED = 141
"""Exit code when the reader of stdout went away (``| head -1``): the shell's 128 + SIGPIPE."""


def _stdout_gone() -> None:
    """Point stdout at /dev/null: the interpreter's final flush must not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root", "-r", envvar="METATREE_URL", metavar="URL",
    help="The database: a path or fsspec URL (env METATREE_URL).",
)  # fmt: skip
@click.option(
    "-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
    help="A storage option for fsspec (repeatable; values are JSON when they parse).",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes on stderr.")
@click.version_option(package_name="metatree")
@click.pass_context
def cli(ctx: click.Context, root: str | None, options: tuple[str, ...], quiet: bool) -> None:
    """Operate a metatree database from the shell (docs/cli.md).

    Data goes to stdout (--json: one JSON document), messages to stderr. Exit codes: 0 ok,
    1 other, 2 usage, 3 not found, 4 conflict or lock, 5 corrupt or integrity.
    """
    ctx.obj = Context(root, parse_assignments(options, "-o"), quiet)


for _module in (_nodes, _query, _admin, _models):
    _module.register(cli)


def main() -> None:
    """Run the command line (the ``metatree`` console script)."""
    try:
        cli(prog_name="metatree")
    except BrokenPipeError:  # while click wrote its own output (help, usage)
        _stdout_gone()
        sys.exit(PIPE_CLOSED)
