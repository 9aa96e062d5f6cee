"""The model store (issue 12) in the conformance suite: every test runs on every backend.

`ModelStore` is built on the tree, so its promises hold only if they hold on each storage:
round trips of a file, a directory and bytes, the record, states, aliases and their history,
deletes, and typed errors that write nothing for bad input and for hostile stored data.
Hostile data is planted through `Storage` primitives (a whole ``metadata.json`` written with
``write_atomic``), as another client or an attacker with write access would.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import hashlib
import io
import subprocess
import tarfile
import threading
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from metatree import Metatree
from metatree._records import RECORDS
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptMetadataError,
    DatabaseError,
    IntegrityError,
    MetadataError,
    MetatreeError,
    NotFoundError,
    PathError,
    UnresolvedPathError,
)
from metatree.models import ModelStore
from metatree.models._state import segment_name
from metatree.testing._helpers import snapshot, unchanged
from metatree.testing.reference import ReferenceUnavailable, ensure_reference_venv, venv_python

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from metatree._storage import Storage

__all__ = ["ModelStoreTests"]

MODEL_KEYS = ("domain", "model_id")
RECORD_KEYS = ("model", "storage", "code", "extra", "metadata")
HIDDEN = ".metatree.models"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plant(storage: Storage, rel: str, change: Callable[[dict[str, Any]], object]) -> None:
    """Rewrite the stored metadata.json `rel` as another client would (no lock, no checks)."""
    metadata = orjson.loads(storage.read_bytes(rel))
    change(metadata)
    storage.write_atomic(rel, orjson.dumps(metadata))


def _files(root: Path) -> dict[str, bytes]:
    """Every file below a local directory with its bytes (paths relative, with '/')."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _hidden(storage: Storage, domain: str = "d") -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(storage.read_bytes(f"{domain}/metadata.json"))[HIDDEN]
    return value


_REFERENCE_READ = """
import json, sys
from metatree import Metatree
tree = Metatree(sys.argv[1])
out = {t: tree.find(t).location.rsplit("/", 1)[1] for t in sys.argv[2:]}
out["bytes"] = b"".join(tree.get("d/<production>/model.bin")).decode()
out["metadata"] = tree.find("d/v1").metadata
print(json.dumps(out))
"""
"""Run by metatreedb 0.2.3: resolve the store's templates and read a record and a model."""

_HOSTILE_DOMAIN: dict[str, Callable[[dict[str, Any]], object]] = {
    "hidden-list": lambda m: m.update({HIDDEN: ["not", "an", "object"]}),
    "aliases-str": lambda m: m[HIDDEN].update(aliases="production"),
    "state-members-str": lambda m: m[HIDDEN].update(states={"production": "v1"}),
    "unknown-field": lambda m: m[HIDDEN].update(extra_field=1),
    "alias-not-str": lambda m: m.update(production=["v1"]),
    "alias-label": lambda m: m[HIDDEN].update(aliases=["../x"]),
    "history-gap": lambda m: m[HIDDEN]["history"][1].update(seq=5),
    "history-lost-entry": lambda m: m[HIDDEN]["history"].pop(0),
    "history-time": lambda m: m[HIDDEN]["history"][0].update(at="yesterday"),
    "history-kind": lambda m: m[HIDDEN]["history"][0].update(kind="rm -rf"),
    "negative-seq": lambda m: m[HIDDEN].update(seq=-1),
    "segment-old-form": lambda m: m[HIDDEN].update(segments=["history-0000000000-0000000001.json"]),
    "segment-overlap": lambda m: m[HIDDEN].update(
        segments=[segment_name(0, 1), segment_name(1, 2)], seq=m[HIDDEN]["seq"] + 3
    ),
    "history-old-path": lambda m: m[HIDDEN]["history"][0].update(old="../../etc/passwd"),
    "segment-name": lambda m: m[HIDDEN].update(segments=["../../metadata.json"]),
    "history-kind-list": lambda m: m[HIDDEN]["history"][0].update(kind=["alias"]),
    "history-kind-dict": lambda m: m[HIDDEN]["history"][0].update(kind={"a": 1}),
    "alias-path": lambda m: m.update(production="../../etc"),
    "latest-number": lambda m: m.update(latest=2),
    "models-str": lambda m: m[HIDDEN].update(models="v1"),
    "models-twice": lambda m: m[HIDDEN].update(models=["v2", "v1", "v2"]),
    "state-members-twice": lambda m: m[HIDDEN].update(states={"production": ["v1", "v1"]}),
    "state-never-created": lambda m: m[HIDDEN].update(states={"nowhere": ["v1"]}),
}
"""Another client's writes into a domain's metadata, each corrupting the model store's view."""

_HOSTILE_RECORD: dict[str, Callable[[dict[str, Any]], object]] = {
    "file-up": lambda m: m["model"].update(file="../../x"),
    "file-abs": lambda m: m["model"].update(file="/etc/x"),
    "extra-abs": lambda m: m.update(extra={"/etc/x": {"size": 1, "sha256": "0" * 64}}),
    "extra-up": lambda m: m.update(extra={"../x": {"size": 1, "sha256": "0" * 64}}),
    "other-id": lambda m: m["model"].update(model_id="v2"),
    "type": lambda m: m["model"].update(type="symlink"),
    "extra-list": lambda m: m.update(extra=["x"]),
}
"""Another client's writes into a version node's record, each one `download` must refuse."""

