"""Commands for operators: verify, fsck, gc, lock status/break, doctor, reindex."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import click

from metatree.cli._context import Context
from metatree.cli._output import EXIT_DAMAGE, Failure, emit, json_option, note
from metatree.cli._progress import node_counter
from metatree.errors import MetatreeError

if TYPE_CHECKING:
    from metatree._locking._info import LeaseInfo

__all__ = ["register"]

pass_context = click.make_pass_decorator(Context)

_DISTRIBUTIONS = ("metatree", "fsspec", "s3fs", "pyarrow", "click")
"""Versions doctor reports; read from the installed metadata, never by importing them."""


@click.command()
@click.argument("location", default="")
@click.option("--no-recursive", is_flag=True, help="Only the node's own files.")
@json_option
@pass_context
def verify(ctx: Context, location: str, no_recursive: bool, as_json: bool) -> None:
    """Check stored files against their sha256 records; exit 5 when any differs."""
    tree = ctx.tree()
    with node_counter(quiet=ctx.quiet) as counter:
        report = tree.verify(location, recursive=not no_recursive, progress=counter)
    data: dict[str, Any] = {**dataclasses.asdict(report), "clean": report.clean}
    lines = [
        f"{kind} {where}"
        for kind in ("mismatched", "missing", "unexpected")
        for where in getattr(report, kind)
    ]
    emit(as_json, data, lines)
    note(f"{len(report.ok)} ok, {len(lines)} damaged", quiet=ctx.quiet)
    if not report.clean:
        raise Failure(f"verify found {len(lines)} damaged file(s)", EXIT_DAMAGE)


def _holder(info: LeaseInfo | None) -> dict[str, Any] | None:
    return None if info is None else dataclasses.asdict(info)


@click.group()
def lock() -> None:
    """Inspect the DB lock, or break a dead holder's lock."""


@lock.command()
@json_option
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Print who holds the DB lock ("free" when nobody does)."""
    info = ctx.tree().lock_status()
    data = {"locked": info is not None, "holder": _holder(info)}
    emit(as_json, data, ["free" if info is None else info.describe()])


@lock.command(name="break")
@click.option("--force", is_flag=True, help="Break a live holder's lease too (S3, WebHDFS).")
@json_option
@pass_context
def break_(ctx: Context, force: bool, as_json: bool) -> None:
    """Remove a dead holder's lock object; print whether one was removed."""
    removed = ctx.tree().break_lock(force=force)
    emit(as_json, {"removed": removed}, ["removed" if removed else "nothing to remove"])


def _version(name: str) -> str | None:
    import importlib.metadata  # here, not at start: it costs `metatree --help` ~10 ms

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@click.command()
@json_option
@pass_context
def doctor(ctx: Context, as_json: bool) -> None:
    """Print versions, the backend, its capabilities, the lock and the configuration."""
    import platform

    data: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in _DISTRIBUTIONS},
        "root": ctx.root,
    }
    if ctx.root:
        try:
            tree = ctx.tree()
        except MetatreeError as exc:  # a doctor examines a broken tree too: say what is wrong
            data["error"] = f"{type(exc).__name__}: {exc}"
            emit(as_json, data, [f"{key}: {value}" for key, value in data.items()])
            raise Failure(data["error"], type(exc).exit_code) from None
        backend = type(tree.storage.backend)
        info = tree.lock_status()
        data |= {
            "root": tree.root,
            "keys": list(tree.keys),
            "backend": f"{backend.__module__}.{backend.__qualname__}",
            "capabilities": dataclasses.asdict(tree.storage.capabilities),
            "locking_enabled": tree._db.config.locking_enabled,
            "lock": {"locked": info is not None, "holder": _holder(info)},
        }
    lines = [f"{key}: {value}" for key, value in data.items()]
    emit(as_json, data, lines)


def _finding(finding: Any) -> dict[str, str]:
    """Return a finding as --json shows it: its documented fields, not its internal path."""
    return {
        "kind": finding.kind,
        "location": finding.location,
        "detail": finding.detail,
        "fix": finding.fix,
    }


@click.command()
@click.option("--repair", is_flag=True, help="Fix what is safe, under the DB lock.")
@click.option("--verify", "check_hashes", is_flag=True, help="Also check every file's sha256.")
@click.option("--force", is_flag=True, help="With --repair: also what loses data (quarantined).")
@json_option
@pass_context
def fsck(ctx: Context, repair: bool, check_hashes: bool, force: bool, as_json: bool) -> None:
    """Check the tree (docs/fsck.md); exit 0 when it is clean, 5 when damage remains."""
    tree = ctx.tree()
    with node_counter(quiet=ctx.quiet) as counter:
        report = tree.fsck(repair=repair, verify=check_hashes, force=force, progress=counter)
    data = {
        "clean": report.clean,
        "findings": [_finding(f) for f in report.findings],
        "repaired": [_finding(f) for f in report.repaired],
        "quarantine": report.quarantine,
    }
    lines = [f"repaired {f.kind} {f.location}: {f.detail}" for f in report.repaired]
    lines += [f"{f.kind} {f.location}: {f.detail} (fix: {f.fix})" for f in report.findings]
    emit(as_json, data, lines)
    note(
        f"{len(report.findings)} finding(s), {len(report.repaired)} repaired",
        quiet=ctx.quiet,
    )
    if not report.clean:
        raise Failure(f"fsck found {len(report.findings)} problem(s)", EXIT_DAMAGE)


@click.command()
@click.option(
    "--dry-run/--no-dry-run", default=True, show_default=True, help="Only list what would go."
)
@json_option
@pass_context
def gc(ctx: Context, dry_run: bool, as_json: bool) -> None:
    """Remove the quarantine and unreferenced values (a dry run unless --no-dry-run)."""
    report = ctx.tree().gc(dry_run=dry_run)
    data = {
        "dry_run": report.dry_run,
        "size": report.size,
        "items": [dataclasses.asdict(item) for item in report.items],
    }
    verb = "would remove" if report.dry_run else "removed"
    lines = [f"{verb} {item.kind} {item.location} ({item.size} bytes)" for item in report.items]
    emit(as_json, data, lines)
    note(f"{verb} {len(report.items)} item(s), {report.size} bytes", quiet=ctx.quiet)


@click.command()
@click.argument("location", default="")
@click.option("--format", "fmt", type=click.IntRange(1, 2), required=True,
              help="1: the children inline (metatreedb reads them all); 2: a log.")  # fmt: skip
@json_option
@pass_context
def reindex(ctx: Context, location: str, fmt: int, as_json: bool) -> None:
    """Store a node's children index inline (format 1) or as a log (format 2); print the count.

    A node switches to the log by itself past the threshold (docs/format.md, "Format v2");
    this converts one back once it is small again, so metatreedb 0.2.3 sees every child.
    """
    count = ctx.tree().reindex(location, format=fmt)
    emit(as_json, {"location": location, "format": fmt, "children": count}, [str(count)])


def register(group: click.Group) -> None:
    """Add this module's commands to the ``metatree`` group."""
    for command in (verify, lock, doctor, fsck, gc, reindex):
        group.add_command(command)
