"""The cursor after a failed operation: where metatreedb 0.2.3 leaves it (issue 18).

Part of the conformance suite (mixed into `BackendConformance`). metatreedb moves its cursor
as it walks, so code ported from ``if t.get(...) is None: t.update(status="missing")`` to
``except NotFoundError: t.update(...)`` writes to the node metatreedb would write to. The
rules (docs/differences.md): ``find`` resets to the root before anything else; ``get`` of
``node/file`` resets, then stays on the node once found (even when the file is missing or
refused); a bare ``get(file)`` and a refused ``outfile`` leave the cursor alone; ``put`` is
on its target when only the file fails, on the root when the location does. A failed
operation still writes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from metatree.errors import (
    AlreadyExistsError,
    MetatreeError,
    NotFoundError,
    PathError,
    UnresolvedPathError,
)
from metatree.testing._helpers import unchanged

if TYPE_CHECKING:
    from pathlib import Path

    from metatree._paths import LocationLike
    from metatree._storage import Storage
    from metatree._tree import Metatree

__all__ = ["CursorTests"]

LEAF = ("m", "v1", "s")


class CursorTests:
    """Where the cursor is after each kind of failure (keys: model, version, stage)."""

    @pytest.fixture
    def leaves(self, tree: Metatree) -> Metatree:
        """Return a tree with two leaves, m/v1/s and m/v1/t, and the cursor on the second."""
        tree.put("m/v1/s", b"s", name="f")
        tree.put("m/v1/t", b"t", name="f")
        return tree

    def test_get_missing_file_leaves_cursor_on_its_node(
        self, leaves: Metatree, storage: Storage
    ) -> None:
        with unchanged(storage), pytest.raises(NotFoundError):
            leaves.get("m/v1/s/nope")
        assert leaves.node.path == LEAF
        leaves.update(status="missing")  # metatreedb's `if get() is None: update()`
        assert leaves.find("m/v1/s").metadata == {"status": "missing"}
        assert leaves.find("m/v1/t").metadata == {}

    def test_get_missing_node_leaves_cursor_on_root(
        self, leaves: Metatree, storage: Storage
    ) -> None:
        with unchanged(storage), pytest.raises(NotFoundError):
            leaves.get("m/v9/s/f")
        assert leaves.node.path == ()

    def test_get_unset_file_key_leaves_cursor_on_its_node(self, leaves: Metatree) -> None:
        with pytest.raises(UnresolvedPathError):
            leaves.get("m/v1/s/<model_file>")
        assert leaves.node.path == LEAF

    def test_get_of_a_directory_leaves_cursor_on_its_node(self, leaves: Metatree) -> None:
        with pytest.raises(MetatreeError):
            b"".join(leaves.get("m/v1"))  # v1 is a child node of m, not a file
        assert leaves.node.path == ("m",)

    def test_get_of_a_reserved_name_leaves_cursor_on_its_node(self, leaves: Metatree) -> None:
        with pytest.raises(PathError):
            leaves.get("m/v1/s/metadata.json")
        assert leaves.node.path == LEAF

    @pytest.mark.parametrize("location", ["m/v1/s/x/f", "nope", "<model_file>"])
    def test_get_without_a_find_leaves_cursor_alone(
        self, leaves: Metatree, storage: Storage, location: str
    ) -> None:
        """Too deep a node part fails before metatreedb's find; a bare name has no find."""
        with unchanged(storage), pytest.raises((NotFoundError, PathError)):
            leaves.get(location)
        assert leaves.node.path == ("m", "v1", "t")

    def test_existing_outfile_leaves_cursor_alone(self, leaves: Metatree, tmp_path: Path) -> None:
        out = tmp_path / "out.bin"
        out.write_bytes(b"mine")
        with pytest.raises(AlreadyExistsError):
            leaves.get("m/v1/s/f", outfile=out)
        assert leaves.node.path == ("m", "v1", "t")
        assert out.read_bytes() == b"mine"

    def test_put_of_a_stored_file_leaves_cursor_on_its_node(
        self, leaves: Metatree, storage: Storage
    ) -> None:
        leaves.find("m")
        with unchanged(storage), pytest.raises(AlreadyExistsError):
            leaves.put("m/v1/s", b"again", name="f")
        assert leaves.node.path == LEAF

    def test_put_with_an_unset_key_leaves_cursor_on_root(
        self, leaves: Metatree, storage: Storage
    ) -> None:
        leaves.find("m/v1/s")
        with unchanged(storage), pytest.raises(UnresolvedPathError):
            leaves.put("m/<active>/s", b"x", name="g")
        assert leaves.node.path == ()

    def test_put_of_a_missing_file_leaves_cursor_on_the_unwritten_node(
        self, leaves: Metatree, storage: Storage, tmp_path: Path
    ) -> None:
        """The node metatreedb created before failing is not written here: updates fail."""
        url = leaves.find("m/v1/s").location.replace("/v1/", "/v2/")
        with unchanged(storage):
            with pytest.raises(NotFoundError):
                leaves.put("m/v2/s", str(tmp_path / "absent.bin"))
            assert leaves.node.path == ("m", "v2", "s")
            assert leaves.location == url
            with pytest.raises(NotFoundError):
                leaves.update(status="failed")  # not on another node: nowhere

    @pytest.mark.parametrize(
        "location",
        ["m/v1/s/x", "m//v1", "m/a<b", "/m", {"version": "v1"}, {"model": "m", "other": "x"}],
    )
    def test_find_that_does_not_parse_leaves_cursor_on_root(
        self, leaves: Metatree, storage: Storage, location: LocationLike
    ) -> None:
        leaves.find("m/v1/s")
        with unchanged(storage), pytest.raises(PathError):
            leaves.find(location)
        assert leaves.node.path == ()
        leaves.update(k="v")  # metatreedb writes the root here
        assert leaves.find("").metadata["k"] == "v"
