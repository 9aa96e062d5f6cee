"""`Storage.url_of` on local disk: said without fsspec, exactly as fsspec says it."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import fsspec
import pytest

from metatree._core import transaction
from metatree._storage import Storage

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("rel", ["", "m", "m/v1/metadata.json", "a b/ü/file:x", "x/"])
@pytest.mark.parametrize("root", ["/", "/tmp/db", "/tmp/db/"])
def test_a_local_url_is_fsspecs(rel: str, root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(fsspec.filesystem("file"), root)
    path = f"{storage.root.rstrip('/')}/{rel}" if rel else storage.root
    expected = fsspec.filesystem("file").unstrip_protocol(path)
    calls: list[str] = []
    real = storage.fs.unstrip_protocol

    def spy(path: str) -> str:
        calls.append(path)
        return str(real(path))

    monkeypatch.setattr(storage.fs, "unstrip_protocol", spy)
    assert storage.url_of(rel) == expected
    assert not calls  # not asked: 5 us a call, several calls a put


def test_a_relative_root_is_left_to_fsspec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = Storage(fsspec.filesystem("file"), "db")
    assert storage.url_of("m") == f"file://{tmp_path}/db/m"


def test_metadata_copies_share_nothing_mutable() -> None:
    """The transaction's copy of metadata (`_copy`): JSON copied, anything else deep-copied."""

    class Opaque:
        pass

    opaque = Opaque()
    metadata: dict[str, Any] = {
        "children": ["a", "b"],
        "files": {"f": {"size": 1, "sha256": "0" * 64, "ok": True, "none": None, "x": 1.5}},
        "tags": [["t", {"n": 1}]],
        "other": opaque,
    }
    copied = transaction._copy(metadata)
    assert copied == {**metadata, "other": copied["other"]}
    assert copied["other"] is not opaque
    assert isinstance(copied["other"], Opaque)
    expected = copy.deepcopy({k: v for k, v in copied.items() if k != "other"})
    metadata["children"].append("c")
    metadata["files"]["f"]["size"] = 2
    metadata["tags"][0][1]["n"] = 2
    assert {k: v for k, v in copied.items() if k != "other"} == expected
