"""The bad-input catalogue: every refused input, its typed error, and proof nothing was written.

DESIGN.md invariants 4 and 5 promise that a location that could leave the root, a reserved or
malformed name, and metadata that would not round-trip are refused with a clear typed error,
and that nothing is written. A refusal that writes first (a stored file, a temp file, a new
directory, an index rewrite) leaves orphans behind, so every row checks three things: the exact
error class, the builtin that callers already catch (``ValueError``, ``FileNotFoundError``,
``FileExistsError``), and that the storage is byte-for-byte (and directory-for-directory)
unchanged. There is one parametrized test per API call, so the catalogue reads as a table of
``(input, expected error, id)`` rows and runs on every backend.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from metatree import Metatree
from metatree._core import open as open_module
from metatree._links import has_links
from metatree._names import CONFIG_FILE
from metatree.errors import (
    AlreadyExistsError,
    CorruptDatabaseError,
    CorruptMetadataError,
    DatabaseError,
    MetadataError,
    MetatreeError,
    NotFoundError,
    PathError,
    TemplateSyntaxError,
    UnresolvedPathError,
)
from metatree.testing._helpers import unchanged

if TYPE_CHECKING:
    from metatree import Node
    from metatree._storage import Storage

__all__ = ["BadInputTests"]

KEYS = ("model", "version", "stage")
# Metadata of node "m": placeholders resolve from it, most of them to something that is no name.
META: dict[str, Any] = {
    "active": "v1", "gone": "v9", "num": 3, "bad": "a/b", "empty": "", "dotdot": "..",
    "lst": ["v1"], "none": None, "reserved": "metadata.json",
}  # fmt: skip
_BUILTIN: dict[type[MetatreeError], type[Exception]] = {
    NotFoundError: FileNotFoundError,
    AlreadyExistsError: FileExistsError,
}
P, T, U = PathError, TemplateSyntaxError, UnresolvedPathError
NF, AE, MD = NotFoundError, AlreadyExistsError, MetadataError


def row(*values: Any, id: str) -> Any:
    """One row of a table: the call's inputs, then the expected error class."""
    return pytest.param(*values, id=id)


def _nested(depth: int) -> list[Any]:
    """Return lists nested `depth` deep."""
    return [_nested(depth - 1)] if depth else []


def _layout(storage: Storage) -> list[str]:
    """Every file and directory below the root: a failed call must not leave an empty one."""
    return sorted(storage.fs.find(storage.root, withdirs=True))


def _drain(result: object) -> None:
    """Read what `get` returns: an error raised while iterating counts too."""
    if isinstance(result, Iterator):
        b"".join(result)


def refused(storage: Storage, error: type[MetatreeError], call: Callable[[], object]) -> None:
    """Assert that `call` raises exactly `error` and changes nothing in the storage."""
    layout = _layout(storage)
    with unchanged(storage), pytest.raises(error) as info:
        _drain(call())
    assert type(info.value) is error, f"{type(info.value).__name__} instead of {error.__name__}"
    assert isinstance(info.value, _BUILTIN.get(error, ValueError))
    assert _layout(storage) == layout, "a directory was created or removed"


