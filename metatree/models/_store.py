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
import os
import unicodedata
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
from fsspec.callbacks import DEFAULT_CALLBACK

from metatree._core.db import children_of
from metatree._core.read import get
from metatree._core.resolve import Resolved
from metatree._extract import extracted
from metatree._localfiles import local_call
from metatree._metadata import check_value
from metatree._paths import check_name
from metatree._records import RECORDS, records_of, runtime
from metatree._storage import CHUNK_SIZE
from metatree._tree import Metatree
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptMetadataError,
    DatabaseError,
    MetadataError,
    NotFoundError,
    PathError,
    StorageError,
)
from metatree.models._state import (
    HIDDEN,
    LATEST,
    Change,
    DomainState,
    check_id,
    check_label,
    parse_changes,
    segment_span,
)

if TYPE_CHECKING:
    from metatree._storage import Storage
    from metatree._types import NodePath

__all__ = ["ModelStore"]

KEYS: Final = ("domain", "model_id")
ARCHIVE_NAME: Final = "artifacts.tar.gz"
BYTES_NAME: Final = "model.bin"
RECORD_KEYS: Final = ("model", "storage", "code", "extra", "metadata")
MAX_USER_METADATA: Final = 64 * 1024
_ANY: Final[Any] = object()
_DOWNLOAD_TRIES: Final = 3
_VERIFIED: Final[dict[str, Any]] = {
    "recursive": False,
    "chunk_size": CHUNK_SIZE,
    "callback": DEFAULT_CALLBACK,
    "verify": True,
}


