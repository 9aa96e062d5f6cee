"""Commands over many nodes: search and catalog export (docs/catalog.md).

``--where`` takes ``KEY=VALUE`` (equality) or ``KEY=OP:VALUE``; the text before the first
``:`` is an operator only when it is one of `OPERATORS`, so ``url=http://x`` stays equality on
the whole text. Values are JSON when they parse (``acc=gt:0.9`` compares with a float).
"""

from __future__ import annotations

from typing import Any, Final

import click

from metatree.cli._context import Context, parse_value
from metatree.cli._output import emit, json_option, note

__all__ = ["OPERATORS", "parse_where", "register"]

OPERATORS: Final = {
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "in": "in",
    "not_in": "not in",
    "is_null": "is_null",
    "not_null": "not_null",
    "starts_with": "starts_with",
}
"""Operator words of ``--where`` (shell-safe) -> the operators of `Metatree.search`."""

_NO_OPERAND: Final = {"is_null", "not_null"}

pass_context = click.make_pass_decorator(Context)


def parse_where(conditions: tuple[str, ...]) -> dict[str, Any]:
    """Turn ``--where`` texts into `Metatree.search`'s dict filter (all must hold).

    >>> parse_where(("framework=torch", "acc=gt:0.9", 'tag=in:["a"]', "note=is_null:"))
    {'framework': 'torch', 'acc': ('>', 0.9), 'tag': ('in', ['a']), 'note': ('is_null',)}
    """
    parsed: dict[str, Any] = {}
    for text in conditions:
        key, sep, rest = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{text!r} is not KEY=VALUE or KEY=OP:VALUE", param_hint="--where"
            )
        if key in parsed:
            raise click.BadParameter(f"{key!r} is given twice", param_hint="--where")
        word, colon, operand = rest.partition(":")
        if colon and word in OPERATORS:
            op = OPERATORS[word]
            if op in _NO_OPERAND:
                if operand:
                    raise click.BadParameter(
                        f"{word} takes no value: {text!r}", param_hint="--where"
                    )
                parsed[key] = (op,)
            else:
                parsed[key] = (op, parse_value(operand))
        else:
            parsed[key] = parse_value(rest)
    return parsed


@click.command()
@click.option("--where", "-w", "where", multiple=True, metavar="KEY=[OP:]VALUE",
              help="A condition (repeatable; all must hold). OP: " + ", ".join(OPERATORS))  # fmt: skip
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
    conditions = parse_where(where)
    level: int | str | None = int(depth) if depth is not None and depth.isdigit() else depth
    found = ctx.tree().search(
        conditions or None, under, level, on_error="skip" if skip_errors else "raise"
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
    written = ctx.tree().export_catalog(url, partition_by, under=under)
    emit(as_json, {"url": written}, [written])


def register(group: click.Group) -> None:
    """Add this module's commands to the ``metatree`` group."""
    group.add_command(search)
    group.add_command(catalog)
