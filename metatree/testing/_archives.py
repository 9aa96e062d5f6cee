"""Archives through the tree (issue 11): ``put(..., archive=True)`` and ``get(..., extract_to=)``.

Part of the conformance suite (mixed into `BackendConformance`): the archive streams through
each backend's upload, is recorded and verified like any file, and a hostile archive stored
on the backend (by another client or an attacker) is refused on extraction with nothing
written outside the target.
"""

from __future__ import annotations

import json
import platform
from typing import TYPE_CHECKING

import pytest

from metatree.errors import ArchiveError, IntegrityError, NotFoundError, PathError
from metatree.testing._helpers import unchanged
from metatree.testing.hostile_archives import HOSTILE, local_tree

if TYPE_CHECKING:
    from pathlib import Path

    from metatree._tree import Metatree

__all__ = ["ArchiveTests"]

LEAF = "m/v/s"

# every kind but the bomb (a unit test, with a small limit): stored, then extracted via get
STORED_HOSTILE = sorted(kind for kind in HOSTILE if kind != "bomb")


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w" * 5000)
    (src / "sub" / "config.txt").write_text("lr=0.1\n")
    (src / ".secret").write_text("token")
    return src


class ArchiveTests:
    """A directory stored as one deterministic archive, extracted safely from any backend."""

    @pytest.fixture
    def places(self, tmp_path: Path) -> tuple[Path, Path]:
        """Return a work directory holding an extraction target (with one file) and a sentinel."""
        work = tmp_path / "work"
        target, sentinel = work / "target", work / "sentinel"
        target.mkdir(parents=True)
        (target / "existing.txt").write_text("mine")
        sentinel.mkdir()
        (sentinel / "s").write_text("sentinel")
        return work, target

    def test_archive_round_trip_is_recorded_and_deterministic(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        src = _source(tmp_path)
        assert tree.put(LEAF, src, archive=True, info={"run": 1}) is True
        tree.put("m/v/t", src, archive=True)
        assert tree.find(LEAF).list() == ["model.tar.gz"]
        first, second = tree.stat(f"{LEAF}/model.tar.gz"), tree.stat("m/v/t/model.tar.gz")
        assert first.sha256 == second.sha256  # same directory, same bytes
        assert first.provenance.info == {"run": 1}
        out = tmp_path / "out"
        assert list(tree.get(f"{LEAF}/model.tar.gz", extract_to=str(out))) == []
        assert (out / "weights.bin").read_bytes() == b"w" * 5000
        assert (out / "sub" / "config.txt").read_text() == "lr=0.1\n"
        assert not (out / ".secret").exists()  # hidden files only when asked
        info = json.loads((out / "python-info.json").read_text())
        assert info["python"] == f"python:{platform.python_version()}"
        assert "metatree" in info["versions"]
        node = tree.find(LEAF)
        again = tmp_path / "again"
        list(node.get("model.tar.gz", extract_to=str(again)))
        assert local_tree(again) == local_tree(out)

    def test_archive_filters_and_name(self, tree: Metatree, tmp_path: Path) -> None:
        src = _source(tmp_path)
        tree.put(LEAF, src, archive=True, name="cfg.tgz", include=["*.txt"], hidden=True)
        tree.find(LEAF).put(src, archive=True, exclude=["sub"], hidden=True)
        out = tmp_path / "cfg"
        tree.get(f"{LEAF}/cfg.tgz", extract_to=out)
        assert sorted(local_tree(out)) == ["python-info.json", "sub", "sub/config.txt"]
        out2 = tmp_path / "all"
        tree.get(f"{LEAF}/model.tar.gz", extract_to=out2)
        assert sorted(local_tree(out2)) == [".secret", "python-info.json", "weights.bin"]

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"archive": True, "include": "*.txt"}, PathError),  # a str, not a list
            ({"archive": "yes"}, PathError),
            ({"include": ["*.txt"]}, PathError),  # without archive=True
            ({"hidden": True}, PathError),
            ({"archive": True, "exclude": [""]}, PathError),
            ({"archive": True, "recursive": True}, PathError),
            ({"archive": True, "name": "model.zip"}, PathError),  # it is a tar.gz
        ],
    )
    def test_archive_bad_input_writes_nothing(
        self, tree: Metatree, tmp_path: Path, options: dict[str, object], error: type
    ) -> None:
        src = _source(tmp_path)
        with unchanged(tree.storage), pytest.raises(error):
            tree.put(LEAF, src, **options)  # type: ignore[arg-type]

    def test_archive_of_the_working_directory_is_named_after_it(
        self, tree: Metatree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(_source(tmp_path))
        tree.put(LEAF, ".", archive=True)
        assert tree.find(LEAF).list() == ["model.tar.gz"]

    def test_archive_of_what_is_not_a_directory(self, tree: Metatree, tmp_path: Path) -> None:
        file = tmp_path / "f.bin"
        file.write_bytes(b"x")
        with unchanged(tree.storage), pytest.raises(PathError):
            tree.put(LEAF, file, archive=True)
        with unchanged(tree.storage), pytest.raises(NotFoundError):
            tree.put(LEAF, tmp_path / "absent", archive=True)
        with unchanged(tree.storage), pytest.raises(PathError):
            tree.put(LEAF, b"bytes", name="x.tar.gz", archive=True)

    def test_extract_bad_input_reads_nothing(self, tree: Metatree, tmp_path: Path) -> None:
        tree.put(LEAF, _source(tmp_path), archive=True)
        file = tmp_path / "a-file"
        file.write_text("x")
        with pytest.raises(PathError):
            tree.get(f"{LEAF}/model.tar.gz", extract_to=str(file))
        with pytest.raises(NotFoundError):
            tree.get(f"{LEAF}/model.tar.gz", extract_to=str(tmp_path / "no" / "dir"))
        with pytest.raises(PathError):
            tree.get(f"{LEAF}/model.tar.gz", str(tmp_path / "o"), extract_to=str(tmp_path / "x"))
        with pytest.raises(PathError):
            tree.get(f"{LEAF}/model.tar.gz", extract_to=str(tmp_path / "x"), overwrite="y")  # type: ignore[arg-type]
        assert not (tmp_path / "x").exists()

    def test_extract_refuses_to_overwrite_unless_asked(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        tree.put(LEAF, _source(tmp_path), archive=True)
        out = tmp_path / "out"
        out.mkdir()
        (out / "weights.bin").write_bytes(b"local work")
        with pytest.raises(ArchiveError):
            tree.get(f"{LEAF}/model.tar.gz", extract_to=out)
        assert sorted(local_tree(out)) == ["weights.bin"]  # nothing extracted beside it
        tree.get(f"{LEAF}/model.tar.gz", extract_to=out, overwrite=True)
        assert (out / "weights.bin").read_bytes() == b"w" * 5000

    @pytest.mark.parametrize("kind", STORED_HOSTILE)
    def test_a_hostile_stored_archive_is_refused(
        self, tree: Metatree, places: tuple[Path, Path], kind: str
    ) -> None:
        work, target = places
        tree.put(LEAF, HOSTILE[kind](), name="evil.tar.gz")
        before = local_tree(work.parent)
        with pytest.raises(ArchiveError):
            tree.get(f"{LEAF}/evil.tar.gz", extract_to=target)
        assert local_tree(work.parent) == before

    def test_a_tampered_archive_extracts_nothing(
        self, tree: Metatree, tmp_path: Path, places: tuple[Path, Path]
    ) -> None:
        work, target = places
        src = _source(tmp_path)
        tree.put(LEAF, src, archive=True)
        (src / "weights.bin").write_bytes(b"poisoned")
        tree.put("m/v/t", src, archive=True)
        poisoned = tree.storage.read_bytes("m/v/t/model.tar.gz")
        tree.storage.put(poisoned, f"{LEAF}/model.tar.gz")  # a valid archive, not the recorded one
        before = local_tree(work)
        with pytest.raises(IntegrityError):
            tree.get(f"{LEAF}/model.tar.gz", extract_to=target)
        assert local_tree(work) == before
