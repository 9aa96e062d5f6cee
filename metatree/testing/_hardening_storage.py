"""Hostile roots and stored names, recursive puts and gets, removal order, argument checks (issue 9).

Part of the conformance suite (mixed into `BackendConformance`): every test runs on every
backend, and skips itself only when the backend lacks a capability it needs (or, for planted
hostile names, when the backend cannot hold the name at all: then that attack cannot happen).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from fsspec.callbacks import Callback

from metatree import Metatree
from metatree._core.index import INDEX_DIR, INDEX_KEY
from metatree._storage import Storage, as_storage
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptMetadataError,
    DatabaseError,
    MetatreeError,
    NotFoundError,
    PathError,
)
from metatree.testing._bad_input import refused
from metatree.testing._helpers import snapshot

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["StorageHardeningTests"]

KEYS = ("model", "version", "stage")
GLOB_CHARS = ["[", "]", "*", "?"]
# stored names that cannot become one local path component; "../.." is the zip-slip itself
HOSTILE_STORED = {"dotdot": "../../escape.txt", "backslash": "a\\b/x", "del-char": "a\x7fb/x"}
BAD_LOCAL_NAMES = ["a[1]", "b*", "c?", "metadata.json", ".metatree.x", ".lock", "d\x01"]


class _Boom(Exception):
    """The failure injected midway through an operation."""


class _FailAfter(Callback):  # type: ignore[misc]  # fsspec is untyped
    """A progress callback that raises once `files` uploads have started: a failure midway."""

    def __init__(self, files: int) -> None:
        super().__init__()
        self.left = files

    def set_size(self, size: int) -> None:
        """Count a file starting (sized sources), failing past the limit."""
        self.left -= 1
        if self.left < 0:
            raise _Boom("injected failure")

    def relative_update(self, inc: int = 1) -> None:
        """Progress is also a place to fail, for sources whose size is not told."""


def _hidden(storage: Storage) -> list[str]:
    """Return stored system leftovers (staging, trash, temp): a clean run leaves none."""
    return [p for p in storage.walk_files("") if ".metatree." in p]


def _make_dir(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _download(tree: Metatree, location: str, out: Path) -> dict[str, bytes]:
    tree.get(location, out, recursive=True)
    return {
        str(p.relative_to(out)).replace(os.sep, "/"): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


class StorageHardeningTests:
    """Hostile roots and stored names, recursive puts and gets, removal order, argument checks (issue 9)."""

    # -- item 1: glob characters never reach a globbing call -----------------------------
    @pytest.mark.parametrize("char", GLOB_CHARS)
    def test_root_with_glob_characters_is_refused(self, storage: Storage, char: str) -> None:
        """``data[12]`` would make fsspec's rm/find/glob reach data1 and data2."""
        root = storage.abs(f"data{char}12{char}")
        with pytest.raises(DatabaseError, match="glob"):
            Metatree(root, KEYS, fs=storage.fs)
        with pytest.raises(DatabaseError, match="glob"):
            as_storage(Storage(storage.fs, root))
        assert snapshot(storage) == {}

    def test_unknown_protocol_is_a_database_error(self) -> None:
        """An unknown protocol is a typed error naming it (fsspec raised a bare ValueError)."""
        with pytest.raises(DatabaseError, match="nosuchproto"):
            Metatree("nosuchproto://bucket/db", KEYS)

    def test_primitives_take_glob_characters_literally(self, storage: Storage) -> None:
        """remove_tree / remove_file / walk_files of ``data[12]`` touch that name only."""
        for folder in ("data1", "data2", "data[12]", "data*"):
            storage.write_atomic(f"{folder}/m/f", folder.encode())
            storage.write_atomic(f"{folder}/m/metadata.json", b"{}")
        assert sorted(storage.walk_files("data[12]")) == ["m/f", "m/metadata.json"]
        storage.remove_file("data*/m/f")
        storage.remove_tree("data[12]/m")
        assert sorted(storage.walk_files("")) == [
            "data*/m/metadata.json",
            "data1/m/f",
            "data1/m/metadata.json",
            "data2/m/f",
            "data2/m/metadata.json",
        ]
        assert _hidden(storage) == []

    def test_remove_deletes_planted_glob_names(self, tree: Metatree, storage: Storage) -> None:
        """A stored ``a[1]`` (planted, or from an old client) goes with its node, literally."""
        tree.put("m/v1", b"x", name="a1")
        storage.write_atomic("m/v1/a[1]", b"planted")
        storage.write_atomic("m/v1/sub/b*", b"planted")
        storage.write_atomic("m/v2/a1", b"neighbour")  # an unlisted sibling a glob could hit
        tree.remove("m/v1", recursive=True)
        left = sorted(p for p in storage.walk_files("") if p.startswith("m/"))
        assert left == ["m/metadata.json", "m/v2/a1"]
        tree.put("m/v1", b"new", name="g")
        assert tree.find("m/v1").list() == ["g"]

    @pytest.mark.parametrize("bad", BAD_LOCAL_NAMES, ids=repr)
    @pytest.mark.parametrize("node", ["m/v1", "m/v2"], ids=["existing-node", "new-node"])
    def test_recursive_put_validates_every_local_name(
        self, tree: Metatree, tmp_path: Path, bad: str, node: str
    ) -> None:
        """A bad name deep in the directory refuses the whole put, naming the local file."""
        tree.put("m/v1", b"x", name="f")
        src = _make_dir(tmp_path / "ckpt", {"a.txt": b"A", "sub/ok.txt": b"B"})
        (src / "sub" / bad).write_bytes(b"bad")
        refused(tree.storage, PathError, lambda: tree.put(node, src, recursive=True))
        with pytest.raises(PathError) as info:
            tree.put(node, src, recursive=True)
        assert info.value.location == str(src / "sub" / bad)

    # -- item 2: zip-slip through a recursive get ----------------------------------------
    @pytest.mark.parametrize("hostile", list(HOSTILE_STORED.values()), ids=list(HOSTILE_STORED))
    def test_recursive_get_refuses_hostile_stored_names(
        self, tree: Metatree, storage: Storage, tmp_path: Path, hostile: str
    ) -> None:
        """A planted name that would leave the download directory refuses the whole get."""
        tree.put("m/v1", _make_dir(tmp_path / "ckpt", {"a.txt": b"A"}), recursive=True)
        planted = storage.abs(f"m/v1/ckpt/{hostile}")
        try:
            storage.fs.makedirs(planted.rsplit("/", 1)[0], exist_ok=True)
            storage.fs.pipe_file(planted, b"evil")
        except Exception as exc:  # noqa: BLE001 - the store refuses the name: nothing to refuse
            # Azure: the HTTP client resolves ``..`` in the URL it signed, and the service
            # refuses the signature; a blob of that name cannot be made
            pytest.skip(f"this backend cannot hold a stored name {hostile!r} ({exc!r:.80})")
        first = hostile.split("/")[0]
        if first not in storage.listdir("m/v1/ckpt"):
            pytest.skip(f"this backend cannot hold a stored name {first!r}")
        out_parent = tmp_path / "downloads"
        out_parent.mkdir()
        with pytest.raises(PathError, match="cannot be downloaded") as info:
            tree.get("m/v1/ckpt", out_parent / "dl", recursive=True)
        assert "m/v1/ckpt/" in str(info.value)
        assert list(out_parent.iterdir()) == []  # no download, no partial directory
        assert not (tmp_path / "escape.txt").exists()

    def test_recursive_get_refuses_a_name_both_file_and_directory(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        """An object store may hold a key ``a`` and keys below ``a/``: refused before writing."""
        if storage.capabilities.exclusive_names:
            pytest.skip("a name cannot be a file and a directory at once here")
        tree.put("m/v1", _make_dir(tmp_path / "ckpt", {"a/b": b"B"}), recursive=True)
        storage.write_atomic("m/v1/ckpt/a", b"planted")
        with pytest.raises(PathError, match="both a file and a directory"):
            tree.get("m/v1/ckpt", tmp_path / "dl", recursive=True)
        assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]

    def test_recursive_get_refuses_planted_symlinks(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        """Where stored data is this host's disk, a planted link is refused, never followed."""
        tree.put("m/v1", _make_dir(tmp_path / "ckpt", {"a.txt": b"A"}), recursive=True)
        stored = storage.abs("m/v1/ckpt")
        if not os.path.isdir(stored):
            pytest.skip("stored data is not a directory of this host's filesystem")
        secret = _make_dir(tmp_path / "secret", {"key": b"private"})
        os.symlink(secret, os.path.join(stored, "dir-link"))
        out = tmp_path / "dl"
        with pytest.raises(PathError, match="symbolic link"):
            tree.get("m/v1/ckpt", out, recursive=True)
        assert not out.exists()
        os.unlink(os.path.join(stored, "dir-link"))
        os.symlink(secret / "key", os.path.join(stored, "file-link"))
        with pytest.raises(PathError, match="symbolic link"):
            tree.get("m/v1/ckpt", out, recursive=True)
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []

    def test_recursive_get_failure_leaves_no_partial_directory(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        """The download is assembled beside `outfile` and renamed into place only if complete."""
        src = _make_dir(tmp_path / "ckpt", {"a.txt": b"A", "b.txt": b"B", "c/d.txt": b"D"})
        tree.put("m/v1", src, recursive=True)
        out_parent = tmp_path / "downloads"
        out_parent.mkdir()
        with pytest.raises(_Boom):
            tree.get("m/v1/ckpt", out_parent / "dl", recursive=True, callback=_FailAfter(2))
        assert list(out_parent.iterdir()) == []
        assert _download(tree, "m/v1/ckpt", out_parent / "dl") == {
            "a.txt": b"A",
            "b.txt": b"B",
            "c/d.txt": b"D",
        }

    # -- item 3: put(recursive=True) is atomic and complete ------------------------------
    @pytest.mark.parametrize("force", [False, True], ids=["new-name", "forced-replace"])
    def test_failed_recursive_put_changes_nothing(
        self, tree: Metatree, storage: Storage, tmp_path: Path, force: bool
    ) -> None:
        """A failure midway shows no partial directory, and a failed replace keeps the old one."""
        old = _make_dir(tmp_path / "old" / "ckpt", {"a.txt": b"old-A", "b.txt": b"old-B"})
        tree.put("m/v1", old, recursive=True)
        new = _make_dir(tmp_path / "ckpt", {"a.txt": b"A", "c.txt": b"C", "d/e.txt": b"E"})
        if not force:
            tree.put("m/v1", b"x", name="f")
            new = new.rename(tmp_path / "other")
        before, entries = snapshot(storage), storage.listdir("m/v1")
        with pytest.raises(_Boom):
            tree.put("m/v1", new, recursive=True, force=force, callback=_FailAfter(2))
        assert snapshot(storage) == before
        assert storage.listdir("m/v1") == entries  # no staging or trash directory left
        assert _download(tree, "m/v1/ckpt", tmp_path / "dl") == {
            "a.txt": b"old-A",
            "b.txt": b"old-B",
        }

    def test_local_file_vanishing_midway_is_named(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        """A local file that fails while the put runs is named, not the destination."""
        tree.put("m/v1", b"x", name="f")
        src = _make_dir(tmp_path / "ckpt", {"a": b"A", "b": b"B"})

        class Vanish(Callback):  # type: ignore[misc]  # fsspec is untyped
            def set_size(self, size: int) -> None:
                """Delete the second file while the first uploads."""
                (src / "b").unlink(missing_ok=True)

        before, entries = snapshot(storage), storage.listdir("m/v1")
        with pytest.raises(NotFoundError) as info:
            tree.put("m/v1", src, recursive=True, callback=Vanish())
        assert info.value.path == str(src / "b")
        assert snapshot(storage) == before
        assert storage.listdir("m/v1") == entries

    def test_forced_recursive_replace_is_complete(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        """The new directory replaces the old whole: no old file survives, no staging stays."""
        tree.put(
            "m/v1", _make_dir(tmp_path / "a" / "ckpt", {"a": b"1", "b/c": b"2"}), recursive=True
        )
        tree.put("m/v1", _make_dir(tmp_path / "ckpt", {"a": b"3", "d": b"4"}), True, True)
        assert _download(tree, "m/v1/ckpt", tmp_path / "dl") == {"a": b"3", "d": b"4"}
        assert tree.find("m/v1").list() == ["ckpt"]
        assert _hidden(storage) == []

    def test_forced_recursive_put_swaps_file_and_directory(
        self, tree: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        """A directory replaces a file of its name and back, with nothing left of the other."""
        tree.put("m/v1", b"file", name="ckpt")
        src = _make_dir(tmp_path / "ckpt", {"a": b"A"})
        tree.put("m/v1", src, force=True, recursive=True)
        assert _download(tree, "m/v1/ckpt", tmp_path / "dl") == {"a": b"A"}
        tree.put("m/v1", b"file again", name="ckpt", force=True, recursive=True)
        assert b"".join(tree.get("m/v1/ckpt")) == b"file again"
        assert not any(p.startswith("m/v1/ckpt/") for p in storage.walk_files(""))
        assert _hidden(storage) == []

    def test_recursive_put_follows_symlinked_directories(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        """A link to a directory stores that directory (once linked, twice stored: no loss)."""
        real = _make_dir(tmp_path / "real", {"w.bin": b"W"})
        src = _make_dir(tmp_path / "ckpt", {"a": b"A"})
        (src / "linked").symlink_to(real, target_is_directory=True)
        (src / "file-link").symlink_to(real / "w.bin")
        tree.put("m/v1", src, recursive=True)
        assert _download(tree, "m/v1/ckpt", tmp_path / "dl") == {
            "a": b"A",
            "file-link": b"W",
            "linked/w.bin": b"W",
        }

    @pytest.mark.parametrize(
        "case", ["link-loop", "broken-link", "empty-subdirectory", "empty-source", "fifo"]
    )
    def test_recursive_put_refuses_what_it_cannot_store(
        self, tree: Metatree, tmp_path: Path, case: str
    ) -> None:
        """Loops, broken links, empty directories, non-files: a clear error, nothing written."""
        tree.put("m/v1", b"x", name="f")
        src = _make_dir(tmp_path / "ckpt", {"a": b"A"})
        culprit = src / "sub"
        error: type[MetatreeError] = PathError
        if case == "link-loop":
            culprit.symlink_to(src, target_is_directory=True)
        elif case == "broken-link":
            culprit.symlink_to(tmp_path / "nowhere")
            error = NotFoundError
        elif case == "empty-subdirectory":
            culprit.mkdir()
        elif case == "empty-source":
            (src / "a").unlink()
            culprit = src
        else:
            os.mkfifo(culprit)
        refused(tree.storage, error, lambda: tree.put("m/v1", src, recursive=True))
        with pytest.raises(error) as info:
            tree.put("m/v1", src, recursive=True)
        assert getattr(info.value, "location", getattr(info.value, "path", None)) == str(culprit)

    # -- item 4: removal survives a crash midway -----------------------------------------
    def test_remove_leaves_no_system_leftovers(self, tree: Metatree, storage: Storage) -> None:
        """After remove, nothing of the node and no trash name is left."""
        tree.put("m/v1/s", b"x", name="f")
        tree.put("m/v1", b"y", name="g")
        tree.remove("m/v1", recursive=True)
        assert sorted(storage.walk_files("")) == [".metatree", "m/metadata.json", "metadata.json"]

    def test_crashed_remove_keeps_the_orphan_marker(
        self, tree: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Object stores delete the node's metadata.json last: a crash before leaves it there."""
        if storage.capabilities.real_directories:
            pytest.skip("directories rename atomically here: see the trash test")
        tree.put("m/v1/s", b"x", name="f")
        tree.put("m/v1", b"y", name="g")
        backend: Any = storage.backend
        real = backend._delete_keys
        calls: list[list[str]] = []

        def crash_on_second(keys: list[str]) -> None:
            calls.append(list(keys))
            if len(calls) == 2:
                raise _Boom("killed")
            real(keys)

        monkeypatch.setattr(backend, "_delete_keys", crash_on_second)
        with pytest.raises(_Boom):
            tree.remove("m/v1", recursive=True)
        assert calls[1] == [storage.abs("m/v1/metadata.json")]
        assert sorted(p for p in storage.walk_files("") if p.startswith("m/v1/")) == [
            "m/v1/metadata.json"
        ]

    def test_crashed_remove_leaves_only_a_trash_name(
        self, tree: Metatree, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where directories rename atomically, the node leaves its name before any delete."""
        if not storage.capabilities.real_directories:
            pytest.skip("object stores cannot rename a directory")
        tree.put("m/v1/s", b"x", name="f")
        backend: Any = storage.backend

        def crash(path: str) -> None:
            raise _Boom("killed")

        monkeypatch.setattr(backend, "_delete_tree", crash)
        with pytest.raises(_Boom):
            tree.remove("m/v1", recursive=True)
        monkeypatch.undo()
        assert storage.kind("m/v1") is None
        assert [n for n in storage.listdir("m") if n.startswith(".metatree.trash.")]
        tree.put("m/v1", b"new", name="g")
        assert tree.find("m/v1").list() == ["g"]

    # -- item 5: clear errors before any I/O ---------------------------------------------
    @pytest.mark.parametrize("chunk_size", [0, -1, 1.5, True, "8", None], ids=repr)
    def test_bad_chunk_size(self, tree: Metatree, chunk_size: Any) -> None:
        """chunk_size=0 used to return b"" silently; every non-positive-int is refused."""
        tree.put("m/v1", b"data", name="f")
        refused(tree.storage, PathError, lambda: tree.get("m/v1/f", chunk_size=chunk_size))
        node = tree.find("m/v1")
        refused(tree.storage, PathError, lambda: node.get("f", chunk_size=chunk_size))

    @pytest.mark.parametrize("kind", ["text-io", "read-returns-str"])
    def test_text_mode_source_is_refused_before_any_write(self, tree: Metatree, kind: str) -> None:
        """A text stream was a raw TypeError after the new nodes' directories were made."""
        tree.put("m/v1", b"x", name="f")

        class StrReader:
            def read(self, n: int = -1) -> str:
                return "x"[:n] if n >= 0 else "x"

        source: Any = io.StringIO("text") if kind == "text-io" else StrReader()
        refused(tree.storage, PathError, lambda: tree.put("m/v2/s", source, name="f"))
        refused(tree.storage, PathError, lambda: tree.find("m/v1").put(source, name="g"))

    def test_outfile_in_a_missing_directory(self, tree: Metatree, tmp_path: Path) -> None:
        """The error names the local directory, not the remote file, and no request is made."""
        tree.put("m/v1", b"x", name="f")
        missing = tmp_path / "no" / "such"
        refused(tree.storage, NotFoundError, lambda: tree.get("m/v9/f", missing / "out"))
        with pytest.raises(NotFoundError) as info:
            tree.get("m/v9/f", missing / "out")  # the node is missing too: checked later
        assert info.value.path == str(missing)
        node = tree.find("m/v1")
        with pytest.raises(NotFoundError, match="local directory"):
            node.get("f", str(missing / "out"))

    def test_outfile_that_exists_is_refused(self, tree: Metatree, tmp_path: Path) -> None:
        """Recursive gets too never write into an existing path."""
        tree.put("m/v1", _make_dir(tmp_path / "ckpt", {"a": b"A"}), recursive=True)
        out = tmp_path / "out"
        out.mkdir()
        refused(
            tree.storage, AlreadyExistsError, lambda: tree.get("m/v1/ckpt", out, recursive=True)
        )
        assert list(out.iterdir()) == []

    # -- second attack round: links, FIFOs, '?versionId=', key beside prefix -----------
    @staticmethod
    def _require_local(storage: Storage) -> None:
        if not storage.capabilities.same_host_liveness:
            pytest.skip("links and FIFOs are planted on local disk")

    def test_planted_link_is_never_followed(self, storage: Storage, tmp_path: Path) -> None:
        self._require_local(storage)
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        tree.put("n/v1", b"x", name="f")
        outside = tmp_path / "outside"
        (outside / "victim").mkdir(parents=True)
        (outside / "victim" / "secret.txt").write_bytes(b"secret")
        (outside / "metadata.json").write_bytes(b'{"children": ["victim"]}')
        before = sorted(p.name for p in outside.rglob("*"))
        node_dir = storage.abs("m")
        os.rename(node_dir, str(tmp_path / "moved"))
        os.symlink(str(outside), node_dir)
        os.symlink(str(outside / "victim" / "secret.txt"), storage.abs("n/v1/link"))
        attempts: list[Callable[[], object]] = [
            lambda: tree.find("m").list(),
            lambda: b"".join(tree.get("m/victim/secret.txt")),
            lambda: tree.put("m/new", b"x", name="f"),
            lambda: tree.find("m").update(k=1),
            lambda: tree.remove("m/victim", recursive=True),
            lambda: b"".join(tree.get("n/v1/link")),
            lambda: tree.get("n/v1/link", outfile=str(tmp_path / "dl")),
        ]
        for attempt in attempts:
            with pytest.raises(PathError, match="link"):
                attempt()
        if importlib.util.find_spec("pyarrow") is not None:  # the catalog's optional extra
            with pytest.raises(PathError, match="link"):
                tree.catalog()  # the batch read of a level: the link refused, named
            found = tree.search(on_error="skip")
            assert sorted(found.paths) == ["n", "n/v1"]  # the link, and nothing through it
            assert [type(s.error) for s in found.skipped] == [PathError]
        assert sorted(p.name for p in outside.rglob("*")) == before
        assert (outside / "metadata.json").read_bytes() == b'{"children": ["victim"]}'

    @pytest.mark.parametrize("where", ["m/v1/metadata.json", ".lock", "m/v1/d/x"])
    def test_planted_fifo_never_blocks(self, storage: Storage, tmp_path: Path, where: str) -> None:
        self._require_local(storage)
        tree = Metatree(storage, KEYS, lock_timeout=2)
        tree.put("m/v1", b"x", name="f")
        os.makedirs(os.path.dirname(storage.abs(where)), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(storage.abs(where))
        os.mkfifo(storage.abs(where))
        attempts: list[Callable[[], object]] = [
            lambda: tree.find("m/v1").update(k=1),
            lambda: tree.put("m/v1", b"y", name="g"),
            lambda: tree.get("m/v1/d", outfile=str(tmp_path / "dl"), recursive=True),
        ]
        for attempt in attempts:
            with contextlib.suppress(MetatreeError):  # typed, and at once: never a hang
                attempt()
        other = Metatree(storage, lock_timeout=2)
        if where != ".lock":  # a FIFO at .lock blocks nobody, but no writer can go on either
            os.unlink(storage.abs(where))
            if where.endswith("metadata.json"):
                storage.write_atomic(where, b"{}")
            other.put("m/v1", b"z", name="h", force=True)
            assert b"".join(other.get("m/v1/h")) == b"z"

    @pytest.mark.timeout(60)
    def test_fifo_swapped_in_before_a_commit_never_blocks(self, storage: Storage) -> None:
        """A co-writer swaps a transaction's new file for a FIFO: the commit's flush refuses it.

        The flush of a transaction's files (fsync each, below `syncfs`'s batch size) opened
        them blocking: a FIFO there hung the commit, holding the DB lock, for good.
        """
        self._require_local(storage)
        tree = Metatree(storage, KEYS)
        tree.put("m/v0", b"x", name="f")

        def swapped() -> None:
            with tree.transaction():
                tree.put("n/v", b"x", name="f")
                os.unlink(storage.abs("n/v/f"))
                os.mkfifo(storage.abs("n/v/f"))

        with pytest.raises(MetatreeError):
            swapped()
        assert Metatree(storage).find("").children == ["m"]  # nothing committed

    def test_versionid_in_a_stored_name_is_taken_literally(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b'{"lr": 0.1}', name="params.json")
        storage.write_atomic(
            "m/v1/metadata.json", orjson.dumps({"children": ["params.json?versionId=1"]})
        )
        with pytest.raises(CorruptMetadataError, match="versionId"):
            tree.find("m/v1").children  # noqa: B018 - the read is the test
        storage.write_atomic("m/v1/metadata.json", b"{}")
        assert b"".join(tree.get("m/v1/params.json")) == b'{"lr": 0.1}'

    def test_planted_versionid_key_does_not_eat_a_new_file(
        self, storage: Storage, tmp_path: Path
    ) -> None:
        tree = Metatree(storage, KEYS)
        old, new = tmp_path / "old", tmp_path / "new"
        old.mkdir()
        (old / "a").write_bytes(b"old a")
        new.mkdir()
        (new / "a").write_bytes(b"new a")
        tree.put("m/v1", str(old), name="d", recursive=True)
        storage.write_atomic("m/v1/d/a?versionId=1", b"planted")
        tree.put("m/v1", str(new), name="d", recursive=True, force=True)
        assert storage.read_bytes("m/v1/d/a") == b"new a"

    def test_key_beside_a_stored_directory_is_no_shortcut(
        self, storage: Storage, tmp_path: Path
    ) -> None:
        if storage.capabilities.exclusive_names:
            pytest.skip("a name is a file or a directory here, never both")
        tree = Metatree(storage, KEYS)
        old, new = tmp_path / "old", tmp_path / "new"
        old.mkdir()
        (old / "a").write_bytes(b"old a")
        (old / "b").write_bytes(b"old b")
        new.mkdir()
        (new / "a").write_bytes(b"new a")
        tree.put("m/v1", str(old), name="d", recursive=True)
        storage.write_atomic("m/v1/d", b"planted beside the prefix")
        tree.put("m/v1", str(new), name="d", recursive=True, force=True)
        assert sorted(storage.walk_files("m/v1/d")) == ["a"]  # no stale b inherited

    def test_remove_of_odd_stored_shapes_completes(self, storage: Storage) -> None:
        self._require_local(storage)
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        tree.put("m/v2", b"x", name="f")
        shutil.rmtree(storage.abs("m/v1"))
        with open(storage.abs("m/v1"), "wb") as stream:  # a listed node's directory is a file
            stream.write(b"x")
        deep = storage.abs("m/v2/d")
        os.mkdir(deep)
        for _ in range(1200):  # deeper than Python's recursion limit (os.makedirs recurses)
            deep += "/x"
            os.mkdir(deep)
        tree.remove("m/v1", recursive=True)
        tree.remove("m/v2", recursive=True)
        assert tree.find("m").children == []
        listed = storage.listdir("m")
        if INDEX_KEY in orjson.loads(storage.read_bytes("m/metadata.json")):  # format v2
            assert listed.pop(INDEX_DIR) == "directory"  # the log keeps the removals
        assert listed == {"metadata.json": "file"}

    # -- careless values (third attack round) -------------------------------------------
    @pytest.mark.parametrize("callback", [None, print, "bar"])
    def test_bad_callback_is_refused_before_any_write(
        self, storage: Storage, tmp_path: Path, callback: Any
    ) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        before = snapshot(storage)
        with pytest.raises(PathError, match="callback"):
            tree.put("n/v1", b"x", name="f", callback=callback)
        with pytest.raises(PathError, match="callback"):
            tree.find("m/v1").put(b"x", name="g", callback=callback)
        with pytest.raises(PathError, match="callback"):
            tree.get("m/v1/f", outfile=str(tmp_path / "dl"), callback=callback)
        assert snapshot(storage) == before
        assert not (tmp_path / "dl").exists()

    @pytest.mark.parametrize("chunk_size", [2**62, 2**100])
    def test_huge_chunk_size_is_refused(self, storage: Storage, chunk_size: int) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(PathError, match="chunk_size"):
            tree.get("m/v1/f", chunk_size=chunk_size)

    def test_nul_in_outfile_is_refused(self, storage: Storage, tmp_path: Path) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        with pytest.raises(PathError, match="NUL"):
            tree.get("m/v1/f", outfile=str(tmp_path / "a\x00b"))

    def test_huge_lock_timeout_waits_like_forever(self, storage: Storage) -> None:
        tree = Metatree(storage, KEYS, lock_timeout=1e300)
        tree.put("m/v1", b"x", name="f")  # no OverflowError from the in-process wait
        with tree.transaction():
            tree.find("m/v1").update(k=1)
        assert tree.find("m/v1").metadata["k"] == 1

    def test_directory_replaced_during_a_download_is_a_conflict(
        self, storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tree = Metatree(storage, KEYS)
        if storage.backend.tree_version(storage.root) is None:
            pytest.skip("object stores replace a directory key by key (documented window)")
        old, new = tmp_path / "old", tmp_path / "new"
        for folder, tag in ((old, b"old"), (new, b"new")):
            folder.mkdir()
            (folder / "a").write_bytes(tag + b" a")
            (folder / "b").write_bytes(tag + b" b")
        tree.put("m/v1", str(old), name="d", recursive=True)
        writer = Metatree(storage)
        original = storage.get
        calls: list[str] = []

        def replacing(rel: str, local: str, callback: Any = None, **kw: Any) -> None:
            calls.append(rel)
            if len(calls) == 2:  # between the two files, another writer swaps the directory
                writer.put("m/v1", str(new), name="d", recursive=True, force=True)
            original(rel, local, callback, **kw)

        monkeypatch.setattr(storage, "get", replacing)
        with pytest.raises(ConflictError):
            tree.get("m/v1/d", outfile=str(tmp_path / "dl"), recursive=True)
        assert not (tmp_path / "dl").exists()

    def test_folder_markers_go_with_a_removed_directory(self, storage: Storage) -> None:
        if storage.capabilities.exclusive_names or storage.capabilities.data_in_memory:
            pytest.skip("folder marker keys ('a/b/') exist on object stores only")
        tree = Metatree(storage, KEYS)
        tree.put("m/v1", b"x", name="f")
        storage.write_atomic("m/v1/d/sub/a", b"x")
        storage.fs.pipe_file(storage.abs("m/v1/d/sub/"), b"")  # what a console's "new folder" makes
        tree.remove("m/v1/d", recursive=True)
        assert tree.find("m/v1").list() == ["f"]
        assert not tree.exists("m/v1/d")
        tree.put("m/v1", b"a file now", name="d")
        assert b"".join(tree.get("m/v1/d")) == b"a file now"
