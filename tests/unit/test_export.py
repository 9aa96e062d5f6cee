"""Local targets of exports and downloads: where they really are; and many partitions.

Local only (links and relative paths are local-disk matters); the conformance suite runs the
export itself on every backend (metatree/testing/_catalog.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from metatree import Metatree
from metatree.errors import PathError

if TYPE_CHECKING:
    from pathlib import Path

pytest.importorskip("pyarrow")


@pytest.fixture
def tree(tmp_path: Path) -> Metatree:
    tree = Metatree(str(tmp_path / "db"), ("domain", "model"))
    tree.put("d/m", b"x", name="f")
    return tree


def test_an_export_never_lands_in_the_database_however_spelled(
    tree: Metatree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "db")
    monkeypatch.chdir(tmp_path / "db" / "d")
    spellings = [
        str(tmp_path / "db" / "x"),
        f"file://{tmp_path}/db/x",
        str(tmp_path / "link" / "x"),  # a link to the root
        f"file://{tmp_path}/link/d/m/x",
        "../x",  # relative to the working directory, inside the root
        f"{tmp_path}/db/../db/x",
        f"simplecache::file://{tmp_path}/db/x",  # chained: where it goes is hidden
        f"dir::{tmp_path}/db/x",
    ]
    for url in spellings:
        with pytest.raises(PathError):
            tree.export_catalog(url)
    assert sorted(os.listdir(tmp_path / "db")) == [".metatree", "d", "metadata.json"]
    assert sorted(os.listdir(tmp_path / "db" / "d")) == ["m", "metadata.json"]
    tree.export_catalog(str(tmp_path / "db2"))  # a sibling sharing the root's prefix: fine
    assert os.listdir(tmp_path / "db2") == ["part-0.parquet"]


def test_more_partitions_than_arrows_default(tmp_path: Path) -> None:
    tree = Metatree("memory://export-partitions", ("domain",))
    with tree.transaction():
        for n in range(1030):  # pyarrow refuses more than 1 024 partitions by default
            tree.put(f"d{n:04d}", b"x", name="f")
    tree.export_catalog(str(tmp_path / "out"), partition_by="domain")
    assert len(os.listdir(tmp_path / "out")) == 1030


def test_a_download_never_lands_in_the_database(tree: Metatree, tmp_path: Path) -> None:
    from metatree.errors import PathError

    (tmp_path / "link").symlink_to(tmp_path / "db")
    for target in (
        tmp_path / "db" / "x",
        tmp_path / "db" / "d" / "m" / "f2",
        tmp_path / "link" / "x",
    ):
        with pytest.raises(PathError, match="inside the database"):
            tree.get("d/m/f", str(target))
        with pytest.raises(PathError, match="inside the database"):
            tree.find("d/m").get("f", outfile=str(target))
        assert not target.exists()
    tree.get("d/m/f", str(tmp_path / "dbx"))  # a sibling sharing the root's prefix: fine
    assert (tmp_path / "dbx").read_bytes() == b"x"
