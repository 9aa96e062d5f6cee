"""`Storage.read_many` against backends the conformance suite does not build: plug-ins."""

from __future__ import annotations

import pytest

from metatree import Metatree
from metatree._storage import Storage, as_storage
from metatree.backends.memory import MemoryBackend
from metatree.errors import StorageError

pytest.importorskip("pyarrow")


class OldPlugin(MemoryBackend):
    """A plug-in written against the API before `confine_many`: `confine` of two arguments."""

    seen: list[str] = []  # noqa: RUF012 - the test reads what was confined

    def confine(self, root: str, path: str) -> None:
        self.seen.append(path)


def test_a_plugin_with_the_two_argument_confine_catalogs() -> None:
    base = as_storage("memory://old-plugin")
    storage = Storage(base.fs, base.root, OldPlugin)
    tree = Metatree(storage, ("a", "b"))
    tree.put("x/y", b"1", name="f")
    OldPlugin.seen.clear()
    assert sorted(tree.catalog().column("path").to_pylist()) == ["x", "x/y"]
    assert any(path.endswith("x/y/metadata.json") for path in OldPlugin.seen)  # confined


def test_a_batch_that_fails_whole_is_a_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = Metatree("memory://batch-fails", ("a",))
    tree.put("x", b"1", name="f")

    def timed_out(*args: object) -> list[bytes | Exception]:
        raise TimeoutError("the batch took longer than its timeout")

    monkeypatch.setattr(MemoryBackend, "read_many", timed_out)
    with pytest.raises(StorageError, match="timeout"):
        tree.catalog()
