"""``metatree models ...``: the model store (docs/models.md) from the shell.

The store's database has the keys ``("domain", "model_id")``. ``upload`` creates it at
``--root`` when nothing is there (as modelstore's ``upload`` does); every other command opens
an existing one, so a mistyped root is an error, not a new store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from metatree.cli._context import Context, parse_assignments
from metatree.cli._output import emit, json_option

if TYPE_CHECKING:
    from metatree import ModelStore

__all__ = ["register"]

pass_context = click.make_pass_decorator(Context)


def _store(ctx: Context) -> ModelStore:
    from metatree import ModelStore

    return ModelStore.open(ctx.tree())


@click.group()
def models() -> None:
    """Store models by domain, with aliases and their history."""


@models.command()
@click.argument("domain")
@click.argument("src", type=click.Path(exists=True))
@click.option("--id", "model_id", help="The model id (default: a new uuid).")
@click.option("--extra", "extras", multiple=True, type=click.Path(exists=True),
              help="A file stored beside the model (repeatable).")  # fmt: skip
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE",
              help="Metadata kept in the record (repeatable; JSON values when they parse).")  # fmt: skip
@json_option
@pass_context
def upload(
    ctx: Context,
    domain: str,
    src: str,
    model_id: str | None,
    extras: tuple[str, ...],
    meta: tuple[str, ...],
    as_json: bool,
) -> None:
    """Upload the local file or directory SRC as a new model of DOMAIN; print its id."""
    from metatree import ModelStore
    from metatree.cli._options import check_options

    check_options(ctx.require_root(), ctx.options)
    store = ModelStore(ctx.require_root(), **ctx.options)
    metadata = parse_assignments(meta, "--meta")
    record = store.upload(
        domain, src, model_id=model_id, extras=list(extras) or None, metadata=metadata or None
    )
    emit(as_json, record, [record["model"]["model_id"]])


@models.command()
@click.argument("domain")
@click.argument("model_id", default="latest")
@click.option("--to", "dest", default=".", type=click.Path(file_okay=False),
              help="The local directory (default: the current one).")  # fmt: skip
@click.option("--alias", help="Download the model this alias names (instead of MODEL_ID).")
@click.option("--overwrite", is_flag=True, help="Replace local files of the same name.")
@json_option
@pass_context
def download(
    ctx: Context,
    domain: str,
    model_id: str,
    dest: str,
    alias: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Download a model (default: the latest) into a local directory; print its path."""
    store = _store(ctx)
    if alias is not None:
        if model_id != "latest":
            raise click.UsageError("give MODEL_ID or --alias, not both")
        model_id = store.get_alias(domain, alias)
    path = store.download(domain, model_id, dest, overwrite=overwrite)
    emit(as_json, {"path": path, "model_id": model_id}, [path])


@models.command(name="list")
@click.argument("domain", required=False)
@click.option("--state", help="Only the models in this state.")
@json_option
@pass_context
def list_(ctx: Context, domain: str | None, state: str | None, as_json: bool) -> None:
    """List the domains, or DOMAIN's model ids newest first."""
    store = _store(ctx)
    if domain is None:
        if state is not None:
            raise click.UsageError("--state needs a DOMAIN")
        names = store.list_domains()
        emit(as_json, {"domains": names}, names)
    else:
        names = store.list_models(domain, state)
        emit(as_json, {"domain": domain, "models": names}, names)


@models.command()
@click.argument("domain")
@click.option("--alias", help="Only the switches of this alias (or latest, latest:<state>).")
@click.option("--state", help="Only the models entering and leaving this state.")
@json_option
@pass_context
def history(ctx: Context, domain: str, alias: str | None, state: str | None, as_json: bool) -> None:
    """Print DOMAIN's changes of aliases and states, oldest first."""
    changes = [change.as_dict() for change in _store(ctx).history(domain, alias, state=state)]
    lines = [f"{c['seq']} {c['at']} {c['by']} {c['kind']} {c['name']}: {c['old']} -> {c['new']}"
             for c in changes]  # fmt: skip
    emit(as_json, {"domain": domain, "changes": changes}, lines)


@models.command()
@click.argument("domain")
@click.argument("model_id")
@click.argument("state")
@click.option("--create", is_flag=True, help="Create STATE first if it does not exist.")
@click.option("--remove", is_flag=True, help="Take the model out of STATE instead.")
@json_option
@pass_context
def promote(
    ctx: Context,
    domain: str,
    model_id: str,
    state: str,
    create: bool,
    remove: bool,
    as_json: bool,
) -> None:
    """Put MODEL_ID of DOMAIN in STATE (``latest:STATE`` then names the newest model in it)."""
    store = _store(ctx)
    if remove:
        store.remove_model_state(domain, model_id, state)
    else:
        if create:
            store.create_model_state(state)
        store.set_model_state(domain, model_id, state)
    data = {"domain": domain, "model_id": model_id, "state": state, "in_state": not remove}
    emit(as_json, data, [f"{domain}/{model_id} {'out of' if remove else 'in'} {state}"])


@models.group()
def alias() -> None:
    """Point aliases (production, staging, ...) at models."""


@alias.command(name="set")
@click.argument("domain")
@click.argument("name")
@click.argument("model_id")
@click.option("--expected", help="Switch only if the alias names this model now (else exit 4).")
@json_option
@pass_context
def set_(
    ctx: Context, domain: str, name: str, model_id: str, expected: str | None, as_json: bool
) -> None:
    """Point the alias NAME of DOMAIN at MODEL_ID."""
    store = _store(ctx)
    if expected is None:
        store.set_alias(domain, name, model_id)
    else:
        store.set_alias(domain, name, model_id, expected=expected)
    data = {"domain": domain, "alias": name, "model_id": model_id}
    emit(as_json, data, [f"{domain}/{name} -> {model_id}"])


def register(group: click.Group) -> None:
    """Add ``models`` to the ``metatree`` group."""
    group.add_command(models)