class ModelStore:
    """Models grouped by domain, with states, aliases and their history, on any backend.

    Parameters
    ----------
    root
        Where the store lives: a path, a `Storage`, or any URL `Metatree` opens (``s3://``, ``webhdfs://``,
        ``memory://``, ...). A new root becomes a database with keys ``("domain",
        "model_id")``; an existing database must have those keys (`DatabaseError`).
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

    history_inline: int = 500
    """History entries kept in the domain's metadata; older ones move to segment files."""

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

    # -- uploads ---------------------------------------------------------------------------
    def upload(
        self,
        domain: str,
        source: str | os.PathLike[str] | bytes | bytearray | memoryview,
        *,
        model_id: str | None = None,
        extras: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...] | None = None,
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
            model_id, type, file), ``storage`` (type, root, path, url, size, sha256),
            ``code`` (runtime, user, host, platform, created, dependencies), ``extra``
            (the extra files' sizes and sha256) and ``metadata``.

        Raises
        ------
        AlreadyExistsError
            The domain has a model with this id (in any letter case).
        """
        domain = check_id(domain, "domain")
        model_id = str(uuid.uuid4()) if model_id is None else check_id(model_id, "model id")
        if isinstance(source, bytearray | memoryview):
            source = bytes(source)
        kind, stored, archive = _source(source, name)
        extra_files = _extras(extras, _taken_names(source, stored, archive))
        user = _user_metadata(metadata)
        location = f"{domain}/{model_id}"
        with self._db.transaction():
            if domain in children_of(self._db.read_for_write(())[0]):
                self._state((domain,))  # a corrupt domain is refused before any write
                folded = _folded(model_id)
                if any(
                    _folded(m) == folded for m in children_of(self._db.read_metadata((domain,)))
                ):
                    raise AlreadyExistsError(
                        self._db.url((domain, model_id)),
                        "model ids are unique in a domain (in any letter case or "
                        "compatibility form): upload with another model_id",
                    )
            info = {"model_store": {"domain": domain, "model_id": model_id}}
            self._tree.put(location, source, name=stored, archive=archive, info=info)
            for path in extra_files:
                self._tree.put(location, os.fspath(path), info=info)
            record = self._record(domain, model_id, kind, stored, user)
            node_metadata, _ = self._db.read_for_write((domain, model_id))
            node_metadata.update(record)
            self._db.write_metadata((domain, model_id), node_metadata)
            state = self._state((domain,))
            state.models.append(model_id)
            state.point()
            self._commit((domain,), state)
        return record

    def _record(
        self, domain: str, model_id: str, kind: str, stored: str, user: dict[str, Any]
    ) -> dict[str, Any]:
        path = (domain, model_id)
        files = records_of(self._db.read_for_write(path)[0], self._db.url(path))
        model = files[stored]
        facts = runtime()
        url = self._db.url(path, stored)
        storage: dict[str, Any] = {
            "type": self.root.split("://", 1)[0],
            "root": self.root,
            "path": f"{domain}/{model_id}/{stored}",
            "url": url,
            "size": model.size,
            "sha256": model.sha256,
        }
        if storage["type"] in ("s3", "s3a", "gs", "gcs", "az", "abfs"):
            storage["bucket"] = self.root.split("://", 1)[1].split("/", 1)[0]
        return {
            "model": {"domain": domain, "model_id": model_id, "type": kind, "file": stored},
            "storage": storage,
            "code": {
                "runtime": facts["python"],
                "user": facts["user"],
                "host": facts["host"],
                "platform": facts["platform"],
                "created": model.created.isoformat(timespec="microseconds"),
                "dependencies": dict(facts["versions"]),
            },
            "extra": {
                n: {"size": r.size, "sha256": r.sha256} for n, r in files.items() if n != stored
            },
            "metadata": user,
        }

    # -- reading ---------------------------------------------------------------------------
    def list_domains(self) -> list[str]:
        """Return the domains, in the order they were created (one request)."""
        return list(children_of(self._db.read_metadata(())))

    def list_models(self, domain: str, state: str | None = None) -> list[str]:
        """Return the domain's model ids, newest first; with `state`, those in that state.

        Two requests whatever the number of models (the root's and the domain's metadata):
        the domain's index lists the models in upload order.
        """
        domain = check_id(domain, "domain")
        if state is not None:
            state = self._known_state(check_label(state, "state"))
        models = self._state((domain,))
        if state is None:
            return models.models[::-1]
        members = set(models.states.get(state, []))
        return [m for m in reversed(models.models) if m in members]

    def get_model_info(self, domain: str, model_id: str = LATEST) -> dict[str, Any]:
        """Return a model's record (``latest``: the newest model's)."""
        domain = check_id(domain, "domain")
        return self._info(domain, self._model(domain, model_id))

    def _info(self, domain: str, model_id: str) -> dict[str, Any]:
        path = (domain, model_id)
        metadata = self._db.read_metadata(path)
        return _checked_record(metadata, domain, model_id, self._db.url(path))

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
        safely (nothing outside `local_path`), and nothing appears unless every file of the
        model arrived intact. A model deleted or replaced while ``latest`` was being
        downloaded is followed to the new ``latest``.

        Returns
        -------
        str
            The model's local path: the directory for an archive, else the file. Extra files
            are downloaded beside it.

        Raises
        ------
        AlreadyExistsError
            A file to download exists already (or a directory has its name), and `overwrite`
            is False.
        """
        domain = check_id(domain, "domain")
        if not isinstance(overwrite, bool):
            raise PathError(repr(overwrite), f"overwrite must be True or False, not {overwrite!r}")
        local = _local_directory(local_path)
        for attempt in range(_DOWNLOAD_TRIES):
            chosen = self._model(domain, model_id)
            try:
                return self._download(domain, chosen, local, overwrite)
            except (NotFoundError, ConflictError):
                if model_id != LATEST or attempt == _DOWNLOAD_TRIES - 1:
                    raise
                if self._model(domain, LATEST) == chosen:
                    raise  # not a concurrent delete: the model itself is broken
        raise AssertionError("unreachable")  # pragma: no cover

    def _download(self, domain: str, model_id: str, local: Path, overwrite: bool) -> str:
        """Download a model whose domain index was just read: one more read, then its files.

        The version node's metadata (the record and the file records) is read once and the
        files are fetched against it, so a small model costs four reads: the root's, the
        domain's and the version's metadata, then the file. Files arrive under temporary
        names and are moved into place only when all of them (and the archive's extraction)
        succeeded: a failed download leaves nothing behind, so it can simply be retried.
        """
        path = (domain, model_id)
        metadata, version = self._db.read_for_write(path)
        record = _checked_record(metadata, domain, model_id, self._db.url(path))
        node = Resolved(self._db, path, f"{domain}/{model_id}", (metadata, version))
        stored, archive = record["model"]["file"], record["model"]["type"] == "archive"
        names = [*([] if archive else [stored]), *record["extra"]]
        for name in names:  # refused before anything is read
            _check_target(local / name, overwrite)
        local_call(str(local), local.mkdir, parents=True, exist_ok=True)
        temps: dict[str, str] = {}
        try:
            for name in names:
                temps[name] = _temp_beside(local)
                get(node, name, temps[name], **_VERIFIED)
            if archive:
                chunks = get(node, stored, None, **_VERIFIED)
                list(
                    extracted(
                        chunks, str(local), overwrite=overwrite, name=f"{node.shown}/{stored}"
                    )
                )
            _place(temps, local, overwrite)
        finally:
            for temp in temps.values():
                with contextlib.suppress(OSError):
                    os.unlink(temp)
        return str(local) if archive else str(local / stored)

    # -- deleting --------------------------------------------------------------------------
    def delete_model(self, domain: str, model_id: str) -> None:
        """Delete a model: ``latest`` moves to the newest remaining one, aliases and states drop it.

        All in one locked write; the history records each of those changes.
        """
        domain = check_id(domain, "domain")
        model_id = check_id(model_id, "model id")
        with self._db.transaction():
            self._existing((domain,), model_id)
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
        with self._db.transaction():
            metadata, _ = self._db.read_for_write(())
            states = _root_states(metadata, self.root)
            if state in states:
                return
            states[state] = {
                "created": _now(),
                "by": f"{runtime()['user']}@{runtime()['host']}",
            }
            metadata[HIDDEN] = {"states": states}
            self._db.write_metadata((), metadata, commit=True)

    def list_model_states(self) -> list[str]:
        """Return the states created in this store, sorted."""
        return sorted(_root_states(self._db.read_metadata(()), self.root))

    def set_model_state(self, domain: str, model_id: str, state: str) -> None:
        """Put a model in a (created) state; ``latest:<state>`` names the newest model in it."""
        self._change_state(domain, model_id, state, add=True)

    def remove_model_state(self, domain: str, model_id: str, state: str) -> None:
        """Take a model out of a state (nothing happens when it is not in it)."""
        self._change_state(domain, model_id, state, add=False)

    def _change_state(self, domain: str, model_id: str, state: str, *, add: bool) -> None:
        domain = check_id(domain, "domain")
        model_id = check_id(model_id, "model id")
        state = check_label(state, "state")
        with self._db.transaction():
            self._known_state(state)
            models = self._existing((domain,), model_id)
            members = models.states.setdefault(state, [])
            if (model_id in members) == add:
                return
            if add:
                members.append(model_id)
                models.record("state", state, None, model_id)
            else:
                members.remove(model_id)
                models.record("state", state, model_id, None)
            models.point()
            self._commit((domain,), models)

    def _known_state(self, state: str) -> str:
        if state not in _root_states(self._db.read_for_write(())[0], self.root):
            raise NotFoundError(self.root, f"model state {state!r} (create_model_state first)")
        return state

    # -- aliases ---------------------------------------------------------------------------
    def set_alias(
        self, domain: str, alias: str, model_id: str, *, expected: str | None = _ANY
    ) -> None:
        """Point `alias` at a model: one compare-and-set of the domain's metadata, under the lock.

        With `expected` (a model id, or None for "not set"), the switch happens only if the
        alias names that model now, else `ConflictError` and nothing is written: a promotion
        script cannot undo a concurrent one unknowingly. Readers see the old alias or the new
        one, never none; the history records the switch.
        """
        domain = check_id(domain, "domain")
        alias = check_label(alias, "alias")
        model_id = check_id(model_id, "model id")
        if expected is not _ANY and expected is not None:
            expected = check_id(expected, "model id")
        with self._db.transaction():
            models = self._existing((domain,), model_id)
            current = self._alias(models, alias, expected)
            if current == model_id:
                return
            models.aliases[alias] = model_id
            models.record("alias", alias, current, model_id)
            self._commit((domain,), models)

    def remove_alias(self, domain: str, alias: str, *, expected: str | None = _ANY) -> None:
        """Remove `alias` (`NotFoundError` when it is not set); `expected` as in `set_alias`."""
        domain = check_id(domain, "domain")
        alias = check_label(alias, "alias")
        if expected is not _ANY and expected is not None:
            expected = check_id(expected, "model id")
        with self._db.transaction():
            models = self._state((domain,))
            current = self._alias(models, alias, expected)
            if current is None:
                raise NotFoundError(self._db.url((domain,)), f"alias {alias!r}")
            del models.aliases[alias]
            models.record("alias", alias, current, None)
            self._commit((domain,), models)

    def _alias(self, models: DomainState, alias: str, expected: object) -> str | None:
        if alias not in models.aliases and alias in models.metadata:
            raise MetadataError(alias, "the domain's metadata uses this key for something else")
        current = models.aliases.get(alias)
        if expected is not _ANY and current != expected:
            raise ConflictError(
                models.where, f"alias {alias!r} names {current!r}, not the expected {expected!r}"
            )
        return current

    def get_alias(self, domain: str, alias: str, *, at: datetime.datetime | None = None) -> str:
        """Return the model `alias` names now, or at the time `at` (from the history).

        Raises
        ------
        NotFoundError
            The alias is not set (was not set at `at`).
        """
        domain = check_id(domain, "domain")
        alias = check_label(alias, "alias")
        if at is None:
            models = self._state((domain,))
            found = models.aliases.get(alias)
            if found is not None and found not in models.models:  # removed by hand
                raise NotFoundError(self._db.url((domain, found)), f"model (alias {alias!r})")
        else:
            raw: object = at  # callers without type checking may pass anything
            if not isinstance(raw, datetime.datetime) or at.utcoffset() is None:
                raise MetadataError("at", "a timezone-aware datetime")
            found = None
            for change in self.history(domain, alias):
                if change.kind == "alias" and change.at <= at:
                    found = change.new
        if found is None:
            raise NotFoundError(self._db.url((domain,)), f"alias {alias!r}")
        return found

    # -- history ---------------------------------------------------------------------------
    def history(self, domain: str, name: str | None = None) -> list[Change]:
        """Return the domain's changes, oldest first; with `name`, those of one name.

        A name is an alias, a state, ``latest`` or ``latest:<state>``. Entries moved to
        segment files are read back too, each checked against its file record (a segment
        without one is corrupt), so the history is complete whatever its length: one request
        per segment beyond the domain's metadata.
        """
        domain = check_id(domain, "domain")
        if name is not None and not isinstance(name, str):
            raise MetadataError(repr(name), "a history name is a str")
        models = self._state((domain,))
        node = Resolved(self._db, (domain,), domain, (models.metadata, models.version))
        records = records_of(models.metadata, models.where) if models.segments else {}
        changes: list[Change] = []
        for segment in models.segments:
            first, last = segment_span(segment, models.where)
            record = records.get(segment)
            if record is None or record.size > self._db.max_metadata_bytes:
                raise CorruptMetadataError(
                    models.where, f"history segment {segment!r} has no record, or a huge one"
                )
            data = b"".join(get(node, segment, None, **_VERIFIED))
            try:
                entries = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise CorruptMetadataError(
                    models.where, f"segment {segment!r} is not JSON"
                ) from None
            part = parse_changes(entries, f"{models.where}/{segment}", first)
            if len(part) != last - first + 1:
                raise CorruptMetadataError(models.where, f"segment {segment!r} is short")
            changes.extend(part)
        changes.extend(models.history)
        return [c for c in changes if name is None or c.name == name]

    # -- the domain's state ----------------------------------------------------------------
    def _model(self, domain: str, model_id: str) -> str:
        """Return the model id `model_id` names (``latest``: the newest), checked to exist."""
        if model_id == LATEST:
            models = self._state((domain,))
            if models.latest is None:
                raise NotFoundError(self._db.url((domain,)), "model (the domain has none)")
            if models.latest not in models.models:  # a hand edit, or a hand remove
                raise NotFoundError(self._db.url((domain, models.latest)), "model ('latest')")
            return models.latest
        model_id = check_id(model_id, "model id")
        self._existing((domain,), model_id)
        return model_id

    def _state(self, path: NodePath) -> DomainState:
        """Read a domain's state (in a transaction: as the transaction sees it)."""
        if path[0] not in children_of(self._db.read_for_write(())[0]):
            raise NotFoundError(self._db.url(path), "domain")
        metadata, version = self._db.read_for_write(path)
        return DomainState(metadata, self._db.url(path), version)

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
        inline = self.history_inline
        if type(inline) is not int or inline < 5:
            raise MetadataError("history_inline", f"an int of at least 5, not {inline!r}")
        metadata, _ = self._db.read_for_write(path)
        moved = models.commit_into(metadata, inline)
        if moved:
            data = orjson.dumps([c.as_dict() for c in moved])
            self._tree.put(path[0], data, name=models.segments[-1])  # a new name: never force
            metadata[RECORDS] = self._db.read_for_write(path)[0][RECORDS]
        self._db.write_metadata(path, metadata, commit=True)


