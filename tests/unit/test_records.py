"""File records: the provenance of this runtime, and the checks of stored records."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

import metatree
from metatree._records import (
    LIBRARIES,
    RECORDS,
    check_info,
    drop_records,
    records_of,
    runtime,
    set_records,
    spelled,
    user_metadata,
)
from metatree.errors import CorruptMetadataError, MetadataError

SHA = "ab" * 32


def test_runtime_names_only_installed_libraries() -> None:
    versions = runtime()["versions"]
    assert versions["metatree"] == metatree.__version__
    for library in LIBRARIES:
        try:
            installed = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            assert library not in versions
        else:
            assert versions[library] == installed


def test_one_put_is_stored_once_and_pruned_when_unused() -> None:
    metadata: dict[str, Any] = {"active": "v1"}
    set_records(metadata, "d", [("d/a", 1, SHA), ("d/b", 2, SHA)], {"run": 1}, "n")
    assert len(metadata[RECORDS]["puts"]) == 1
    set_records(metadata, "f", [("f", 3, SHA)], {}, "n")
    assert len(metadata[RECORDS]["puts"]) == 2
    assert drop_records(metadata, "d", "n") is True
    assert sorted(records_of(metadata, "n")) == ["f"]
    assert len(metadata[RECORDS]["puts"]) == 1  # the directory's put went with its files
    assert drop_records(metadata, "f", "n") is True
    assert metadata == {"active": "v1"}  # no empty key left behind
    assert drop_records(metadata, "f", "n") is False


def test_a_directory_replaced_by_a_file_drops_its_files_only() -> None:
    metadata: dict[str, Any] = {}
    set_records(metadata, "d", [("d/a", 1, SHA)], {}, "n")
    set_records(metadata, "dx", [("dx", 1, SHA)], {}, "n")  # a name that starts like "d"
    set_records(metadata, "d", [("d", 5, SHA)], {}, "n")
    assert sorted(records_of(metadata, "n")) == ["d", "dx"]


def test_a_case_insensitive_filesystem_folds_names() -> None:
    metadata: dict[str, Any] = {}
    set_records(metadata, "Model.bin", [("Model.bin", 1, SHA)], {}, "n")
    set_records(metadata, "ckpt", [("ckpt/a", 1, SHA)], {}, "n")
    set_records(metadata, "model.BIN", [("model.BIN", 2, SHA)], {}, "n", fold=True)
    assert sorted(records_of(metadata, "n")) == ["ckpt/a", "model.BIN"]  # one file, one record
    assert spelled(records_of(metadata, "n"), "MODEL.bin", True) == "model.BIN"
    assert spelled(records_of(metadata, "n"), "MODEL.bin", False) == "MODEL.bin"
    assert spelled(records_of(metadata, "n"), "Ckpt", True) == "ckpt"
    assert drop_records(metadata, "CKPT", "n", fold=True) is True
    assert sorted(records_of(metadata, "n")) == ["model.BIN"]


def _valid() -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    set_records(metadata, "f", [("f", 1, SHA)], {}, "n")
    return metadata


@pytest.mark.parametrize(
    "spoil",
    [
        lambda r: r["files"]["f"].update(size=True),  # a bool is not a size
        lambda r: r["files"]["f"].update(extra=1),
        lambda r: r["files"]["f"].update(created="2026-01-01T00:00:00"),  # no time zone
        lambda r: r["files"]["f"].update(created="2026-01-01T00:00:00+02:00"),  # not UTC
        lambda r: r["files"]["f"].update(sha256=SHA.upper()),
        lambda r: r["files"]["f"].update(put=7),
        lambda r: r["files"].update({"a/../f": r["files"]["f"]}),
        lambda r: r["files"].update({"": r["files"]["f"]}),
        lambda r: r["files"].update({"metadata.json": r["files"]["f"]}),
        lambda r: next(iter(r["puts"].values())).update(user=None),
        lambda r: next(iter(r["puts"].values())).update(versions={"x": 1}),
        lambda r: next(iter(r["puts"].values())).pop("info"),
        lambda r: r.update(more=1),
    ],
    ids=[
        "bool-size",
        "extra-field",
        "naive-time",
        "not-utc",
        "upper-hex",
        "put-not-str",
        "dotdot-name",
        "empty-name",
        "reserved-name",
        "user-none",
        "version-not-str",
        "no-info",
        "extra-key",
    ],
)
def test_a_spoiled_record_is_corrupt(spoil: Any) -> None:
    metadata = _valid()
    spoil(metadata[RECORDS])
    with pytest.raises(CorruptMetadataError):
        records_of(metadata, "n")
    with pytest.raises(CorruptMetadataError):  # and nothing is built on it
        set_records(metadata, "g", [("g", 1, SHA)], {}, "n")


def test_check_info() -> None:
    assert check_info(None, "x") == {}
    assert check_info({"children": [1], "nested": {"a": None}}, "x") == {
        "children": [1],
        "nested": {"a": None},
    }
    with pytest.raises(MetadataError):
        check_info("run=1", "x")
    with pytest.raises(MetadataError):
        check_info({"t": (1, 2)}, "x")


def test_user_metadata_leaves_records_out() -> None:
    plain = {"a": 1}
    assert user_metadata(plain) is plain  # nothing to hide: no copy
    assert user_metadata({**_valid(), "a": 1}) == {"a": 1}
