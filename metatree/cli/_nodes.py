"""Commands on nodes and files: init, ls, tree, find, get, put, update, rm."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from metatree.cli._context import Context, parse_assignments
from metatree.cli._output import emit, json_option, note
from metatree.cli._progress import node_counter, progress

if TYPE_CHECKING:
    from metatree import Node
    from metatree.cli._progress import NodeCounter

__all__ = ["register"]

pass_context = click.make_pass_decorator(Context)


@click.command()
@click.argument("keys", nargs=-1, required=True)
@json_option
@pass_context
def init(ctx: Context, keys: tuple[str, ...], as_json: bool) -> None:
    """Create a database at --root with the levels KEYS (e.g. model version)."""
    tree = ctx.create(keys)
    emit(as_json, {"root": tree.root, "keys": list(tree.keys)}, [tree.root])


@click.command(name="ls")
@click.argument("location", default="")
@json_option
@pass_context
def ls(ctx: Context, location: str, as_json: bool) -> None:
    """List the child nodes (ending in /) and files of the node at LOCATION."""
    node = ctx.tree().find(location)
    children = node.children
    files = [name for name in node.list() if name not in children]
    data = {"location": node.location, "children": children, "files": files}
    emit(as_json, data, [*(f"{name}/" for name in children), *files])


def _branch(
    node: Node, depth: int | None, metadata: bool, counter: NodeCounter | None
) -> tuple[dict[str, Any], list[str]]:
    """One node and what is below it, as JSON and as `tree`'s drawing (one read per node)."""
    shown = node.metadata
    if counter is not None:
        counter.step()
    names = [] if node.is_leaf else list(shown.pop("children", []))
    shown.pop("children", None)
    data: dict[str, Any] = {"name": node.name, "children": []}
    if metadata:
        data["metadata"] = shown
    lines: list[str] = []
    if depth is None or depth > 0:
        below = None if depth is None else depth - 1
        for index, name in enumerate(names):
            child, drawn = _branch(node.child(name), below, metadata, counter)
            data["children"].append(child)
            last = index == len(names) - 1
            lines.append(("└── " if last else "├── ") + drawn[0])
            lines.extend(("    " if last else "│   ") + line for line in drawn[1:])
    own = node.name or node.location
    if metadata and shown:
        own += "  " + " ".join(f"{k}={v!r}" for k, v in shown.items())
    return data, [own, *lines]


@click.command()
@click.argument("location", default="")
@click.option("--depth", type=click.IntRange(min=0), help="Levels to show below LOCATION.")
@click.option("--metadata", "-m", is_flag=True, help="Show each node's metadata.")
@json_option
@pass_context
def tree(ctx: Context, location: str, depth: int | None, metadata: bool, as_json: bool) -> None:
    """Draw the nodes at and below LOCATION, like tree(1)."""
    node = ctx.tree().find(location)
    with node_counter(quiet=ctx.quiet) as counter:
        data, lines = _branch(node, depth, metadata, counter)
    data["location"] = node.location
    emit(as_json, data, lines)


@click.command()
@click.argument("location")
@json_option
@pass_context
def find(ctx: Context, location: str, as_json: bool) -> None:
    """Resolve LOCATION (<key> templates too) and print the node's URL."""
    node = ctx.tree().find(location)
    data = {"location": node.location, "path": "/".join(node.path), "key": node.key}
    emit(as_json, data, [node.location])


@click.command()
@click.argument("location")
@click.argument("dest", required=False, type=click.Path(dir_okay=True))
@click.option("--recursive", "-r", is_flag=True, help="LOCATION is a stored directory.")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check against the record.")
@json_option
@pass_context
def get(
    ctx: Context, location: str, dest: str | None, recursive: bool, no_verify: bool, as_json: bool
) -> None:
    """Download the file at LOCATION to DEST (a directory: into it); print the local path."""
    tree = ctx.tree()
    name = location.rstrip("/").rsplit("/", 1)[-1]
    if "<" in name:  # a template's file name: the local file is named as the stored one
        name = tree.url(location).rsplit("/", 1)[-1]
    target = name if dest is None else dest
    if os.path.isdir(target) and dest is not None:
        target = os.path.join(target, name)
    target = os.path.abspath(target)
    callback = progress(name, quiet=ctx.quiet)
    for _ in tree.get(
        location, target, recursive=recursive, verify=not no_verify, callback=callback
    ):
        pass  # the download is done; the iterator would only read the local copy back
    emit(as_json, {"path": target, "location": location}, [target])


@click.command()
@click.argument("location")
@click.argument("src", type=click.Path(exists=True))
@click.option("--name", help="Stored name (default: SRC's own name).")
@click.option("--archive", is_flag=True, help="Store the directory SRC as one .tar.gz.")
@click.option("--force", "-f", is_flag=True, help="Replace a file of the same name.")
@json_option
@pass_context
def put(
    ctx: Context,
    location: str,
    src: str,
    name: str | None,
    archive: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Store the local file or directory SRC in the node at LOCATION; print its URL."""
    tree = ctx.tree()
    recursive = os.path.isdir(src) and not archive
    stored = name or os.path.basename(os.path.normpath(src))
    if archive and not stored.endswith(".tar.gz"):
        stored += ".tar.gz"
    callback = progress(stored, quiet=ctx.quiet)
    tree.put(
        location, src, force=force, recursive=recursive, archive=archive, name=name,
        callback=callback,
    )  # fmt: skip
    node = tree.node
    url = tree.url("/".join((*node.path, stored)))
    data = {"location": node.location, "name": stored, "url": url}
    emit(as_json, data, [url])


@click.command()
@click.argument("location")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--string", "strings", is_flag=True, help="Store every value as text.")
@json_option
@pass_context
def update(
    ctx: Context, location: str, pairs: tuple[str, ...], strings: bool, as_json: bool
) -> None:
    """Merge KEY=VALUE pairs into a node's metadata (values are JSON when they parse)."""
    values = parse_assignments(pairs, "KEY=VALUE", strings=strings)
    node = ctx.tree().find(location)
    node.update(**values)
    emit(as_json, {"location": node.location, "updated": values}, [node.location])


@click.command()
@click.argument("location")
@click.option("--recursive", "-r", is_flag=True, help="Remove a node with everything in it.")
@pass_context
def rm(ctx: Context, location: str, recursive: bool) -> None:
    """Remove the file or node at LOCATION."""
    ctx.tree().remove(location, recursive=recursive)
    note(f"removed {location}", quiet=ctx.quiet)


def register(group: click.Group) -> None:
    """Add this module's commands to the ``metatree`` group."""
    for command in (init, ls, tree, find, get, put, update, rm):
        group.add_command(command)