# -- the tables ---------------------------------------------------------------------------------
LOCATIONS = [  # find(location): nothing outside the tree's levels, no escaping names
    row("m/../m", P, id="dotdot-inside"), row("..", P, id="dotdot"), row("m/.", P, id="dot"),
    row("/m", P, id="absolute"), row("m//v1", P, id="empty-segment"),
    row("m/v1/s/x", P, id="too-many-levels"), row("<active", T, id="unmatched-open"),
    row("active>", T, id="unmatched-close"), row("m/a<b>", T, id="placeholder-inside-name"),
    row("m/<>", T, id="empty-placeholder"), row("m/<<a>>", T, id="nested-placeholder"),
    row("m/<nope>", U, id="placeholder-missing-key"), row("m/<num>", U, id="placeholder-int"),
    row("m/<bad>", U, id="placeholder-slash"), row("m/<dotdot>", U, id="placeholder-dotdot"),
    row("m/<empty>", U, id="placeholder-empty"), row("m/<lst>", U, id="placeholder-list"),
    row("m/<none>", U, id="placeholder-none"), row("m/<reserved>", U, id="placeholder-reserved"),
    row("m/<gone>", NF, id="placeholder-to-missing-node"), row("m/v9", NF, id="missing-node"),
    row("m/v1/f", NF, id="file-as-node"), row("metadata.json", P, id="reserved-metadata"),
    row(".metatree", P, id="reserved-config"), row("m/.lock", P, id="reserved-lock"),
    row("m/.metatree.tmp.x", P, id="reserved-temp"), row("m\x00", P, id="nul"),
    row("m\n", P, id="newline"), row("m\x1b", P, id="escape"), row("m\x7f", P, id="del"),
    row("m\\v1", P, id="backslash"), row("m*", P, id="glob-star"), row("m?", P, id="glob-query"),
    row("m[0]", P, id="glob-bracket"), row("x" * 256, P, id="256-bytes"),
    row("é" * 128, P, id="256-utf8-bytes"), row("\ud800", P, id="lone-surrogate"),
    row({"model": "/m"}, P, id="dict-absolute"), row({"model": "m/v1"}, P, id="dict-slash"),
    row({"model": ".."}, P, id="dict-dotdot"), row({"model": ""}, P, id="dict-empty"),
    row({"foo": "m"}, P, id="dict-unknown-level"), row({"version": "v1"}, P, id="dict-gap"),
    row({"model": {"foo": 1}}, P, id="dict-bad-spec"), row({"model": 1}, P, id="dict-int"),
    row({"model": {"value": None}}, P, id="dict-value-none"), row({1: "m"}, P, id="dict-int-key"),
    row({"model": {"value": "m", "metadata": "a"}}, P, id="dict-two-specs"),
    row({"model": "m", "version": {"metadata": "a<b"}}, T, id="dict-bad-metadata-key"),
    row({"model": "m", "version": {"metadata": "bad"}}, U, id="dict-metadata-slash"),
    row(3, P, id="int"), row(None, P, id="none"), row(["m"], P, id="list"),
    row(b"m", P, id="bytes"),
]  # fmt: skip
EXISTS = [  # exists(location): a malformed location still raises
    row("m/../x", P, id="dotdot"), row("/m", P, id="absolute"), row("m//v1", P, id="empty"),
    row("m/v1/s/f/x", P, id="too-many-levels"), row("<active", T, id="unmatched"),
    row("metadata.json", P, id="reserved"), row("m\x00", P, id="nul"), row(3, P, id="int"),
]  # fmt: skip
PUTS = [  # put(location, source, **kwargs); sources are made by `_source`
    row("m/../x", "bytes", {"name": "f"}, P, id="dotdot"),
    row("/m", "bytes", {"name": "f"}, P, id="absolute"),
    row("m//v1", "bytes", {"name": "f"}, P, id="empty-segment"),
    row("m/v1/s/x", "bytes", {"name": "f"}, P, id="too-many-levels"),
    row("m<", "bytes", {"name": "f"}, T, id="unmatched"),
    row("m/<nope>", "bytes", {"name": "f"}, U, id="placeholder-missing-key"),
    row("m/<bad>", "bytes", {"name": "f"}, U, id="placeholder-slash"),
    row("m/<num>", "bytes", {"name": "f"}, U, id="placeholder-int"),
    row("new/<active>", "bytes", {"name": "f"}, U, id="placeholder-in-new-node"),
    row("m/v2/<active>", "bytes", {"name": "f"}, U, id="placeholder-in-new-child"),
    row("metadata.json", "bytes", {"name": "f"}, P, id="reserved-node"),
    row("m/.lock", "bytes", {"name": "f"}, P, id="reserved-node-lock"),
    row("m/x\x01", "bytes", {"name": "f"}, P, id="control-char-node"),
    row({"version": "v1"}, "bytes", {"name": "f"}, P, id="dict-gap"),
    row({"model": "m/v1"}, "bytes", {"name": "f"}, P, id="dict-slash"),
    row(3, "bytes", {"name": "f"}, P, id="int-location"),
    row(None, "bytes", {"name": "f"}, P, id="none-location"),
    row(["m"], "bytes", {"name": "f"}, P, id="list-location"),
    row("m/v1", "bytes", {"name": "metadata.json"}, P, id="name-metadata"),
    row("m/v1", "bytes", {"name": ".metatree"}, P, id="name-config"),
    row("m/v1", "bytes", {"name": ".lock"}, P, id="name-lock"),
    row("m/v1", "bytes", {"name": ".metatree.tmp.x"}, P, id="name-temp"),
    row("m/v1", "bytes", {"name": ".."}, P, id="name-dotdot"),
    row("m/v1", "bytes", {"name": "a/b"}, P, id="name-slash"),
    row("m/v1", "bytes", {"name": ""}, P, id="name-empty"),
    row("m/v1", "bytes", {"name": "a*"}, P, id="name-glob"),
    row("m/v1", "bytes", {"name": "x" * 256}, P, id="name-256-bytes"),
    row("m/v1", "bytes", {"name": "\ud800"}, P, id="name-lone-surrogate"),
    row("m/v1", "bytes", {"name": 3}, P, id="name-int"),
    row("m/v1", "reserved", {}, P, id="local-file-named-metadata-json"),
    row("m/v1", "missing", {}, NF, id="missing-local-file"),
    row("m/v1", "dir", {}, P, id="directory-without-recursive"),
    row("m/v1", "bytes", {}, P, id="bytes-without-name"),
    row("m/v1", "fileobj", {}, P, id="fileobj-without-name"),
    row("m/v1", "int", {"name": "f"}, P, id="unsupported-type"),
    row("m/v1", "bytes", {"name": "f"}, AE, id="existing-file"),
    row("m/v1/s", "sample", {}, AE, id="existing-local-name"),
    row("m/v1", "dir", {"recursive": True}, AE, id="existing-directory"),
    row("m/v1", "bytes", {"name": "ckpt", "force": True}, AE, id="over-directory-no-recursive"),
    row("m", "bytes", {"name": "v1"}, AE, id="named-like-child"),
    row("m", "bytes", {"name": "v1", "force": True}, AE, id="named-like-child-force"),
    row("m/v1", "text", {"name": "g"}, P, id="text-mode-file-object"),
    row("m/v3/s", "text", {"name": "g"}, P, id="text-mode-file-object-new-nodes"),
    row("m/v1", "dir-glob", {"recursive": True}, P, id="directory-holding-a-glob-name"),
    row("m/v1", "dir-reserved", {"recursive": True}, P, id="directory-holding-metadata-json"),
    row("m/v1", "dir-empty", {"recursive": True}, P, id="empty-directory"),
    row("m/v3", "dir-empty", {"recursive": True}, P, id="empty-directory-new-node"),
]
GETS = [  # get("node/location/file")
    row("m/v1/nope", NF, id="missing-file"), row("m/v9/f", NF, id="missing-node"),
    row("m/v1", NF, id="node-as-file"), row("m/v1/ckpt", NF, id="directory-as-file"),
    row("m/v1/s/metadata.json", P, id="reserved-metadata"), row(".metatree", P, id="config"),
    row("m/v1/.lock", P, id="reserved-lock"), row("m/../m/v1/f", P, id="dotdot"),
    row("/m/v1/f", P, id="absolute"), row("m//f", P, id="empty-segment"),
    row("m/v1/s/x/f", P, id="too-many-levels"), row("", P, id="no-file-name"),
    row("m/v1/<nope>", U, id="file-placeholder-missing"), row("m/<bad>/f", U, id="slash-value"),
    row("m/a<b/f", T, id="unmatched"), row("m/v1/f\x00", P, id="nul"),
    row("m/v1/f*", P, id="glob"), row(3, P, id="int"),
]  # fmt: skip
NODE_GETS = [  # find("m/v1").get(file)
    row("nope", NF, id="missing-file"), row("s", NF, id="child-node"),
    row("ckpt", NF, id="directory"), row("a/b", P, id="path"), row("..", P, id="dotdot"),
    row(".", P, id="dot"), row("", P, id="empty"), row("metadata.json", P, id="reserved"),
    row(".metatree.tmp.x", P, id="temp"), row("<nope>", U, id="placeholder-missing"),
    row("<f", T, id="unmatched"), row("f\n", P, id="newline"), row(3, P, id="int"),
]  # fmt: skip
UPDATES = [  # find("m").update(**metadata)
    row({"children": []}, id="children"), row({"": 1}, id="empty-key"),
    row({"\ud800": 1}, id="lone-surrogate-key"), row({"s": {1}}, id="set"),
    row({"o": object()}, id="object"), row({"b": b"x"}, id="bytes"),
    row({"b": bytearray(b"x")}, id="bytearray"), row({"t": (1, 2)}, id="tuple"),
    row({"d": dt.datetime(2024, 1, 1)}, id="datetime"), row({"c": 1j}, id="complex"),
    row({"p": Path("x")}, id="path"), row({"n": float("nan")}, id="nan"),
    row({"n": float("inf")}, id="inf"), row({"n": float("-inf")}, id="-inf"),
    row({"n": 2**64}, id="int-over-64-bits"), row({"n": -(2**63) - 1}, id="int-under-64-bits"),
    row({"d": {1: "a"}}, id="non-str-dict-key"), row({"d": {"\udcff": 1}}, id="surrogate-dict-key"),
    row({"s": "\ud800"}, id="lone-surrogate"), row({"l": [1, float("nan")]}, id="nested-nan"),
    row({"d": {"k": {2, 3}}}, id="nested-set"), row({"deep": _nested(102)}, id="too-deep"),
]  # fmt: skip
REMOVES = [  # remove(location)
    row("", P, id="root"), row("/", P, id="root-slash"), row("m", P, id="non-empty-node"),
    row("m/v1/ckpt", P, id="directory"), row("m/v1/nope", NF, id="missing-file"),
    row("m/v9", NF, id="missing-node"), row("m/../m", P, id="dotdot"), row("/m", P, id="absolute"),
    row("m//v1", P, id="empty-segment"), row("m/<nope>", U, id="placeholder-missing"),
    row("metadata.json", P, id="reserved"), row("m/v1/.lock", P, id="reserved-lock"),
    row("m/v1/s/trained.pkl/x", P, id="too-many-levels"), row(3, P, id="int"),
]  # fmt: skip
BAD_KEYS = [  # Metatree(empty storage, keys)
    row("model", id="str"), row((), id="empty"), row(("a", "a"), id="duplicates"),
    row(("a", 1), id="non-str"), row(("a", ""), id="empty-key"), row(3, id="int"),
    row(None, id="none-without-database"),
]  # fmt: skip
BAD_CONFIGS = [  # a .metatree that does not describe a database
    row(b"", id="empty"), row(b"{", id="not-json"), row(b"[]", id="not-object"),
    row(b'{"keys": []}', id="no-keys"), row(b'{"keys": "model"}', id="str-keys"),
    row(b'{"keys": ["a"], "format": 2}', id="future-format"),
    row(b'{"keys": ["a"], "format": null}', id="null-format"),
    row(b'{"keys": ["a"], "format": true}', id="bool-format"),  # true == 1: not a version
    row(b'{"keys": ["a"], "format": 1.0}', id="float-format"),
]  # fmt: skip
CORRUPT_OPS: dict[str, Callable[[Metatree, Node], object]] = {
    "find": lambda tree, node: tree.find("m/v1"),
    "put": lambda tree, node: tree.put("m/v2", b"x", name="f"),
    "update": lambda tree, node: node.update(a=1),
    "get": lambda tree, node: tree.get("m/v1/f"),
    "exists": lambda tree, node: tree.exists("m/v1/f"),
    "remove": lambda tree, node: tree.remove("m/v1/f"),
}