def _source(source: object, name: str | None) -> tuple[str, str, bool]:
    """Return (type, stored name, archive?) of an upload's source, checked before any I/O."""
    if name is not None:
        check_name(name, name)
    if isinstance(source, bytes | bytearray | memoryview):
        return "bytes", name or BYTES_NAME, False
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if os.path.isdir(path):
            if name is not None and name != ARCHIVE_NAME:
                raise PathError(path, f"a directory is stored as {ARCHIVE_NAME}")
            return "archive", ARCHIVE_NAME, True
        if not os.path.isfile(path):
            raise NotFoundError(path, "local file or directory to upload")
        return "file", name or check_name(os.path.basename(path), path), False
    raise PathError(repr(source)[:80], "upload a local file or directory path, or bytes")


def _taken_names(source: object, stored: str, archive: bool) -> set[str]:
    """Return the (folded) names an extra file cannot have: those the download writes."""
    taken = {stored}
    if archive and isinstance(source, str | os.PathLike):
        # the archive is extracted beside the extras: its top level is taken
        taken.add("python-info.json")
        with contextlib.suppress(OSError):
            taken.update(os.listdir(os.fspath(source)))
    return {_folded(name) for name in taken}


def _extras(extras: object, taken: set[str]) -> list[str]:
    """Return the extra files' paths, each an existing local file with a name of its own."""
    if extras is None:
        return []
    if not isinstance(extras, list | tuple):
        raise PathError(repr(extras)[:80], "extras is a list or tuple of local file paths")
    paths: list[str] = []
    seen = set(taken)
    for extra in extras:
        if not isinstance(extra, str | os.PathLike):
            raise PathError(repr(extra)[:80], "an extra is a local file path")
        path = os.fspath(extra)
        if not isinstance(path, str) or not os.path.isfile(path):
            raise NotFoundError(str(path), "local extra file")
        base = check_name(os.path.basename(path), path)
        if _folded(base) in seen:
            raise AlreadyExistsError(
                path, "an extra file needs a name of its own (not the model's, nor one in it)"
            )
        seen.add(_folded(base))
        paths.append(path)
    return paths


