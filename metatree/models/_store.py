"""ModelStore: operatorai modelstore's model store and MLflow's aliases, on a metatree tree.

A store is a database with keys ``("domain", "model_id")``. Each upload is one node
``<domain>/<model_id>`` holding the model (a file, bytes, or a directory stored as
``artifacts.tar.gz``), its extra files and its record (modelstore's meta-data) as the node's
metadata; every file has a file record (size, sha256, provenance) that `download` checks.

Every change is one transaction under the DB lock whose commit point is one write of the
domain's metadata.json: the new model's index entry, ``latest``, the aliases, the states and
the history entries of the change land together or not at all (modelstore's upload is three
unlocked writes; MLflow's file registry overwrites an alias, last writer wins, no history).
See docs/models.md.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import os
import uuid
from typing import TYPE_CHECKING, Any, Final

import orjson

from metatree._core.db import children_of
from metatree._core.read import get
from metatree._core.resolve import Resolved
from metatree._records import RECORDS, records_of
from metatree._tree import Metatree
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptMetadataError,
    DatabaseError,
    MetadataError,
    NotFoundError,
)
from metatree.models._download import VERIFIED, download_files, local_directory
from metatree.models._record import (
    checked_record,
    extra_paths,
    make_record,
    upload_source,
    user_metadata,
)
from metatree.models._state import (
    HIDDEN,
    LATEST,
    Change,
    DomainState,
    author,
    check_id,
    check_label,
    check_ref,
    fold,
    parse_changes,
    root_states,
    segment_span,
    state_pointer,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._storage import Storage
    from metatree._types import NodePath

__all__ = ["ModelStore"]

KEYS: Final = ("domain", "model_id")
_DOWNLOAD_TRIES: Final = 3


class Unset(enum.Enum):
    """The default of `expected`: no compare, the switch happens whatever the alias names."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