def _make_sources(tmp_path: Path) -> None:
    """Create the local files the tables name: a directory and a file named metadata.json."""
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    (tmp_path / "ckpt" / "a.txt").write_bytes(b"A")
    (tmp_path / "metadata.json").write_bytes(b"{}")
    (tmp_path / "trained.pkl").write_bytes(b"weights-v1")
    for folder, bad in (("globdir", "a[1]"), ("reserveddir", "metadata.json")):
        (tmp_path / folder / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "ok.txt").write_bytes(b"ok")
        (tmp_path / folder / "sub" / bad).write_bytes(b"bad")
    (tmp_path / "emptydir").mkdir(exist_ok=True)


def _source(kind: str, tmp_path: Path) -> Any:
    """Return the `put` source a table row names, creating the local files in `tmp_path`."""
    _make_sources(tmp_path)
    return {
        "bytes": b"x",
        "fileobj": io.BytesIO(b"x"),
        "int": 3,
        "sample": tmp_path / "trained.pkl",
        "missing": tmp_path / "missing.bin",
        "dir": tmp_path / "ckpt",
        "reserved": tmp_path / "metadata.json",
        "text": io.StringIO("x"),
        "dir-glob": tmp_path / "globdir",
        "dir-reserved": tmp_path / "reserveddir",
        "dir-empty": tmp_path / "emptydir",
    }[kind]


