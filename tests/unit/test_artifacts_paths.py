"""`metatree.artifacts.confine`: every path form normalised and confined, with no I/O.

The conformance suite (`metatree.testing._artifacts`) proves the refusals on live backends;
these pin the normalisation itself on each filesystem's path and URL forms, including
WebHDFS's host, which its own ``_strip_protocol`` would silently drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import fsspec
import pytest
from fsspec.implementations.webhdfs import WebHDFS

from metatree.artifacts import confine
from metatree.errors import PathError

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

s3fs = pytest.importorskip("s3fs")


def _fs(kind: str) -> tuple[AbstractFileSystem, str]:
    if kind == "s3":
        return s3fs.S3FileSystem(anon=True), "b/store"
    if kind == "webhdfs":
        return WebHDFS("localhost", port=1), "/db/store"
    return fsspec.filesystem(kind), "/abc/store"


ACCEPTED = [
    ("file", "a/./b//c/", "a/b/c", False),
    ("file", "a/b/../c", "a/c", False),
    ("file", "", "", False),
    ("file", ".", "", False),
    ("file", "a/..", "", False),
    ("file", "/abc/store/a/../b", "b", True),
    ("file", "file:///abc/store/x", "x", True),
    ("file", "local:///abc/store", "", True),
    ("memory", "memory://abc/store/x", "x", True),
    ("memory", "memory:///abc/store/x/y", "x/y", True),
    ("s3", "s3://b/store/x", "x", True),
    ("s3", "s3a://b/store/x/", "x", True),
    ("s3", "S3://b/store", "", True),
    ("s3", "/b/store/x", "x", True),
    ("s3", "s3://b/store/x/../y", "y", True),
    ("webhdfs", "webhdfs:///db/store/x", "x", True),
    ("file", "a b/ü.txt", "a b/ü.txt", False),
    ("file", "a%20b", "a%20b", False),
]


@pytest.mark.parametrize(("kind", "path", "rel", "absolute"), ACCEPTED)
def test_confine_normalises(kind: str, path: str, rel: str, absolute: bool) -> None:
    fs, root = _fs(kind)
    where = confine(fs, root, path)
    assert (where.rel, where.absolute) == (rel, absolute)


REFUSED = [
    ("file", "../x"),
    ("file", "a/../../x"),
    ("file", "/abc/store2/x"),
    ("file", "/abc/store/../store2"),
    ("file", "file://localhost/abc/store/x"),
    ("file", "file://abc/store/x"),
    ("file", "memory://abc/store/x"),
    ("memory", "memory://abc/store2"),
    ("memory", "memory://other/store/x"),
    ("s3", "s3://b/store2/x"),
    ("s3", "s3://c/store/x"),
    ("s3", "s3://b/../c/store"),
    ("s3", "s3://../b/store"),
    ("s3", "gs://b/store/x"),
    ("s3", "/b/store2"),
    ("s3", "x:y/z"),  # a relative path cannot start like a scheme or drive
    ("webhdfs", "webhdfs://evil:1/db/store/x"),
    ("webhdfs", "webhdfs://localhost:1/db/store/x"),  # the store names no host in its URLs
    ("file", "a\\b"),
    ("file", "a\x00"),
    ("file", "a/\x9b"),
    ("file", "a/\u2066b"),
    ("file", "a/%2e%2E"),
    ("file", "a/%2F"),
    ("file", "a/\uff0e"),
    ("file", "a/\u2024\u2024"),  # one-dot leaders: NFKC makes them '..'
    ("file", "Metadata.Json"),
    ("file", "a/.metatree.trash.1/x"),
    ("file", "a/.LOCK"),
    ("file", "a/metadata.json. "),  # the same file on Windows
    ("file", "a/\uff4detadata.json"),  # fullwidth 'm': NFKC folds it
    ("file", "a/b*"),
    ("file", "simplecache::file:///abc/store"),
]


@pytest.mark.parametrize(("kind", "path"), REFUSED)
def test_confine_refuses(kind: str, path: str) -> None:
    fs, root = _fs(kind)
    with pytest.raises(PathError):
        confine(fs, root, path)


def test_only_a_pattern_may_hold_glob_characters() -> None:
    fs, root = _fs("file")
    assert confine(fs, root, "a/*/[bc]?.txt", pattern=True).rel == "a/*/[bc]?.txt"
    with pytest.raises(PathError, match="climbs out"):
        confine(fs, root, "*/../../x", pattern=True)


@pytest.mark.parametrize("path", [b"x", 3, None, "a\udc80"])
def test_confine_refuses_what_is_not_a_path(path: object) -> None:
    fs, root = _fs("file")
    with pytest.raises(PathError):
        confine(fs, root, path)
