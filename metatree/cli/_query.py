"""Commands over many nodes: search and catalog export (docs/catalog.md).

``--where`` takes ``KEY=VALUE``, ``KEY=OP:VALUE`` or a free expression (metatree/cli/_where.py).
"""

from __future__ import annotations

import click

from metatree.cli._context import Context
from metatree.cli._output import emit, json_option, note
from metatree.cli._progress import node_counter
from metatree.cli._where import OPERATORS, parse_where

__all__ = ["OPERATORS", "parse_where", "register"]

pass_context = click.make_pass_decorator(Context)


@click.command()
@click.option("--where", "-w", "where", multiple=True, metavar="EXPR|KEY=[OP:]VALUE",
              help="A condition (repeatable; all must hold): an expression such as "
              "\"acc > 0.9 and fw == 'torch'\", or KEY=OP:VALUE with OP one of "
              + ", ".join(OPERATORS))  # fmt: skip
@click.option("--under", default="", help="Scan only below this pattern (globs, <key>).")
@click.option("--depth", help="Keep one level: its number or key name.")
@click.option("--skip-errors", is_flag=True, help="Leave out nodes that cannot be read.")
@json_option
@pass_context
def search(
    ctx: Context,
    where: tuple[str, ...],
    under: str,
    depth: str | None,
    skip_errors: bool,
    as_json: bool,
) -> None:
    """Print the paths of the nodes whose metadata meets every --where condition."""
    conditions = parse_where(where)  # refused before the tree is opened
    level: int | str | None = int(depth) if depth is not None and depth.isdigit() else depth
    tree = ctx.tree()
    with node_counter(quiet=ctx.quiet) as counter:
        found = tree.search(
            conditions,
            under,
            level,
            on_error="skip" if skip_errors else "raise",
            progress=counter,
        )
    skipped = [{"location": s.location, "error": str(s.error)} for s in found.skipped]
    for entry in skipped:
        note(f"skipped {entry['location']}: {entry['error']}", quiet=ctx.quiet)
    emit(as_json, {"paths": found.paths, "skipped": skipped}, found.paths)


@click.group()
def catalog() -> None:
    """Export the catalog: every node's metadata as one table."""


@catalog.command(name="export")
@click.argument("url")
@click.option("--partition-by", help="Partition the Parquet dataset by this key level.")
@click.option("--under", default="", help="Export only below this pattern.")
@json_option
@pass_context
def export(ctx: Context, url: str, partition_by: str | None, under: str, as_json: bool) -> None:
    """Write the catalog as a Parquet dataset at URL (absent or empty); print URL."""
    tree = ctx.tree()
    with node_counter(quiet=ctx.quiet) as counter:
        written = tree.export_catalog(url, partition_by, under=under, progress=counter)
    emit(as_json, {"url": written}, [written])


def register(group: click.Group) -> None:
    """Add this module's commands to the ``metatree`` group."""
    group.add_command(search)
    group.add_command(catalog)