_BAD_CALLS: dict[str, list[tuple[Callable[[Any, Path], object], type[MetatreeError]]]] = {
    "unknown": [
        (lambda s, p: s.list_models("nope"), NotFoundError),
        (lambda s, p: s.download("nope", local_path=p), NotFoundError),
        (lambda s, p: s.set_alias("nope", "production", "v1"), NotFoundError),
        (lambda s, p: s.history("nope"), NotFoundError),
        (lambda s, p: s.get_model_info("d", "v9"), NotFoundError),
        (lambda s, p: s.download("d", "v9", local_path=p / "out"), NotFoundError),
        (lambda s, p: s.delete_model("nope", "v1"), NotFoundError),
        (lambda s, p: s.set_alias("d", "production", "v9"), NotFoundError),
        (lambda s, p: s.set_model_state("d", "v1", "staging"), NotFoundError),
        (lambda s, p: s.set_model_state("d", "v9", "production"), NotFoundError),
    ],
    "ids": [
        (lambda s, p: s.upload("", b"x"), PathError),
        (lambda s, p: s.upload("a:b", b"x"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id=""), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="a/b"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="/"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id=".."), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="CON"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="nul.txt"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="a."), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="latest"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="Latest"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id=7), PathError),
        (lambda s, p: s.upload("d", b"x", model_id="metadata.json"), PathError),
        (lambda s, p: s.upload("d", b"x", model_id=".metatree"), PathError),
        (lambda s, p: s.upload("d", b"x", name="metadata.json"), PathError),
        (lambda s, p: s.get_model_info("d", "../d"), PathError),
        (lambda s, p: s.delete_model("d", ".."), PathError),
        (lambda s, p: s.upload("d", b"x", model_id=segment_name(0, 4)), PathError),
        (lambda s, p: s.download("d", "v1", local_path=None), PathError),
        (lambda s, p: s.download("d", "v1", local_path=1), PathError),
        (lambda s, p: s.download("d", "v1", local_path=b"out"), PathError),
        (lambda s, p: s.download("d", "v1", local_path=""), PathError),
        (lambda s, p: type(s).open("memory://x"), DatabaseError),
    ],
    "duplicates": [
        (lambda s, p: s.upload("d", b"x", model_id="v1"), AlreadyExistsError),
        (lambda s, p: s.upload("d", b"x", model_id="V1"), AlreadyExistsError),
        (lambda s, p: s.download("d", "v1", p / "extra.txt"), AlreadyExistsError),
        (lambda s, p: s.upload("d", b"x", model_id="\uff561"), AlreadyExistsError),  # full-width v
    ],
    "sources": [
        (lambda s, p: s.upload("d", p / "missing"), NotFoundError),
        (lambda s, p: s.upload("d", 42), PathError),
        (lambda s, p: s.upload("d", b"x", extras=[p / "missing"]), NotFoundError),
        (lambda s, p: s.upload("d", b"x", extras=b"extra.txt"), PathError),
        (lambda s, p: s.upload("d", b"x", extras=5), PathError),
        (lambda s, p: s.upload("d", b"x", extras=[3]), PathError),
        (lambda s, p: s.upload("d", b"x", extras={p / "extra.txt"}), PathError),
        (
            lambda s, p: s.upload("d", b"x", extras=[p / "extra.txt", p / "extra.txt"]),
            AlreadyExistsError,
        ),
        (
            lambda s, p: s.upload("d", b"x", name="extra.txt", extras=[p / "extra.txt"]),
            AlreadyExistsError,
        ),
        (lambda s, p: s.upload("d", b"x", metadata={"f": object()}), MetadataError),
        (lambda s, p: s.upload("d", b"x", metadata={"f": float("nan")}), MetadataError),
        (lambda s, p: s.upload("d", b"x", metadata=[1]), MetadataError),
    ],
    "labels": [
        (lambda s, p: s.set_alias("d", "latest", "v1"), MetadataError),
        (lambda s, p: s.set_alias("d", "children", "v1"), MetadataError),
        (lambda s, p: s.set_alias("d", "1x", "v1"), MetadataError),
        (lambda s, p: s.set_alias("d", "a:b", "v1"), MetadataError),
        (lambda s, p: s.set_alias("d", "a" * 65, "v1"), MetadataError),
        (lambda s, p: s.set_alias("d", 3, "v1"), MetadataError),
        (lambda s, p: s.set_alias("d", "production", "v1", expected="v2"), ConflictError),
        (lambda s, p: s.create_model_state("latest"), MetadataError),
        (lambda s, p: s.create_model_state("1x"), MetadataError),
        (lambda s, p: s.create_model_state("a:b"), MetadataError),
        (lambda s, p: s.create_model_state("a" * 65), MetadataError),
        (lambda s, p: s.create_model_state(None), MetadataError),
        (lambda s, p: s.list_models("d", state="a:b"), MetadataError),
        (lambda s, p: s.get_alias("d", "production", at="2026-01-01"), MetadataError),
    ],
}
"""Bad calls by group, each with the error it must raise.

A call gets the test's store (typed `Any`: the calls pass what the type hints forbid, as an
untyped caller would) and its local work directory.
"""