class ModelStore:
    """Models grouped by domain, with states, aliases and their history, on any backend.

    Parameters
    ----------
    root
        Where the store lives: a path, a `Storage`, or any URL `Metatree` opens (``s3://``,
        ``webhdfs://``, ``memory://``, ...). A new root becomes a database with keys
        ``("domain", "model_id")``; an existing database must have those keys.
    **options
        Passed to `Metatree`: storage options (``endpoint_url=``, ``key=``, ...),
        ``lock_timeout``, ``lock_ttl``, ``fs``, ``create``.

    Examples
    --------
    >>> store = ModelStore(f"memory://doctest-models-{os.getpid()}")
    >>> record = store.upload("fraud", b"weights v1", model_id="v1")
    >>> _ = store.upload("fraud", b"weights v2", model_id="v2")
    >>> store.list_models("fraud")
    ['v2', 'v1']
    >>> store.set_alias("fraud", "production", "v1")
    >>> store.tree.find("fraud/<production>").name
    'v1'
    >>> [(c.name, c.old, c.new) for c in store.history("fraud", "production")]
    [('production', None, 'v1')]
    """

    _history_inline: int = 500

    def __init__(self, root: str | os.PathLike[str] | Storage, **options: Any) -> None:
        if "keys" in options or "locking_enabled" in options:
            raise DatabaseError(str(root), "a model store sets its own keys and always locks")
        if isinstance(root, os.PathLike):
            root = os.fspath(root)
        self._attach(Metatree(root, KEYS, **options))

    @classmethod
    def open(cls, tree: Metatree) -> ModelStore:
        """Return the model store over an existing database with keys ``("domain", "model_id")``."""
        raw: object = tree  # callers without type checking may pass anything
        if not isinstance(raw, Metatree):
            raise DatabaseError(repr(raw)[:80], "ModelStore.open needs a Metatree")
        if tree.keys != KEYS:
            raise DatabaseError(tree.root, f"a model store has keys {KEYS}, not {tree.keys}")
        store = cls.__new__(cls)
        store._attach(Metatree._from_db(tree._db))  # its own cursor
        return store

    def _attach(self, tree: Metatree) -> None:
        if not tree._db.config.locking_enabled:
            raise DatabaseError(tree.root, "the database has locking disabled: uploads would race")
        self._tree = tree
        self._db = tree._db

    def __repr__(self) -> str:
        return f"ModelStore({self.root!r})"

    @property
    def root(self) -> str:
        """The store's root URL."""
        return self._tree.root

    @property
    def tree(self) -> Metatree:
        """The database under the store: ``find("fraud/<production>")`` and friends."""
        return self._tree

    @property
    def history_inline(self) -> int:
        """History entries kept in a domain's metadata (500); older ones move to segments."""
        return self._history_inline

    @history_inline.setter
    def history_inline(self, value: int) -> None:
        if type(value) is not int or value < 5:
            raise MetadataError("history_inline", f"an int of at least 5, not {value!r}")
        self._history_inline = value

    # -- changes: the lock, checks, then one write -------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock for a change's checks: the caller's transaction, or one of our own.

        A check that fails inside the caller's transaction (an unknown model, a stale
        `expected`) wrote nothing, so it does not abort that transaction; the writes run in
        `_writing`, whose failure does.
        """
        if self._db.active_tx() is not None:
            yield
        else:
            with self._db.transaction():
                yield

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """Stage a change's writes: a failure here rolls back the whole transaction."""
        return self._db.transaction()

    # -- uploads ---------------------------------------------------------------------------
    def upload(
        self,
        domain: str,
        source: str | os.PathLike[str] | bytes | bytearray | memoryview,
        *,
        model_id: str | None = None,
        extras: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Store a model as a new version of `domain` and make it the domain's ``latest``.

        `source` is a local file, a local directory (stored as ``artifacts.tar.gz`` with a
        ``python-info.json`` inside) or bytes (stored as `name`, default ``model.bin``).
        `extras` are more local files stored beside it; `metadata` (JSON values, at most
        64 KiB) is kept in the record. The upload is one locked transaction: nothing of it is
        visible until the domain's index names it, and a crash leaves no half model.

        Returns
        -------
        dict
            The record, also stored as the version node's metadata: ``model`` (domain,
            model_id, type, file), ``storage`` (type, root, path, url, size, sha256, and
            bucket on object stores), ``code`` (runtime, user, host, platform, created,
            dependencies), ``extra`` (the extra files' sizes and sha256) and ``metadata``.

        Raises
        ------
        AlreadyExistsError
            The domain has a node with this id, in any letter case or compatibility form.
        """
        domain = check_ref(domain, "domain")  # a new domain is held to `check_id` below
        model_id = str(uuid.uuid4()) if model_id is None else check_id(model_id, "model id")
        if isinstance(source, bytearray | memoryview):
            source = bytes(source)
        kind, stored, archive = upload_source(source, name)
        extra_files = extra_paths(extras, source, stored, archive)
        user = user_metadata(metadata)
        path = (domain, model_id)
        with self._locked():
            state = self._check_new(path)
            with self._writing():
                info = {"model_store": {"domain": domain, "model_id": model_id}}
                self._tree.put(
                    f"{domain}/{model_id}", source, name=stored, archive=archive, info=info
                )
                for extra in extra_files:
                    self._tree.put(f"{domain}/{model_id}", extra, info=info)
                node_metadata, _ = self._db.read_for_write(path)
                files = records_of(node_metadata, self._db.url(path))
                record = make_record(
                    self.root, self._db.url(path, stored), path, kind, files, stored, user
                )
                node_metadata.update(record)
                self._db.write_metadata(path, node_metadata)
                if state is None:  # a new domain
                    state = self._state((domain,))
                state.models = [*(m for m in state.models if m != model_id), model_id]
                state.point()
                self._commit((domain,), state)
        return record

    def _check_new(self, path: NodePath) -> DomainState | None:
        """Refuse an id that folds like a node of its domain (or a domain like another).

        Return the domain's state as it is before the upload (None: a new domain): read after
        the upload's puts, the index would list the new id, and an alias left naming an old
        model of that id (removed by hand) would come back to life.
        """
        domain, model_id = path
        siblings = children_of(self._db.read_for_write(())[0])
        if domain not in siblings:
            check_id(domain, "domain")
            if any(fold(d) == fold(domain) for d in siblings):
                raise AlreadyExistsError(
                    self._db.url((domain,)), "a domain differing only in letter case or form"
                )
            return None
        state = self._state((domain,))  # a corrupt domain is refused before any write
        folded = fold(model_id)
        if any(fold(m) == folded for m in children_of(state.metadata)):
            raise AlreadyExistsError(
                self._db.url(path),
                "model ids are unique in a domain (in any letter case or compatibility form): "
                "upload with another model_id",
            )
        return state

    # -- reading ---------------------------------------------------------------------------
    def list_domains(self) -> list[str]:
        """Return the domains, in the order they were created (one request)."""
        return list(children_of(self._db.read_metadata(())))

    def list_models(self, domain: str, state: str | None = None) -> list[str]:
        """Return the domain's model ids, newest first; with `state`, those in that state.

        Two requests whatever the number of models (the root's and the domain's metadata):
        the domain's metadata lists its models in upload order.
        """
        domain = check_ref(domain, "domain")
        if state is not None:
            state = check_label(state, "state")
        root, _ = self._db.read_for_write(())
        if state is not None:
            self._known_state(state, root)
        models = self._state((domain,), root)
        if state is None:
            return models.models[::-1]
        members = set(models.states.get(state, []))
        return [m for m in reversed(models.models) if m in members]

    def get_model_info(self, domain: str, model_id: str = LATEST) -> dict[str, Any]:
        """Return a model's record (``latest``: the newest model's)."""
        domain = check_ref(domain, "domain")
        path = (domain, self._model(domain, model_id))
        return checked_record(self._db.read_metadata(path), path, self._db.url(path))

    def download(
        self,
        domain: str,
        model_id: str = LATEST,
        local_path: str | os.PathLike[str] = ".",
        *,
        overwrite: bool = False,
    ) -> str:
        """Download a model (``latest``: the newest) into the local directory `local_path`.

        Every file is checked against its sha256 before it appears, an archive is extracted
        safely (nothing outside `local_path`), and a failed download leaves nothing behind
        (docs/models.md). A ``latest`` deleted or replaced meanwhile is followed to the new
        ``latest`` (three tries).

        Returns
        -------
        str
            The model's local path: the directory for an archive, else the file. Extra files
            are downloaded beside it.

        Raises
        ------
        AlreadyExistsError
            A file to download exists already (or a directory has its name), and `overwrite`
            is False; `ArchiveError` for a file of the archive.
        """
        domain = check_ref(domain, "domain")
        if not isinstance(overwrite, bool):
            raise MetadataError("overwrite", f"True or False, not {overwrite!r}")
        local = local_directory(local_path)
        for attempt in range(_DOWNLOAD_TRIES):
            try:
                path = (domain, self._model(domain, model_id))
                metadata, version = self._db.read_for_write(path)
                record = checked_record(metadata, path, self._db.url(path))
                node = Resolved(self._db, path, "/".join(path), (metadata, version))
                return download_files(node, record, local, overwrite=overwrite)
            except (NotFoundError, ConflictError):
                if model_id != LATEST or attempt == _DOWNLOAD_TRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- deleting --------------------------------------------------------------------------
    def delete_model(self, domain: str, model_id: str) -> None:
        """Delete a model: ``latest`` moves to the newest remaining one, aliases and states drop it.

        All in one locked write; the history records each of those changes.
        """
        domain = check_ref(domain, "domain")
        model_id = check_ref(model_id, "model id")
        with self._locked():
            self._existing((domain,), model_id)
            with self._writing():
                self._tree.remove(f"{domain}/{model_id}", recursive=True)
                state = self._state((domain,))
                state.forget(model_id)
                state.point()
                self._commit((domain,), state)

    # -- states ----------------------------------------------------------------------------
    def create_model_state(self, state: str) -> None:
        """Create a state models can be put in (``production``, ``archived``, ...).

        Creating one that exists does nothing.
        """
        state = check_label(state, "state")
        with self._locked():
            metadata, _ = self._db.read_for_write(())
            states = root_states(metadata, self.root)
            if state in states:
                return
            with self._writing():
                states[state] = {
                    "created": datetime.datetime.now(datetime.UTC).isoformat(),
                    "by": author(),
                }
                metadata[HIDDEN] = {"states": states}
                self._db.write_metadata((), metadata, commit=True)

    def list_model_states(self) -> list[str]:
        """Return the states created in this store, sorted."""
        return sorted(root_states(self._db.read_metadata(()), self.root))

    def set_model_state(self, domain: str, model_id: str, state: str) -> None:
        """Put a model in a (created) state; ``latest:<state>`` names the newest model in it."""
        self._change_state(domain, model_id, state, add=True)

    def remove_model_state(self, domain: str, model_id: str, state: str) -> None:
        """Take a model out of a state (nothing happens when it is not in it)."""
        self._change_state(domain, model_id, state, add=False)

    def _change_state(self, domain: str, model_id: str, state: str, *, add: bool) -> None:
        domain = check_ref(domain, "domain")
        model_id = check_ref(model_id, "model id")
        state = check_label(state, "state")
        with self._locked():
            self._known_state(state, self._db.read_for_write(())[0])
            models = self._existing((domain,), model_id)
            members = models.states.get(state, [])
            if (model_id in members) == add:
                return
            pointer = state_pointer(state)
            if state not in models.states and pointer in models.metadata:
                raise MetadataError(pointer, "the domain's metadata uses this key already")
            with self._writing():
                if add:
                    models.states[state] = [*members, model_id]
                    models.record("state", state, None, model_id)
                else:
                    members.remove(model_id)
                    models.record("state", state, model_id, None)
                models.point()
                self._commit((domain,), models)

    def _known_state(self, state: str, root: dict[str, Any]) -> None:
        if state not in root_states(root, self.root):
            raise NotFoundError(self.root, f"model state {state!r} (create_model_state first)")

    # -- aliases ---------------------------------------------------------------------------
    def set_alias(
        self,
        domain: str,
        alias: str,
        model_id: str,
        *,
        expected: str | Unset | None = UNSET,
    ) -> None:
        """Point `alias` at a model: one compare-and-set of the domain's metadata, under the lock.

        With `expected` (a model id, or None for "not set"), the switch happens only if the
        alias names that model now, else `ConflictError` and nothing is written: a promotion
        script cannot undo a concurrent one unknowingly. Readers see the old alias or the new
        one, never none; the history records the switch.
        """
        domain = check_ref(domain, "domain")
        alias = check_label(alias, "alias")
        model_id = check_ref(model_id, "model id")
        expected = _expected(expected)
        with self._locked():
            models = self._existing((domain,), model_id)
            current = _alias(models, alias, expected)
            if current == model_id:
                return
            with self._writing():
                models.aliases[alias] = model_id
                models.record("alias", alias, current, model_id)
                self._commit((domain,), models)

    def remove_alias(
        self, domain: str, alias: str, *, expected: str | Unset | None = UNSET
    ) -> None:
        """Remove `alias` (`NotFoundError` when it is not set); `expected` as in `set_alias`."""
        domain = check_ref(domain, "domain")
        alias = check_label(alias, "alias")
        expected = _expected(expected)
        with self._locked():
            models = self._state((domain,))
            current = _alias(models, alias, expected)
            if current is None:
                raise NotFoundError(self._db.url((domain,)), f"alias {alias!r}")
            with self._writing():
                del models.aliases[alias]
                models.record("alias", alias, current, None)
                self._commit((domain,), models)

    def get_alias(self, domain: str, alias: str, *, at: datetime.datetime | None = None) -> str:
        """Return the model `alias` names now, or at the time `at` (from the history).

        Raises
        ------
        NotFoundError
            The alias is not set (was not set at `at`), or names a model no longer there.
        """
        domain = check_ref(domain, "domain")
        alias = check_label(alias, "alias")
        if at is None:
            found = self._state((domain,)).aliases.get(alias)
        else:
            when = _aware(at)
            found = None
            for change in self.history(domain, alias):
                if change.kind == "alias" and change.at <= when:
                    found = change.new
        if found is None:
            raise NotFoundError(self._db.url((domain,)), f"alias {alias!r}")
        return found

    # -- history ---------------------------------------------------------------------------
    def history(
        self, domain: str, alias: str | None = None, *, state: str | None = None
    ) -> list[Change]:
        """Return the domain's changes, oldest first.

        With `alias`, the switches of that alias (or of ``latest``, ``latest:<state>``);
        with `state`, the models entering and leaving that state. Entries moved to segment
        files are read back too, each checked against its file record (a segment without
        one is corrupt): one request per segment beyond the domain's metadata.
        """
        domain = check_ref(domain, "domain")
        for given in (alias, state):
            if given is not None and not isinstance(given, str):
                raise MetadataError(repr(given)[:80], "a history filter is a str")
        if alias is not None and state is not None:
            raise MetadataError("state", "filter the history by an alias or by a state, not both")
        models = self._state((domain,))
        changes = [*self._segments(models), *models.history]
        if alias is not None:
            return [c for c in changes if c.kind != "state" and c.name == alias]
        if state is not None:
            return [c for c in changes if c.kind == "state" and c.name == state]
        return changes

    def _segments(self, models: DomainState) -> Iterator[Change]:
        """Yield the entries of the domain's history segments, each read against its record."""
        if not models.segments:
            return
        node = Resolved(self._db, models.path, models.path[0], (models.metadata, models.version))
        records = records_of(models.metadata, models.where)
        for segment in models.segments:
            first, last = segment_span(segment, models.where)
            record = records.get(segment)
            if record is None or record.size > self._db.max_metadata_bytes:
                raise CorruptMetadataError(
                    models.where, f"history segment {segment!r} has no record, or a huge one"
                )
            data = b"".join(get(node, segment, None, **VERIFIED))
            try:
                entries = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise CorruptMetadataError(
                    models.where, f"segment {segment!r} is not JSON"
                ) from None
            part = parse_changes(entries, f"{models.where}/{segment}", first)
            if len(part) != last - first + 1:
                raise CorruptMetadataError(models.where, f"segment {segment!r} is short")
            yield from part

    # -- the domain's state ----------------------------------------------------------------
    def _model(self, domain: str, model_id: str) -> str:
        """Return the model id `model_id` names (``latest``: the newest), checked to exist."""
        if model_id != LATEST:
            model_id = check_ref(model_id, "model id")
            self._existing((domain,), model_id)
            return model_id
        models = self._state((domain,))
        if models.latest is None:
            raise NotFoundError(self._db.url((domain,)), "model (the domain has none)")
        if models.latest not in models.models:  # a hand edit, or a model removed by hand
            raise NotFoundError(self._db.url((domain, models.latest)), "model ('latest')")
        return models.latest

    def _state(self, path: NodePath, root: dict[str, Any] | None = None) -> DomainState:
        """Read a domain's state (in a transaction: as the transaction sees it)."""
        if root is None:
            root = self._db.read_for_write(())[0]
        if path[0] not in children_of(root):
            raise NotFoundError(self._db.url(path), "domain")
        metadata, version = self._db.read_for_write(path)
        state = DomainState(metadata, self._db.url(path), version, path)
        unknown = set(state.states) - set(root_states(root, self.root))
        if unknown:  # the store creates states at the root first: a plant, or a lost write
            raise CorruptMetadataError(
                state.where, f"model store: states {sorted(unknown)} were never created"
            )
        return state

    def _existing(self, path: NodePath, model_id: str) -> DomainState:
        models = self._state(path)
        if model_id not in models.models:
            raise NotFoundError(self._db.url((*path, model_id)), "model")
        return models

    def _commit(self, path: NodePath, models: DomainState) -> None:
        """Stage the domain's new metadata: the commit point of the change (in a transaction).

        History entries moved out of line are stored first, as a file of the domain node
        (its record lands in the same metadata write that names the segment).
        """
        metadata, _ = self._db.read_for_write(path)
        moved = models.commit_into(metadata, self.history_inline)
        if moved:
            data = orjson.dumps([c.as_dict() for c in moved])
            self._tree.put(path[0], data, name=models.segments[-1])  # a new name: never force
            metadata[RECORDS] = self._db.read_for_write(path)[0][RECORDS]
        self._db.write_metadata(path, metadata, commit=True)


def _expected(expected: object) -> str | Unset | None:
    """Check `expected` of an alias change: UNSET, None ("not set") or a model id."""
    if expected is UNSET or expected is None:
        return expected
    return check_ref(expected, "model id")


def _alias(models: DomainState, alias: str, expected: str | Unset | None) -> str | None:
    """Return the model `alias` names now, after the checks of a change to it."""
    if alias not in models.alias_keys and alias in models.metadata:
        raise MetadataError(alias, "the domain's metadata uses this key for something else")
    current = models.aliases.get(alias)
    if expected is not UNSET and current != expected:
        raise ConflictError(
            models.where, f"alias {alias!r} names {current!r}, not the expected {expected!r}"
        )
    return current


def _aware(at: object) -> datetime.datetime:
    """Return `at` if it is a timezone-aware datetime, else `MetadataError`."""
    if isinstance(at, datetime.datetime):
        with contextlib.suppress(ValueError):  # a tzinfo whose utcoffset is out of range
            if at.utcoffset() is not None:
                return at
    raise MetadataError("at", "a timezone-aware datetime")
