"""Every reserved name metatree makes is recognised as reserved and refused as a user's name.

A temp, trash, staging, transaction or tomb name left by a crash must never be listed, found
or overwritten as data: that holds only if each maker's output passes `is_reserved`, which
`check_name` (new names) and `check_location_name` (names a location may give) both refuse.
"""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING

import fsspec
import pytest

from metatree._names import (
    PURPOSES,
    RESERVED_NAMES,
    Purpose,
    is_reserved,
    reserved_beside,
    reserved_name,
)
from metatree._paths import check_location_name, check_name
from metatree.backends.base import _temp_name
from metatree.backends.local import LocalBackend
from metatree.backends.webhdfs import WebHDFSBackend
from metatree.errors import PathError

if TYPE_CHECKING:
    from pathlib import Path


def _assert_refused(name: str) -> None:
    assert is_reserved(name), name
    for variant in (name, name.upper()):  # one name on case-insensitive filesystems
        with pytest.raises(PathError, match="reserved"):
            check_name(variant, variant)
        with pytest.raises(PathError, match="reserved"):
            check_location_name(variant, variant)


@pytest.mark.parametrize("purpose", PURPOSES)
def test_reserved_name_is_reserved_and_refused(purpose: Purpose) -> None:
    name = reserved_name(purpose)
    assert name.startswith(f".metatree.{purpose}.")
    _assert_refused(name)


def test_reserved_names_are_fresh() -> None:
    assert len({reserved_name("tmp") for _ in range(100)}) == 100


@pytest.mark.parametrize("rel", ["top", "m/v1/model.bin", "m/v1/dir/"])
@pytest.mark.parametrize("purpose", PURPOSES)
def test_reserved_beside_stays_in_the_directory(rel: str, purpose: Purpose) -> None:
    made = reserved_beside(rel, purpose)
    parent, _, name = made.rpartition("/")
    assert parent == rel.rpartition("/")[0]
    _assert_refused(name)


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_fixed_system_names_are_refused(name: str) -> None:
    _assert_refused(name)


def test_backend_temp_names_are_reserved(tmp_path: Path) -> None:
    """The temp names each backend writes beside its targets come from the same maker."""
    generic = _temp_name("bucket/m/v1/model.bin")
    assert generic.startswith("bucket/m/v1/")
    fd, local = LocalBackend(fsspec.filesystem("file"))._create_temp(str(tmp_path / "m" / "f"))
    os.close(fd)
    assert posixpath.dirname(local) == str(tmp_path / "m")
    webhdfs = WebHDFSBackend._temp_beside(object.__new__(WebHDFSBackend), "/db/m/f")
    assert posixpath.dirname(webhdfs) == "/db/m"
    for made in (generic, local, webhdfs):
        _assert_refused(posixpath.basename(made))