class ModelStoreTests:
    """Models by domain with states, aliases and history: records, round trips, typed errors."""

    @pytest.fixture
    def store(self, storage: Storage) -> ModelStore:
        """Return a model store on the suite's fresh storage."""
        return ModelStore.open(Metatree(storage, MODEL_KEYS))

    @pytest.fixture
    def work(self, tmp_path: Path) -> Path:
        """Return an empty local directory of the test's own.

        The local backend stores in `tmp_path` too; the tests check that nothing but what
        they expect appears here.
        """
        path = tmp_path / "work"
        path.mkdir()
        return path

    @pytest.fixture
    def source_dir(self, work: Path) -> Path:
        """Return a small local model directory (a nested file, an empty file)."""
        src = work / "model-src"
        (src / "sub").mkdir(parents=True)
        (src / "weights.bin").write_bytes(b"w" * 300)
        (src / "sub" / "config.json").write_bytes(b'{"layers": 2}')
        (src / "sub" / "empty").write_bytes(b"")
        return src

    # -- opening ---------------------------------------------------------------------------
    def test_models_store_over_a_storage_object(self, storage: Storage) -> None:
        store = ModelStore(storage)  # a Storage, as Metatree takes it
        store.upload("d", b"x", model_id="v1")
        assert Metatree(storage).keys == MODEL_KEYS

    def test_models_store_over_other_keys_is_refused(self, storage: Storage) -> None:
        other = Metatree(storage, ("a", "b"))
        with unchanged(storage):
            with pytest.raises(DatabaseError):
                ModelStore.open(other)
            with pytest.raises(DatabaseError):
                ModelStore.open(Metatree(storage))
            with pytest.raises(DatabaseError):
                ModelStore(storage)
            with pytest.raises(DatabaseError):
                ModelStore(storage.root, keys=("a", "b"))  # refused before any I/O

    # -- round trips -----------------------------------------------------------------------
    def test_models_file_round_trip_with_extras(self, store: ModelStore, work: Path) -> None:
        model = work / "clf.pkl"
        model.write_bytes(b"pickled model")
        extra = work / "metrics.json"
        extra.write_bytes(b'{"auc": 0.9}')
        record = store.upload("d", model, model_id="v1", extras=[extra])
        assert record["model"] == {
            "domain": "d",
            "model_id": "v1",
            "type": "file",
            "file": "clf.pkl",
        }
        assert record["extra"] == {"metrics.json": {"size": 12, "sha256": _sha(extra.read_bytes())}}
        out = work / "out"
        assert store.download("d", "v1", out) == str(out / "clf.pkl")
        assert _files(out) == {"clf.pkl": b"pickled model", "metrics.json": b'{"auc": 0.9}'}
        with pytest.raises(AlreadyExistsError):  # nothing is replaced unasked
            store.download("d", "v1", out)
        (out / "clf.pkl").write_bytes(b"stale")
        store.download("d", "v1", out, overwrite=True)
        assert (out / "clf.pkl").read_bytes() == b"pickled model"

    def test_models_directory_round_trip(
        self, store: ModelStore, source_dir: Path, work: Path
    ) -> None:
        record = store.upload("d", source_dir, model_id="v1")
        assert record["model"]["type"] == "archive"
        assert record["model"]["file"] == "artifacts.tar.gz"
        stored = b"".join(store.tree.get("d/v1/artifacts.tar.gz"))
        with tarfile.open(fileobj=io.BytesIO(stored)) as archive:
            info = archive.extractfile("python-info.json")
            assert info is not None
            assert isinstance(orjson.loads(info.read()), dict)
        out = work / "out"
        assert store.download("d", "v1", out) == str(out)
        got = _files(out)
        assert "python-info.json" in got
        del got["python-info.json"]
        assert got == _files(source_dir)

    def test_models_bytes_round_trip(self, store: ModelStore, work: Path) -> None:
        assert store.upload("d", b"v1 bytes", model_id="v1")["model"]["file"] == "model.bin"
        data: Any = bytearray(b"v2 bytes")  # accepted, though the hint says bytes
        record = store.upload("d", data, model_id="v2", name="w.pt")
        assert record["model"] == {"domain": "d", "model_id": "v2", "type": "bytes", "file": "w.pt"}
        assert store.download("d", "v1", work / "a") == str(work / "a" / "model.bin")
        assert (work / "a" / "model.bin").read_bytes() == b"v1 bytes"
        assert store.download("d", local_path=work / "b") == str(work / "b" / "w.pt")
        assert _files(work / "b") == {"w.pt": b"v2 bytes"}

    @pytest.mark.parametrize(
        "kind",
        [
            "bytes",
            "archive",
            "extra",
        ],
    )
    def test_models_download_verifies(
        self, store: ModelStore, storage: Storage, source_dir: Path, work: Path, kind: str
    ) -> None:
        extra = work / "notes.txt"
        extra.write_bytes(b"notes")
        source: bytes | Path = source_dir if kind == "archive" else b"model bytes"
        record = store.upload("d", source, model_id="v1", extras=[extra])
        target = "notes.txt" if kind == "extra" else record["model"]["file"]
        original = storage.read_bytes(f"d/v1/{target}")
        storage.put(b"X" + original[1:], f"d/v1/{target}")  # below the records
        out = work / "out"
        with pytest.raises(IntegrityError):
            store.download("d", "v1", out)
        assert _files(out) == {}  # a failed download leaves nothing, so it can be retried

    # -- the record ------------------------------------------------------------------------
    def test_models_record_is_stored_and_checks_out(
        self, store: ModelStore, storage: Storage
    ) -> None:
        record = store.upload("d", b"model-v1", model_id="v1", metadata={"auc": 0.5, "n": [1]})
        assert record == store.get_model_info("d", "v1") == store.get_model_info("d")
        node = store.tree.find("d/v1")
        assert {k: node.metadata[k] for k in RECORD_KEYS} == record
        assert set(node.metadata) == set(RECORD_KEYS)  # the file records stay hidden
        assert record["metadata"] == {"auc": 0.5, "n": [1]}
        assert record["storage"]["size"] == 8
        assert record["storage"]["sha256"] == _sha(storage.read_bytes("d/v1/model.bin"))
        assert record["storage"]["path"] == "d/v1/model.bin"
        assert record["storage"]["root"] == store.root
        assert record["storage"]["url"] == store.tree.url("d/v1/model.bin")
        assert record["storage"]["type"] == store.root.split("://", 1)[0]
        on_object_store = record["storage"]["type"] in ("s3", "gs", "az", "abfs")
        assert ("bucket" in record["storage"]) == on_object_store
        if on_object_store:
            assert store.root.split("://", 1)[1].startswith(record["storage"]["bucket"] + "/")
        assert set(record["code"]) >= {"runtime", "user", "created", "dependencies"}
        store.upload("d", b"model-v2", model_id="v2")
        assert store.tree.find("d/<latest>").name == "v2"
        assert b"".join(store.tree.get("d/<latest>/model.bin")) == b"model-v2"

    # -- listing ---------------------------------------------------------------------------
    def test_models_listing(self, store: ModelStore) -> None:
        for domain, model in [("fraud", "a"), ("churn", "x"), ("fraud", "b"), ("fraud", "c")]:
            store.upload(domain, model.encode(), model_id=model)
        assert store.list_domains() == ["fraud", "churn"]
        assert store.list_models("fraud") == ["c", "b", "a"]
        store.create_model_state("production")
        assert store.list_models("fraud", state="production") == []
        store.set_model_state("fraud", "a", "production")
        store.set_model_state("fraud", "c", "production")
        assert store.list_models("fraud", state="production") == ["c", "a"]
        with pytest.raises(NotFoundError):
            store.list_models("fraud", state="staging")
        with pytest.raises(NotFoundError):
            store.list_models("nope")

    # -- states ----------------------------------------------------------------------------
    def test_models_states(self, store: ModelStore, storage: Storage) -> None:
        for model in ["v1", "v2", "v3"]:
            store.upload("d", model.encode(), model_id=model)
        store.create_model_state("production")
        with unchanged(storage):
            store.create_model_state("production")  # idempotent
        store.create_model_state("archived")
        assert store.list_model_states() == ["archived", "production"]
        store.set_model_state("d", "v2", "production")
        store.set_model_state("d", "v1", "production")
        with unchanged(storage):
            store.set_model_state("d", "v1", "production")
            store.remove_model_state("d", "v3", "production")  # not in it: nothing
        domain = store.tree.find("d")
        assert domain.metadata["latest:production"] == "v2"  # the newest upload, not set
        assert store.tree.find("d/<latest:production>").name == "v2"
        store.remove_model_state("d", "v2", "production")
        assert store.tree.find("d").metadata["latest:production"] == "v1"
        store.remove_model_state("d", "v1", "production")
        assert "latest:production" not in store.tree.find("d").metadata
        assert store.list_models("d", state="production") == []
        assert store.list_model_states() == ["archived", "production"]  # the state stays

    # -- aliases ---------------------------------------------------------------------------
    def test_models_aliases(self, store: ModelStore, storage: Storage) -> None:
        for model in ["v1", "v2"]:
            store.upload("d", model.encode(), model_id=model)
        store.set_alias("d", "production", "v1", expected=None)
        assert store.get_alias("d", "production") == "v1"
        assert store.tree.find("d/<production>").name == "v1"
        with unchanged(storage):
            with pytest.raises(ConflictError):
                store.set_alias("d", "production", "v2", expected=None)
            with pytest.raises(ConflictError):
                store.set_alias("d", "production", "v2", expected="v2")
            with pytest.raises(ConflictError):
                store.remove_alias("d", "production", expected="v2")
            with pytest.raises(NotFoundError):
                store.set_alias("d", "production", "v9")
            with pytest.raises(NotFoundError):
                store.remove_alias("d", "staging")
            with pytest.raises(NotFoundError):
                store.get_alias("d", "staging")
        store.set_alias("d", "production", "v2", expected="v1")
        assert b"".join(store.tree.get("d/<production>/model.bin")) == b"v2"
        store.remove_alias("d", "production", expected="v2")
        with pytest.raises(NotFoundError):
            store.get_alias("d", "production")
        assert "production" not in store.tree.find("d").metadata
        changes = store.history("d", "production")
        assert [(c.old, c.new) for c in changes] == [(None, "v1"), ("v1", "v2"), ("v2", None)]

    def test_models_alias_over_a_user_key_is_refused(
        self, store: ModelStore, storage: Storage
    ) -> None:
        store.upload("d", b"x", model_id="v1")
        store.tree.find("d").update(owner="team-a")
        with unchanged(storage), pytest.raises(MetadataError):
            store.set_alias("d", "owner", "v1")
        assert store.tree.find("d").metadata["owner"] == "team-a"

    def test_models_alias_at_a_time(self, store: ModelStore) -> None:
        for model in ["v1", "v2"]:
            store.upload("d", model.encode(), model_id=model)
        store.set_alias("d", "production", "v1")
        store.set_alias("d", "production", "v2")
        first, second = store.history("d", "production")
        assert store.get_alias("d", "production", at=first.at) == "v1"
        assert store.get_alias("d", "production", at=second.at) == "v2"
        with pytest.raises(NotFoundError):
            store.get_alias(
                "d",
                "production",
                at=first.at - (second.at - first.at) - datetime.timedelta(seconds=1),
            )
        with pytest.raises(MetadataError):
            store.get_alias("d", "production", at=first.at.replace(tzinfo=None))

    # -- deleting --------------------------------------------------------------------------
    def test_models_delete(self, store: ModelStore, storage: Storage) -> None:
        for model in ["v1", "v2", "v3"]:
            store.upload("d", model.encode(), model_id=model)
        store.create_model_state("production")
        store.set_model_state("d", "v1", "production")
        store.set_model_state("d", "v3", "production")
        store.set_alias("d", "champion", "v3")
        seq = _hidden(storage)["seq"]
        store.delete_model("d", "v3")
        assert store.list_models("d") == ["v2", "v1"]
        metadata = store.tree.find("d").metadata
        assert metadata["latest"] == "v2"
        assert metadata["latest:production"] == "v1"
        assert "champion" not in metadata
        assert store.list_models("d", state="production") == ["v1"]
        assert not store.tree.exists("d/v3")
        assert not [f for f in storage.walk_files("d") if f.startswith("v3/")]
        new = {(c.kind, c.name, c.old, c.new) for c in store.history("d")[seq:]}
        assert new == {
            ("latest", "latest", "v3", "v2"),
            ("latest", "latest:production", "v3", "v1"),
            ("alias", "champion", "v3", None),
            ("state", "production", "v3", None),
        }
        with unchanged(storage), pytest.raises(NotFoundError):
            store.delete_model("d", "v3")
        store.delete_model("d", "v1")
        assert "latest:production" not in store.tree.find("d").metadata
        store.delete_model("d", "v2")
        assert "latest" not in store.tree.find("d").metadata
        assert store.list_models("d") == []
        with pytest.raises(NotFoundError):
            store.download("d")

    # -- history ---------------------------------------------------------------------------
    def test_models_history_is_numbered(self, store: ModelStore) -> None:
        store.upload("d", b"1", model_id="v1")
        store.upload("d", b"2", model_id="v2")
        store.set_alias("d", "production", "v1")
        store.delete_model("d", "v1")
        changes = store.history("d")
        assert [c.seq for c in changes] == list(range(len(changes)))
        assert [(c.kind, c.name, c.old, c.new) for c in changes] == [
            ("latest", "latest", None, "v1"),
            ("latest", "latest", "v1", "v2"),
            ("alias", "production", None, "v1"),
            ("alias", "production", "v1", None),
        ]
        assert all(c.at.utcoffset() is not None and c.by for c in changes)

    def test_models_history_segments(self, store: ModelStore, storage: Storage) -> None:
        """30 changes with 10 kept inline: segments hold the rest, checked when read back.

        A rewritten segment is an `IntegrityError` (its file record); a segment the metadata
        names but storage lost is a missing file, `NotFoundError`, as any recorded file gone.
        """
        store.history_inline = 10
        store.upload("d", b"1", model_id="v1")
        store.upload("d", b"2", model_id="v2")
        for i in range(28):
            store.set_alias("d", "production", "v1" if i % 2 else "v2")
        segments = _hidden(storage)["segments"]
        assert segments
        assert all(storage.kind(f"d/{s}") is not None for s in segments)
        assert len(_hidden(storage)["history"]) <= 10
        assert [c.seq for c in store.history("d")] == list(range(30))
        assert [c.new for c in store.history("d", "production")] == ["v2", "v1"] * 14
        assert [c.new for c in store.history("d", "latest")] == ["v1", "v2"]
        segment = f"d/{segments[0]}"
        stored = storage.read_bytes(segment)
        entries = orjson.loads(stored)
        entries[0]["new"] = "v9"  # a rewritten past
        storage.put(orjson.dumps(entries), segment)
        with pytest.raises(IntegrityError):
            store.history("d")
        storage.remove_file(segment)
        with pytest.raises(NotFoundError):
            store.history("d")
        assert store.get_alias("d", "production") == "v1"  # the current state still reads
        storage.put(stored, segment)
        assert len(store.history("d")) == 30
        first = store.history("d", "production")[0]  # read back from the first segment
        assert store.get_alias("d", "production", at=first.at) == first.new == "v2"
        store.delete_model("d", "v1")  # alias, latest and their entries after the segments
        changes = store.history("d")
        assert [c.seq for c in changes] == list(range(len(changes)))
        assert [(c.name, c.old, c.new) for c in changes[30:]] == [("production", "v1", None)]

    # -- metatreedb ------------------------------------------------------------------------
    def test_models_reference_reads_the_store(
        self, store: ModelStore, storage: Storage, work: Path
    ) -> None:
        """The reference, metatreedb 0.2.3, reads the store's tree: templates resolve, records read.

        The reference reads local paths only, so the stored files are copied to local disk
        first (on every backend alike): the bytes it reads are the ones this backend stored.
        """
        try:
            python = venv_python(ensure_reference_venv())
        except ReferenceUnavailable as exc:
            pytest.skip(f"the reference cannot be installed here: {exc}")
        record = store.upload("d", b"one", model_id="v1")
        store.upload("d", b"two", model_id="v2")
        store.set_alias("d", "production", "v1")
        store.create_model_state("staging")
        store.set_model_state("d", "v2", "staging")
        # metatreedb reads inline indexes only: a domain in format v2 (the suite's second run
        # logs from the second child on) is converted back first, as docs/format.md says
        Metatree(storage).reindex("d", format=1)
        copy = work / "copy" / "db"
        for rel, data in snapshot(storage).items():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_bytes(data)
        templates = ["d/<latest>", "d/<production>", "d/<latest:staging>"]
        done = subprocess.run(
            [str(python), "-I", "-c", _REFERENCE_READ, str(copy), *templates],
            cwd=work,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        read = orjson.loads(done.stdout)
        assert [read[t] for t in templates] == ["v2", "v1", "v2"]
        assert read["bytes"] == "one"
        assert {k: read["metadata"][k] for k in RECORD_KEYS} == record

    # -- bad input -------------------------------------------------------------------------
    @pytest.mark.parametrize("group", sorted(_BAD_CALLS))
    def test_models_bad_input_is_typed_and_writes_nothing(
        self, store: ModelStore, storage: Storage, work: Path, group: str
    ) -> None:
        store.upload("d", b"x", model_id="v1")
        store.create_model_state("production")
        (work / "extra.txt").write_bytes(b"e")
        before = snapshot(storage)  # one snapshot for the group: `unchanged` takes two a call
        for number, (call, error) in enumerate(_BAD_CALLS[group]):
            try:
                with pytest.raises(error):
                    call(store, work)
                assert snapshot(storage) == before, "storage changed"
            except BaseException as exc:
                exc.add_note(f"bad call {group}[{number}]")
                raise
            assert _files(work) == {"extra.txt": b"e"}  # nor anything local

    # -- hostile stored data ---------------------------------------------------------------
    def test_models_hostile_domain_metadata(
        self, store: ModelStore, storage: Storage, work: Path
    ) -> None:
        """Each plant in a domain's metadata is corrupt for every reader and writer.

        `CorruptMetadataError`, and nothing written; one setup, the stored bytes restored
        between plants.
        """
        store.upload("d", b"1", model_id="v1")
        store.upload("d", b"2", model_id="v2")
        store.set_alias("d", "production", "v1")
        original = storage.read_bytes("d/metadata.json")
        for what, plant in _HOSTILE_DOMAIN.items():
            _plant(storage, "d/metadata.json", plant)
            try:
                with unchanged(storage):
                    with pytest.raises(CorruptMetadataError):
                        store.history("d")
                    with pytest.raises(CorruptMetadataError):
                        store.list_models("d")
                    with pytest.raises(CorruptMetadataError):
                        store.set_alias("d", "production", "v2")
                    with pytest.raises(CorruptMetadataError):
                        store.upload("d", b"3", model_id="v3")
                    with pytest.raises(CorruptMetadataError):
                        store.download("d", local_path=work / "out")
                assert _files(work) == {}
            except BaseException as exc:
                exc.add_note(f"planted: {what}")
                raise
            storage.write_atomic("d/metadata.json", original)
        assert len(store.history("d")) == 3  # the plants, not the setup, were corrupt

    def test_models_hostile_root_states(self, store: ModelStore, storage: Storage) -> None:
        store.upload("d", b"1", model_id="v1")
        _plant(storage, "metadata.json", lambda m: m.update({HIDDEN: {"states": ["x"]}}))
        with unchanged(storage):
            with pytest.raises(CorruptMetadataError):
                store.list_model_states()
            with pytest.raises(CorruptMetadataError):
                store.create_model_state("production")

    def test_models_hostile_record_download_writes_nothing(
        self, store: ModelStore, storage: Storage, work: Path
    ) -> None:
        """A record naming files outside its node (or of another model) downloads nothing."""
        store.upload("d", b"1", model_id="v1")
        original = storage.read_bytes("d/v1/metadata.json")
        local = work / "a" / "b" / "out"
        for what, plant in _HOSTILE_RECORD.items():
            _plant(storage, "d/v1/metadata.json", plant)
            try:
                with unchanged(storage):
                    with pytest.raises(CorruptMetadataError):
                        store.download("d", "v1", local)
                    with pytest.raises(CorruptMetadataError):
                        store.get_model_info("d", "v1")
                assert _files(work) == {}
            except BaseException as exc:
                exc.add_note(f"planted: {what}")
                raise
            storage.write_atomic("d/v1/metadata.json", original)
        assert store.get_model_info("d", "v1")["model"]["file"] == "model.bin"

    @pytest.mark.parametrize(
        ("latest", "error"),
        [("v9", NotFoundError), ("../../x", CorruptMetadataError), (3, CorruptMetadataError)],
        ids=["missing", "traversal", "not-a-str"],
    )
    def test_models_hostile_latest_pointer(
        self,
        store: ModelStore,
        storage: Storage,
        work: Path,
        latest: object,
        error: type[Exception],
    ) -> None:
        """A ``latest`` naming no model of the domain (a hand edit, a plant) is not followed.

        A valid id the index lacks is `NotFoundError`; what is no model id at all (a path, a
        number) is `CorruptMetadataError`. Nothing is written either way.
        """
        store.upload("d", b"1", model_id="v1")
        _plant(storage, "d/metadata.json", lambda m: m.update(latest=latest))
        with unchanged(storage):
            with pytest.raises(error):
                store.get_model_info("d")
            with pytest.raises(error):
                store.download("d", local_path=work / "out")
        assert _files(work) == {}

    # -- found by the first attack round ----------------------------------------------------
    def test_models_download_of_latest_follows_a_concurrent_delete(
        self, store: ModelStore, work: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``latest`` deleted between its read and its files' reads: the next latest comes.

        The delete lands inside the download (on its first file read), as a concurrent
        process's would; the failed attempt leaves nothing, and the retry succeeds.
        """
        from metatree._core.read import get as real

        store.upload("d", b"old", model_id="v1", extras=[_extra(work, "notes.txt", b"1")])
        store.upload("d", b"new", model_id="v2", extras=[_extra(work, "notes.txt", b"2")])
        other = ModelStore.open(Metatree(store.tree.storage))
        raced: list[str] = []

        def racing(node: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            if not raced:
                raced.append(name)
                other.delete_model("d", "v2")
            return real(node, name, *args, **kwargs)

        monkeypatch.setattr("metatree.models._download.get", racing)
        path = store.download("d", local_path=work / "out")
        assert raced
        assert _files(work / "out") == {"model.bin": b"old", "notes.txt": b"1"}
        assert path == str(work / "out" / "model.bin")

    def test_models_latest_never_names_a_node_put_by_hand(
        self, store: ModelStore, storage: Storage
    ) -> None:
        """A node put into a domain by hand is no model: not listed, never ``latest``."""
        store.upload("d", b"1", model_id="v1")
        store.tree.put("d/by-hand", b"x", name="f.bin")
        store.upload("d", b"2", model_id="v2")
        assert store.list_models("d") == ["v2", "v1"]
        store.delete_model("d", "v2")
        assert store.tree.find("d").metadata["latest"] == "v1"
        assert store.get_model_info("d")["model"]["model_id"] == "v1"
        with pytest.raises(NotFoundError):
            store.delete_model("d", "by-hand")
        with pytest.raises(NotFoundError):
            store.set_alias("d", "production", "by-hand")

    def test_models_order_survives_a_reordered_index(
        self, store: ModelStore, storage: Storage
    ) -> None:
        """Metatreedb 0.2.3 rewrites an index through a set: the upload order is the store's."""
        for name in ("v1", "v2", "v3"):
            store.upload("d", name.encode(), model_id=name)
        _plant(storage, "d/metadata.json", lambda m: m.update(children=["v3", "v1", "v2"]))
        assert store.list_models("d") == ["v3", "v2", "v1"]
        store.delete_model("d", "v3")
        assert store.get_model_info("d")["model"]["model_id"] == "v2"

    def test_models_alias_of_a_model_removed_by_hand(self, store: ModelStore) -> None:
        """An alias whose model left the index (a hand remove) is not returned as a model."""
        store.upload("d", b"1", model_id="v1")
        store.upload("d", b"2", model_id="v2")
        store.set_alias("d", "production", "v1")
        store.tree.remove("d/v1", recursive=True)
        with pytest.raises(NotFoundError):
            store.get_alias("d", "production")
        assert store.list_models("d") == ["v2"]
        store.set_alias("d", "production", "v2")
        switches = [(c.old, c.new) for c in store.history("d", "production")]
        assert switches == [(None, "v1"), ("v1", None), (None, "v2")]  # dropped, as a delete does

    def test_models_extra_named_like_a_file_of_the_archive_is_refused(
        self, store: ModelStore, storage: Storage, source_dir: Path, work: Path
    ) -> None:
        """The archive is extracted beside the extras: an extra cannot take one of its names."""
        for name in ("weights.bin", "python-info.json", "SUB"):
            extra = _extra(work / "extras", name, b"e")
            with unchanged(storage), pytest.raises(AlreadyExistsError):
                store.upload("d", source_dir, extras=[extra])

    def test_models_download_targets_of_the_wrong_kind(self, store: ModelStore, work: Path) -> None:
        """A local_path that is a file, a dangling link in the way, a directory in the way."""
        store.upload("d", b"1", model_id="v1")
        (work / "file").write_bytes(b"f")
        with pytest.raises(AlreadyExistsError):
            store.download("d", local_path=work / "file")
        out = work / "out"
        out.mkdir()
        (out / "model.bin").symlink_to(work / "nowhere")
        with pytest.raises(AlreadyExistsError):
            store.download("d", local_path=out)
        (out / "model.bin").unlink()
        (out / "model.bin").mkdir()
        with pytest.raises(AlreadyExistsError):
            store.download("d", local_path=out, overwrite=True)
        assert sorted(p.name for p in out.iterdir()) == ["model.bin"]  # no temporary left

    def test_models_segment_without_record_is_corrupt(
        self, store: ModelStore, storage: Storage
    ) -> None:
        """A segment is read only against its record: without one, it is not trusted."""
        store.history_inline = 5
        store.upload("d", b"1", model_id="v1")
        for i in range(6):
            store.upload("d", b"x", model_id=f"w{i}")
        assert _hidden(storage)["segments"]
        _plant(storage, "d/metadata.json", lambda m: m.pop(RECORDS))
        with unchanged(storage), pytest.raises(CorruptMetadataError, match="record"):
            store.history("d")

    # -- found by the second attack round and the review ----------------------------------------
    def test_models_a_reused_id_starts_without_the_old_aliases_and_states(
        self, store: ModelStore
    ) -> None:
        """A model removed by hand takes its aliases and states with it, as a delete does."""
        store.create_model_state("approved")
        store.upload("d", b"reviewed", model_id="v1")
        store.set_alias("d", "production", "v1")
        store.set_model_state("d", "v1", "approved")
        store.tree.remove("d/v1", recursive=True)
        store.upload("d", b"unreviewed", model_id="v1")
        with pytest.raises(NotFoundError):
            store.get_alias("d", "production")
        assert store.list_models("d", state="approved") == []
        with pytest.raises(UnresolvedPathError):
            store.tree.find("d/<production>")
        assert [(c.old, c.new) for c in store.history("d", state="approved")] == [
            (None, "v1"),
            ("v1", None),
        ]

    def test_models_a_state_pointer_never_takes_a_user_key(
        self, store: ModelStore, storage: Storage
    ) -> None:
        """A user's own ``latest:<name>`` key is refused as a state pointer, as alias keys are."""
        store.upload("d", b"1", model_id="v1")
        store.create_model_state("reviewed")
        store.tree.find("d").update(**{"latest:reviewed": "my own value"})
        with unchanged(storage), pytest.raises(MetadataError):
            store.set_model_state("d", "v1", "reviewed")
        store.upload("d", b"2", model_id="v2")
        assert store.tree.find("d").metadata["latest:reviewed"] == "my own value"

    def test_models_a_failed_check_does_not_abort_the_callers_transaction(
        self, store: ModelStore
    ) -> None:
        """In the caller's transaction, a refused call wrote nothing: the rest still commits."""
        with store.tree.transaction():
            store.upload("d", b"1", model_id="v1")
            with pytest.raises(NotFoundError):
                store.set_alias("d", "production", "nope")
            with pytest.raises(ConflictError):
                store.set_alias("d", "production", "v1", expected="v1")
            with pytest.raises(AlreadyExistsError):
                store.upload("d", b"again", model_id="V1")
            store.set_alias("d", "production", "v1")
        assert store.get_alias("d", "production") == "v1"
        assert store.list_models("d") == ["v1"]

    def test_models_a_failed_download_leaves_nothing(
        self, store: ModelStore, storage: Storage, source_dir: Path, work: Path
    ) -> None:
        """Files placed, directories made: all taken back when a later step fails."""
        extra = _extra(work / "extras", "notes.txt", b"n")
        store.upload("d", source_dir, model_id="v1", extras=[extra])
        target = work / "out"
        (target / "sub").mkdir(parents=True)
        (target / "sub" / "config.json").write_bytes(b"mine")  # the archive cannot land
        with pytest.raises(MetatreeError):
            store.download("d", "v1", target)
        assert _files(target) == {"sub/config.json": b"mine"}  # notes.txt was taken back
        storage.put(b"X", "d/v1/notes.txt")  # a tampered extra
        deep = work / "new" / "deep" / "out"
        with pytest.raises(IntegrityError):
            store.download("d", "v1", deep)
        assert not (work / "new").exists()  # the directories it made are gone too

    def test_models_history_times_follow_a_clock_slightly_ahead_only(
        self, store: ModelStore, storage: Storage
    ) -> None:
        """Times stay in order past a writer a few minutes ahead; a far future does not spread.

        A last entry up to ten minutes ahead (another writer's clock) stamps the next change
        too, so `get_alias(at=)` reads times in order; one years ahead (a broken clock, a
        plant) is not followed: the next change gets this writer's time.
        """
        store.upload("d", b"1", model_id="v1")
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        _plant(
            storage,
            "d/metadata.json",
            lambda m: m[HIDDEN]["history"][-1].update(at=soon.isoformat(timespec="microseconds")),
        )
        store.set_alias("d", "production", "v1")
        assert store.history("d", "production")[-1].at == soon
        far = "2999-01-01T00:00:00.000000+00:00"
        _plant(storage, "d/metadata.json", lambda m: m[HIDDEN]["history"][-1].update(at=far))
        store.set_alias("d", "staging", "v1")
        now = datetime.datetime.now(datetime.UTC)
        assert store.history("d", "staging")[-1].at <= now
        assert store.get_alias("d", "staging", at=now) == "v1"  # not dragged into 2999

    def test_models_history_filters_by_kind(self, store: ModelStore) -> None:
        """An alias and a state of one name: `alias=` and `state=` keep them apart."""
        store.create_model_state("production")
        store.upload("d", b"1", model_id="v1")
        store.set_alias("d", "production", "v1")
        store.set_model_state("d", "v1", "production")
        assert [c.kind for c in store.history("d", alias="production")] == ["alias"]
        assert [c.kind for c in store.history("d", state="production")] == ["state"]
        assert [c.name for c in store.history("d", "latest:production")] == ["latest:production"]
        with pytest.raises(MetadataError):
            store.history("d", alias="production", state="production")

    def test_models_latest_naming_an_orphan_is_not_followed(
        self, store: ModelStore, storage: Storage, work: Path
    ) -> None:
        """``latest`` naming an unlisted directory (an orphan, a plant) never reads it."""
        store.upload("d", b"1", model_id="v1")
        record = storage.read_bytes("d/v1/metadata.json").replace(b'"v1"', b'"v9"')
        storage.write_atomic("d/v9/metadata.json", record)  # not in the index: an orphan
        storage.put(b"1", "d/v9/model.bin")
        _plant(storage, "d/metadata.json", lambda m: m.update(latest="v9"))
        with unchanged(storage):
            with pytest.raises(NotFoundError):
                store.get_model_info("d")
            with pytest.raises(NotFoundError):
                store.download("d", local_path=work / "out")
        assert _files(work) == {}

    def test_models_a_thread_with_a_copied_context_waits_for_the_transaction(
        self, store: ModelStore
    ) -> None:
        """A store call from ``asyncio.to_thread`` inside a transaction is not part of it.

        It waits for the lock and lands after the block, even when the block aborts; it
        used to stage into the owner's transaction without the lock, and vanish with it.
        """
        store.upload("d", b"1", model_id="v1")
        done = threading.Event()

        def upload() -> None:
            store.upload("d", b"2", model_id="t1")
            done.set()

        thread = threading.Thread()
        with contextlib.suppress(RuntimeError), store.tree.transaction():
            store.set_alias("d", "production", "v1")
            context = contextvars.copy_context()
            thread = threading.Thread(target=context.run, args=(upload,))
            thread.start()
            assert not done.wait(0.2)
            raise RuntimeError("the block aborts")
        thread.join(30)
        assert done.is_set()
        assert store.list_models("d") == ["t1", "v1"]
        with pytest.raises(NotFoundError):
            store.get_alias("d", "production")

    def test_models_download_of_latest_deleted_before_its_record_is_read(
        self, store: ModelStore, work: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Deleted between the domain's read and the version's: the retry finds the new one."""
        store.upload("d", b"old", model_id="v1")
        store.upload("d", b"new", model_id="v2")
        other = ModelStore.open(Metatree(store.tree.storage))
        chosen = store._model
        raced: list[str] = []

        def racing(domain: str, model_id: str) -> str:
            found = chosen(domain, model_id)
            if not raced:
                raced.append(found)
                other.delete_model(domain, found)
            return found

        monkeypatch.setattr(store, "_model", racing)
        path = store.download("d", local_path=work / "out")
        assert raced == ["v2"]
        assert _files(work / "out") == {"model.bin": b"old"}
        assert path == str(work / "out" / "model.bin")

    def test_models_a_domain_stored_under_an_old_rule_stays_readable(
        self, store: ModelStore, storage: Storage
    ) -> None:
        """A domain name new ids may not take (metatreedb wrote it) is still read and listed."""
        store.upload("d", b"1", model_id="v1")
        old = "fraud\ufe0f"  # a variation selector: refused in new names since issue 12
        _plant(storage, "metadata.json", lambda m: m["children"].append(old))
        storage.write_atomic(f"{old}/metadata.json", b"{}")
        assert store.list_domains() == ["d", old]
        assert store.list_models(old) == []
        with pytest.raises(NotFoundError):
            store.download(old)
        with pytest.raises(PathError):
            store.upload("fraud\u034f", b"x")  # but no new domain of that kind


def _extra(directory: Path, name: str, data: bytes) -> Path:
    """Write a local extra file `name` in `directory` (created) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path
