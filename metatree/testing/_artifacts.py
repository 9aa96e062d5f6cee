"""The artifact-store file API (issue 13): ZenML's methods, atomic writes, confinement.

Part of the conformance suite (mixed into `BackendConformance`). The store under test is
rooted at ``<db>/store`` with a sibling ``<db>/store2`` that shares its prefix (ZenML's
prefix test would let the store reach it) and a file beside both, so that `snapshot` of
the whole storage proves that a refused path read or wrote nothing anywhere.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from metatree._paths import GLOB
from metatree._storage import Storage
from metatree.artifacts import ArtifactStore
from metatree.datastore import VALUE_OF, DataStore
from metatree.errors import AlreadyExistsError, MetatreeError, NotFoundError, PathError
from metatree.testing._helpers import snapshot, unchanged

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from metatree._tree import Metatree

__all__ = ["ArtifactStoreTests", "escapes"]


def _below(storage: Storage, name: str) -> Storage:
    return Storage(storage.fs, f"{storage.root.rstrip('/')}/{name}", type(storage.backend))


def escapes(store: ArtifactStore) -> list[object]:
    """Return paths that must all be refused by `store` (rooted at ``.../store``).

    Built from the store's own URL and root so that each names the sibling ``store2``,
    another bucket, host or protocol on whatever backend runs the suite.
    """
    url, root = store.path, "/" + store.storage.root.strip("/")
    scheme, rest = url.split("://", 1)
    protocols = store.storage.fs.protocol
    other = next(p for p in ("file", "memory", "s3") if p not in protocols)
    return [
        # '..' climbing out, however spelled
        *("..", "../", "../store2/secret", "a/../../store2/secret", "a/b/../../../x"),
        # a name no filesystem stores (a builtin OSError on local disk before)
        *("a" * 300, f"ok/{'b' * 256}"),
        *("./../store2", "~/../../x", "a//..//..//store2"),
        # the sibling sharing the root's prefix, by URL and by absolute path
        *(f"{url}2/secret", f"{url}/../store2/secret", f"{url}/a/../../store2/secret"),
        *(f"{root}2/secret", f"{root}/../store2/secret", "/etc/passwd", "/"),
        # another protocol, bucket or host
        *(f"{other}:///etc/passwd", "http://example.com/x", f"{scheme}://other-bucket/secret"),
        f"{scheme}://evil.example:1/{rest.lstrip('/')}/x",
        *(f"simplecache::{url}/x", "file:/etc/passwd", "C:/x", "c:x"),
        # Windows separators, control and invisible characters, encodings of dots and slashes
        *("..\\store2", "a\\..\\..\\store2\\secret", "a\x00b", "a/\x01b", "a/b\x7f", "a/\x85"),
        *("a/\u202eb", "a/\u200bb", "a\udc80", "%2e%2e/store2/secret", "a/%2E%2e/%2e%2E/x"),
        *("a%2f..%2f..%2fstore2", "\uff0e\uff0e/store2/secret", "a\uff0f..\uff0f..", "a/b%5c.."),
        # the database's own files, at any depth and in any letter case
        *("metadata.json", "a/metadata.json", "a/METADATA.JSON", ".metatree", ".lock"),
        *("a/.metatree.tmp.1", "a/b/.MetaTree.staging.x", f"{url}/m/metadata.json"),
        # glob characters (fsspec expands them) and s3fs's version query
        *("a/*", "a/[b]", "a?versionId=1", f"{url}/x?versionId=abc"),
        # not a path at all
        *(b"store2", 7, None),
    ]


def _attempts(store: ArtifactStore, path: object) -> list[tuple[str, Callable[[], object]]]:
    """Every method of the store called with `path` where a path goes."""
    p = path  # the catalogue holds non-paths too: the store must refuse them, typed
    calls: list[tuple[str, Callable[[], object]]] = [
        ("exists", lambda: store.exists(p)),  # type: ignore[arg-type]
        ("isdir", lambda: store.isdir(p)),  # type: ignore[arg-type]
        ("open rb", lambda: store.open(p, "rb")),  # type: ignore[arg-type]
        ("open r", lambda: store.open(p, "r")),  # type: ignore[arg-type]
        ("open wb", lambda: store.open(p, "wb")),  # type: ignore[arg-type]
        ("listdir", lambda: store.listdir(p)),  # type: ignore[arg-type]
        ("makedirs", lambda: store.makedirs(p)),  # type: ignore[arg-type]
        ("mkdir", lambda: store.mkdir(p)),  # type: ignore[arg-type]
        ("remove", lambda: store.remove(p)),  # type: ignore[arg-type]
        ("rmtree", lambda: store.rmtree(p)),  # type: ignore[arg-type]
        ("stat", lambda: store.stat(p)),  # type: ignore[arg-type]
        ("size", lambda: store.size(p)),  # type: ignore[arg-type]
        ("walk", lambda: list(store.walk(p))),  # type: ignore[arg-type]
        ("copyfile from", lambda: store.copyfile(p, "ok.txt", overwrite=True)),  # type: ignore[arg-type]
        ("copyfile to", lambda: store.copyfile("ok.txt", p, overwrite=True)),  # type: ignore[arg-type]
        ("rename from", lambda: store.rename(p, "moved.txt")),  # type: ignore[arg-type]
        ("rename to", lambda: store.rename("ok.txt", p, overwrite=True)),  # type: ignore[arg-type]
    ]
    if not (isinstance(path, str) and GLOB.search(path)):  # a pattern may hold glob characters
        calls.append(("glob", lambda: store.glob(p)))  # type: ignore[arg-type]
    return calls


def _fail_while_writing(store: ArtifactStore, path: str) -> None:
    """Write half a file, then fail inside the ``with`` block (a step that raises)."""
    with store.open(path, "w") as f:
        f.write("half")
        raise RuntimeError("the step failed")


class ArtifactStoreTests:
    """ZenML's artifact-store API on every backend, confined to its root."""

    @pytest.fixture
    def artifacts(self, storage: Storage) -> ArtifactStore:
        """Return a store at ``<db>/store``, beside ``<db>/store2/secret`` and ``<db>/outside``."""
        _below(storage, "store2").write_atomic("secret", b"sibling")
        storage.write_atomic("outside", b"beside")
        return ArtifactStore(_below(storage, "store"))

    def test_artifacts_method_table(self, artifacts: ArtifactStore, storage: Storage) -> None:
        """Each of ZenML's methods does what its name says, by relative path and by URL."""
        with artifacts.open("a/b.txt", "w") as f:
            f.write("text")
        with artifacts.open(f"{artifacts.path}/a/c.bin", "wb") as f:
            f.write(b"\x00bin")
        assert storage.read_bytes("store/a/b.txt") == b"text"
        with artifacts.open("a/b.txt") as f:
            assert f.read() == "text"
        with artifacts.open("a/c.bin", "rb") as f:
            assert f.read() == b"\x00bin"
        assert artifacts.exists("a/b.txt")
        assert artifacts.exists("a")
        assert not artifacts.exists("a/nope")
        assert artifacts.isdir("a")
        assert not artifacts.isdir("a/b.txt")
        assert not artifacts.isdir("nope")
        assert artifacts.listdir("a") == ["b.txt", "c.bin"]
        assert artifacts.size("a/c.bin") == 4
        assert artifacts.stat("a/c.bin")["type"] == "file"
        assert artifacts.stat("a")["type"] == "directory"
        artifacts.copyfile("a/b.txt", "d/copy.txt")
        with pytest.raises(AlreadyExistsError):
            artifacts.copyfile("a/c.bin", "d/copy.txt")
        artifacts.copyfile("a/c.bin", "d/copy.txt", overwrite=True)
        assert storage.read_bytes("store/d/copy.txt") == b"\x00bin"
        artifacts.rename("d/copy.txt", "d/moved.txt")
        with pytest.raises(AlreadyExistsError):
            artifacts.rename("a/b.txt", "d/moved.txt")
        artifacts.rename("a/b.txt", "d/moved.txt", overwrite=True)
        assert storage.read_bytes("store/d/moved.txt") == b"text"
        assert not artifacts.exists("a/b.txt")
        assert not artifacts.exists("d/copy.txt")
        artifacts.rename("d", "e")
        assert artifacts.listdir("e") == ["moved.txt"]
        assert not artifacts.exists("d")
        assert artifacts.glob("*/*.bin") == ["a/c.bin"]
        assert artifacts.glob(f"{artifacts.path}/e/m*") == [f"{artifacts.path}/e/moved.txt"]
        assert list(artifacts.walk("")) == [
            ("", ["a", "e"], []),
            ("a", [], ["c.bin"]),
            ("e", [], ["moved.txt"]),
        ]
        assert next(iter(artifacts.walk(artifacts.path))) == (artifacts.path, ["a", "e"], [])
        assert list(artifacts.walk("nope")) == []
        assert [d for d, _, _ in artifacts.walk("", topdown=False)] == ["a", "e", ""]
        pruned = []
        for here, dirs, _ in artifacts.walk(""):
            pruned.append(here)
            dirs[:] = [d for d in dirs if d != "a"]  # os.walk's pruning, top-down
        assert pruned == ["", "e"]
        artifacts.makedirs("f/g/h")
        with artifacts.open("f/g/h/x", "wb") as f:
            f.write(b"x")
        assert artifacts.isdir("f/g")
        assert artifacts.exists("f/g/h/x")
        artifacts.remove("a/c.bin")
        with pytest.raises(NotFoundError):
            artifacts.remove("a/c.bin")
        with pytest.raises(NotFoundError):
            artifacts.remove("f")  # a directory: rmtree
        artifacts.rmtree("f")
        assert not artifacts.exists("f")
        assert not artifacts.exists("f/g/h/x")
        with pytest.raises(NotFoundError):
            artifacts.rmtree("f")
        assert storage.read_bytes("store2/secret") == b"sibling"

    def test_artifacts_directories_without_files(self, artifacts: ArtifactStore) -> None:
        """Where directories exist on their own, makedirs and mkdir create them (S3: prefixes)."""
        if not artifacts.storage.capabilities.real_directories:
            pytest.skip("directories are key prefixes here: nothing to create")
        artifacts.makedirs("x/y")
        assert artifacts.isdir("x/y")
        assert artifacts.listdir("x/y") == []
        artifacts.mkdir("x/z")
        with pytest.raises(AlreadyExistsError):
            artifacts.mkdir("x/z")
        with pytest.raises(NotFoundError):
            artifacts.mkdir("no/parent")
        assert list(artifacts.walk("x")) == [
            ("x", ["y", "z"], []),
            ("x/y", [], []),
            ("x/z", [], []),
        ]

    def test_artifacts_writes_are_atomic(self, artifacts: ArtifactStore, storage: Storage) -> None:
        """Readers see the old file until a clean close; a failed block stores nothing."""
        with artifacts.open("f.txt", "w") as f:
            f.write("old")
        reader = artifacts.open("f.txt", "rb")  # a snapshot of one version
        with artifacts.open("f.txt", "w") as f:
            f.write("new, ")
            assert storage.read_bytes("store/f.txt") == b"old"
            f.write("longer")
        assert reader.read() == b"old"
        reader.close()
        assert storage.read_bytes("store/f.txt") == b"new, longer"
        with unchanged(storage), pytest.raises(RuntimeError, match="the step failed"):
            _fail_while_writing(artifacts, "f.txt")
        unclosed = artifacts.open("g.bin", "wb")
        unclosed.write(b"never stored")
        assert not artifacts.exists("g.bin")
        with pytest.raises(TypeError):
            unclosed.write("a str in mode wb")
        del unclosed
        assert sorted(storage.walk_files("store")) == ["f.txt"]  # no temp name left behind

    def test_artifacts_refuse_escapes(self, artifacts: ArtifactStore, storage: Storage) -> None:
        """At least 30 escape attempts (55), each refused by every method, nothing read or written."""
        with artifacts.open("ok.txt", "wb") as f:
            f.write(b"ok")
        catalogue = escapes(artifacts)
        assert len(catalogue) >= 30
        before = snapshot(storage)
        accepted = []
        for path in catalogue:
            for method, call in _attempts(artifacts, path):
                try:
                    call()
                except PathError:
                    continue
                except MetatreeError as exc:  # typed, but not the refusal: the path was used
                    accepted.append((path, method, repr(exc)))
                else:
                    accepted.append((path, method, "accepted"))
        assert accepted == []
        assert snapshot(storage) == before

    def test_artifacts_refuse_planted_symlinks(
        self, artifacts: ArtifactStore, storage: Storage, tmp_path: Path
    ) -> None:
        """Where the store is this host's disk, a link leading out of the root is refused."""
        artifacts.makedirs("d")
        with artifacts.open("d/f", "wb") as f:
            f.write(b"f")
        local = artifacts.storage.abs("d")
        if not os.path.isdir(local):
            pytest.skip("stored data is not a directory of this host's filesystem")
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "key").write_bytes(b"private")
        os.symlink(outside, os.path.join(local, "link"))
        os.symlink(outside / "key", os.path.join(local, "key-link"))
        for path in ("d/link/key", "d/key-link", "d/link", "d/link/new"):
            for _, call in _attempts(artifacts, path):
                with pytest.raises(PathError, match="symbolic link"):
                    call()
        assert sorted(p.name for p in outside.iterdir()) == ["key"]
        assert (outside / "key").read_bytes() == b"private"

    def test_artifacts_over_a_tree(self, tree: Metatree, storage: Storage) -> None:
        """Over a database: node files are read and written, its own files and nodes are not."""
        tree.put("m/v1/s", b"weights", name="model.bin")
        files = ArtifactStore.of(tree)
        with files.open("m/v1/s/model.bin", "rb") as f:
            assert f.read() == b"weights"
        assert files.listdir("m/v1/s") == ["model.bin"]  # metadata.json is hidden
        assert all("metadata.json" not in f and ".metatree" not in f for _, _, f in files.walk(""))
        assert files.glob("*/*/*/*") == ["m/v1/s/model.bin"]
        with files.open("m/v1/s/notes.txt", "w") as f:
            f.write("a file beside the node's records")
        before = snapshot(storage)
        for path in ("m/v1", "m", "m/v1/s"):
            with pytest.raises(PathError):
                files.rmtree(path)
            with pytest.raises(PathError):
                files.rename(path, "elsewhere")
        for path in ("metadata.json", "m/metadata.json", ".metatree", ".lock"):
            for _, call in _attempts(files, path):
                with pytest.raises(PathError):
                    call()
        with pytest.raises(PathError):
            files.rmtree("")
        assert snapshot(storage) == before
        assert tree.find("m/v1/s").list() == ["model.bin", "notes.txt"]

    def test_artifacts_keep_files_and_directories_apart(
        self, tree: Metatree, storage: Storage
    ) -> None:
        """A file never lands where a directory is, nor below a file: on object stores too.

        An object store would take both keys (``m/v1`` and ``m/v1/...``): the node would then
        read as a file. Found by the second attack round on S3; local disk always refused.
        """
        tree.put("m/v1/s", b"weights", name="model.bin")
        files = ArtifactStore.of(tree)
        with files.open("notes.txt", "wb") as f:
            f.write(b"n")
        before = snapshot(storage)
        attempts: list[Callable[[], object]] = [
            lambda: files.open("m/v1", "wb"),
            lambda: files.open("m/v1/s/model.bin/x", "wb"),
            lambda: files.copyfile("notes.txt", "m", overwrite=True),
            lambda: files.rename("notes.txt", "m/v1", overwrite=True),
            lambda: files.makedirs("m/v1/s/model.bin/x"),
            lambda: files.makedirs("notes.txt"),
            lambda: files.mkdir("notes.txt/x"),
        ]
        for number, attempt in enumerate(attempts):
            with pytest.raises((AlreadyExistsError, NotFoundError, PathError)):
                attempt()
            assert snapshot(storage) == before, f"attempt {number} wrote"
        assert tree.find("m/v1/s").list() == ["model.bin"]

    def test_artifacts_refuse_datastore_value_files(self, tree: Metatree, storage: Storage) -> None:
        """A DataStore value's file is the field's: the file API neither replaces nor removes it.

        As `Metatree.remove` and a forced put refuse it: the field would name a changed or a
        missing file. A value file no field names any more (a killed update's leftover, its
        record still saying a DataStore put it) is left to fsck and gc, not hand edits.
        """
        tree.put("m/v1/s", b"weights", name="model.bin")
        tree.find("m/v1/s").update(cfg=DataStore(a=b"live"))
        tree.put("m/v1/s", b"old", name="cfg.b.0123abcd", info={VALUE_OF: "cfg"})
        live = next(n for n in storage.listdir("m/v1/s") if n.startswith("cfg.a."))
        files = ArtifactStore.of(tree)
        with files.open("m/v1/s/notes.txt", "w") as f:
            f.write("n")
        before = snapshot(storage)
        for name in (live, "cfg.b.0123abcd"):
            value = f"m/v1/s/{name}"
            for attempt in (
                lambda value=value: files.open(value, "wb"),
                lambda value=value: files.copyfile("m/v1/s/notes.txt", value, overwrite=True),
                lambda value=value: files.remove(value),
                lambda value=value: files.rename(value, "m/v1/s/moved"),
                lambda value=value: files.rename("m/v1/s/notes.txt", value, overwrite=True),
            ):
                with pytest.raises((PathError, NotFoundError)):
                    attempt()
        assert snapshot(storage) == before  # one walk for all (each is a listing on S3)
        assert tree.find("m/v1/s").metadata["cfg"]["a"] == b"live"
        storage.remove_file(f"m/v1/s/{live}")  # lost: a put must not plant the field's value
        with pytest.raises(PathError):
            files.open(f"m/v1/s/{live}", "wb")
        with pytest.raises(PathError):
            tree.put("m/v1/s", b"planted", name=live)
        files.makedirs("m/v1/s/dir")
        with files.open("m/v1/s/dir/x", "w") as f:
            f.write("x")
        for below in (  # nor anything below its name (read as the value's directory)
            lambda: files.rename("m/v1/s/dir", f"m/v1/s/{live}"),
            lambda: files.makedirs(f"m/v1/s/{live}/sub"),
            lambda: files.mkdir(f"m/v1/s/{live}"),
            lambda: files.open(f"m/v1/s/{live}/inner", "wb"),
            lambda: files.copyfile("m/v1/s/notes.txt", f"m/v1/s/{live}/c"),
        ):
            with pytest.raises(PathError):
                below()
        assert storage.kind(f"m/v1/s/{live}") is None
        files.remove("m/v1/s/model.bin")  # a plain file of the node: the API's to change
        assert tree.fsck().findings  # recorded, now missing: what fsck reports