def _folded(name: str) -> str:
    """Fold a name as case-insensitive disks and look-alike compatibility forms (full-width letters) do."""
    return unicodedata.normalize("NFKC", name).casefold()


def _user_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise MetadataError("metadata", f"a dict of JSON values, not {type(metadata).__name__}")
    check_value(metadata, "metadata")
    if len(orjson.dumps(metadata)) > MAX_USER_METADATA:
        raise MetadataError("metadata", f"larger than {MAX_USER_METADATA} bytes as JSON")
    return dict(metadata)


def _checked_record(
    metadata: dict[str, Any], domain: str, model_id: str, where: str
) -> dict[str, Any]:
    """Return the record stored in a version node, checked: it names the files to download."""
    if "model" not in metadata:
        raise NotFoundError(where, "model-store record (the node was not uploaded as a model)")
    record = {k: metadata.get(k) for k in RECORD_KEYS}
    model, extra = record["model"], record["extra"]
    if (
        not isinstance(model, dict)
        or model.get("domain") != domain
        or model.get("model_id") != model_id
        or model.get("type") not in ("file", "archive", "bytes")
        or not isinstance(extra, dict)
        or not all(isinstance(record[k], dict) for k in RECORD_KEYS)
    ):
        raise CorruptMetadataError(where, "model store: the model's record is malformed")
    for name in [model.get("file"), *extra]:
        try:
            check_name(name, str(name))
        except PathError as exc:
            raise CorruptMetadataError(where, f"model store: file name {exc.reason}") from None
    return record