_SHARED: dict[type, Metatree] = {}


class BadInputTests:
    """Bad input gets a typed error and leaves the storage byte-for-byte unchanged."""

    @pytest.fixture
    def populated(self, tree: Metatree, sample: Path, tmp_path: Path) -> Metatree:
        """m/v1/s holds trained.pkl, m/v1 holds f and the directory ckpt, m has `META`."""
        _make_sources(tmp_path)
        tree.put("m/v1/s", sample)
        tree.put("m/v1", b"x", name="f")
        tree.put("m/v1", tmp_path / "ckpt", recursive=True)
        tree.find("m").update(**META)
        return tree

    @pytest.fixture
    def shared(self, request: pytest.FixtureRequest) -> Metatree:
        """Return a `populated` tree built once per test class, for cases that must not write.

        Every case proves that it left the storage unchanged, so the next case can start from
        the same tree; remote backends would otherwise spend most of the catalogue's time
        rebuilding it. It is rebuilt when its storage is gone (memory roots are removed
        after each test).
        """
        cached = _SHARED.get(type(self))
        if cached is not None and cached.storage.kind(CONFIG_FILE) == "file":
            return cached
        tree: Metatree = request.getfixturevalue("populated")
        _SHARED[type(self)] = tree
        return tree

    @pytest.mark.parametrize(("location", "error"), LOCATIONS)
    def test_find(self, shared: Metatree, location: Any, error: type[MetatreeError]) -> None:
        """`find` refuses locations that are malformed or do not resolve."""
        refused(shared.storage, error, lambda: shared.find(location))

    @pytest.mark.parametrize(("location", "error"), EXISTS)
    def test_exists(self, shared: Metatree, location: Any, error: type[MetatreeError]) -> None:
        """`exists` answers False for what is missing, but a malformed location raises."""
        refused(shared.storage, error, lambda: shared.exists(location))

    @pytest.mark.parametrize(("location", "source", "kwargs", "error"), PUTS)
    def test_put(
        self,
        shared: Metatree,
        tmp_path: Path,
        location: Any,
        source: str,
        kwargs: dict[str, Any],
        error: type[MetatreeError],
    ) -> None:
        """`put` checks location, source, name and target before storing anything."""
        refused(
            shared.storage, error, lambda: shared.put(location, _source(source, tmp_path), **kwargs)
        )

    @pytest.mark.parametrize(("location", "error"), GETS)
    def test_get(self, shared: Metatree, location: Any, error: type[MetatreeError]) -> None:
        """`get` refuses malformed file locations and raises NotFoundError for missing ones."""
        refused(shared.storage, error, lambda: shared.get(location))

    @pytest.mark.parametrize(("file", "error"), NODE_GETS)
    def test_node_get(self, shared: Metatree, file: Any, error: type[MetatreeError]) -> None:
        """`Node.get` takes one file name (or ``<key>``) of its own node."""
        node = shared.find("m/v1")
        refused(shared.storage, error, lambda: node.get(file))

    @pytest.mark.parametrize("via", ["tree", "node"])
    def test_get_to_existing_outfile(self, shared: Metatree, tmp_path: Path, via: str) -> None:
        """A download never overwrites a local file."""
        out = tmp_path / "out.bin"
        out.write_bytes(b"mine")
        node = shared.find("m/v1")
        if via == "tree":
            refused(shared.storage, AE, lambda: shared.get("m/v1/f", out))
        else:
            refused(shared.storage, AE, lambda: node.get("f", str(out)))
        assert out.read_bytes() == b"mine"

    @pytest.mark.parametrize("metadata", UPDATES)
    @pytest.mark.parametrize("node", ["", "m"])
    def test_update(self, shared: Metatree, node: str, metadata: dict[str, Any]) -> None:
        """`update` refuses the index, empty updates and values that do not round-trip."""
        handle = shared.find(node)
        refused(shared.storage, MetadataError, lambda: handle.update(**metadata))

    @pytest.mark.parametrize(("location", "error"), REMOVES)
    def test_remove(self, shared: Metatree, location: Any, error: type[MetatreeError]) -> None:
        """`remove` never removes the root, a non-empty node by accident, or a missing path."""
        refused(shared.storage, error, lambda: shared.remove(location))

    @pytest.mark.parametrize("keys", BAD_KEYS)
    def test_open_bad_keys(self, storage: Storage, keys: Any) -> None:
        """Keys are a non-empty tuple of distinct, non-empty str."""
        refused(storage, DatabaseError, lambda: Metatree(storage, keys))

    @pytest.mark.parametrize("config", BAD_CONFIGS)
    def test_open_bad_config(self, storage: Storage, config: bytes) -> None:
        """A .metatree that does not parse is damage (exit 5), with or without keys, and kept.

        One of another format version is not damage: a plain `DatabaseError` (exit 2).
        """
        storage.write_atomic(".metatree", config)
        error = DatabaseError if b'"format": 2' in config else CorruptDatabaseError
        refused(storage, error, lambda: Metatree(storage))
        refused(storage, error, lambda: Metatree(storage, KEYS))

    def test_open_config_too_big_or_not_a_file(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A config over the bound is not read whole; a FIFO (local disk) never blocks: exit 5."""
        monkeypatch.setattr(open_module, "MAX_CONFIG", 64)
        storage.write_atomic(".metatree", b'{"keys": ["a"], "pad": "' + b"x" * 64 + b'"}')
        refused(storage, CorruptDatabaseError, lambda: Metatree(storage))
        if not has_links(storage):  # stored data on this host's filesystem: a FIFO can be made
            return
        storage.remove_file(".metatree")
        os.mkfifo(Path(storage.root, ".metatree"))
        with pytest.raises(CorruptDatabaseError, match="not a regular file"):
            Metatree(storage)

    def test_open_unrelated_data(self, storage: Storage) -> None:
        """A root holding other data is not turned into a database."""
        storage.write_atomic("x.txt", b"someone else's")
        refused(storage, DatabaseError, lambda: Metatree(storage, KEYS))

    def test_open_create_false(self, storage: Storage) -> None:
        """create=False on an empty root creates nothing."""
        refused(storage, DatabaseError, lambda: Metatree(storage, KEYS, create=False))

    @pytest.mark.parametrize("keys", [("a", "b"), KEYS[:2], (*KEYS, "extra"), KEYS[::-1]], ids=str)
    def test_reopen_with_other_keys(
        self, populated: Metatree, storage: Storage, keys: tuple[str, ...]
    ) -> None:
        """Reopening with other keys than the stored ones is refused."""
        refused(storage, DatabaseError, lambda: Metatree(storage, keys))

    @pytest.mark.parametrize("op", sorted(CORRUPT_OPS))
    @pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"children": "v1"}'], ids=repr)
    @pytest.mark.parametrize("node", ["", "m"], ids=["root", "m"])
    def test_corrupt_metadata(
        self, populated: Metatree, storage: Storage, node: str, garbage: bytes, op: str
    ) -> None:
        """A metadata.json that does not parse is an error, never read as ``{}``."""
        handle = populated.find(node)
        storage.write_atomic(f"{node}/metadata.json".lstrip("/"), garbage)
        refused(storage, CorruptMetadataError, lambda: CORRUPT_OPS[op](populated, handle))


# Base classes are not pytest keywords, but a test function's attributes are: this makes
# ``-k BadInput`` select the catalogue inside any backend's test class.
for _name, _test in vars(BadInputTests).items():
    if _name.startswith("test_"):
        _test.BadInput = True