def _local_directory(local_path: object) -> Path:
    """Return the absolute local directory a download goes to, checked before any request."""
    if not isinstance(local_path, str | os.PathLike):
        raise PathError(repr(local_path)[:80], "local_path must be a local directory path")
    path = os.fspath(local_path)
    if not isinstance(path, str) or not path or "\x00" in path:
        raise PathError(repr(local_path)[:80], "local_path must be a non-empty str path")
    local = Path(path).absolute()
    if os.path.lexists(local) and not local.is_dir():
        raise AlreadyExistsError(str(local), "local_path is not a directory")
    return local


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse a download target that exists (without `overwrite`) or is a directory."""
    if target.is_dir() and not target.is_symlink():
        raise AlreadyExistsError(str(target), "a directory has the name of a file to download")
    if not overwrite and os.path.lexists(target):
        raise AlreadyExistsError(str(target), "pass overwrite=True to replace it")


def _temp_beside(local: Path) -> str:
    """Return an unused temporary name in `local` (the core's download creates the file)."""
    return str(local / f".metatree-download-{uuid.uuid4().hex}")


def _place(temps: dict[str, str], local: Path, overwrite: bool) -> None:
    """Move the downloaded files into place: replacing them with `overwrite`.

    Without it, by a hard link, which fails rather than replace a file that appeared
    meanwhile (then the ones placed are taken back).
    """
    placed: list[Path] = []
    for name, temp in temps.items():
        target = local / name
        if overwrite:
            local_call(str(target), os.replace, temp, target)
            continue
        try:
            os.link(temp, target)
        except FileExistsError:
            for done in placed:
                with contextlib.suppress(OSError):
                    done.unlink()
            raise AlreadyExistsError(str(target), "pass overwrite=True to replace it") from None
        except OSError as exc:
            raise StorageError(str(target), f"local filesystem: {exc}") from None
        placed.append(target)


def _root_states(metadata: dict[str, Any], where: str) -> dict[str, Any]:
    hidden = metadata.get(HIDDEN, {})
    states = hidden.get("states", {}) if isinstance(hidden, dict) else None
    if not isinstance(states, dict) or set(hidden) - {"states"}:
        raise CorruptMetadataError(where, "model store: the states are malformed")
    for state in states:
        try:
            check_label(state, "state")
        except MetadataError:
            raise CorruptMetadataError(where, f"model store: state {state[:80]!r}") from None
    return dict(states)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
