"""The hypothesis state machine: random API programs checked against a plain dict model.

Example tests pin the behaviours we thought of; the machine finds sequences we did not (a
name re-created after removal, a dangling pointer, a file named like a node). As zarr's
``ZarrHierarchyStateMachine``, each rule makes one call on `Metatree` and on `_Model`, the
outcomes (value or error type) must agree, and invariants compare the whole tree after every
step. Settings: `StatefulTests.state_machine_settings`, by default ``max_examples=40,
stateful_step_count=30, deadline=None, database=None``, health checks ``too_slow`` and
``function_scoped_fixture`` suppressed; a slow backend's test class lowers them.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from metatree._names import LOCK_FILE
from metatree._paths import check_location_name
from metatree._storage import Storage
from metatree._tree import Metatree
from metatree.errors import (
    AlreadyExistsError,
    MetatreeError,
    NotFoundError,
    PathError,
    UnresolvedPathError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["StatefulTests", "TreeMachine"]

KEYS = ("model", "version", "stage")  # conformance.KEYS; not imported, it imports us
NODE_NAMES = ("a", "b", "c")  # tiny alphabets: collisions and re-creations happen all the time
FILE_NAMES = ("c", "f", "g")  # "c" is both, so files named like a child node (and back) come up
POINTERS = ("active", "best")  # keys the rules point at an entry, read as <active> segments
META_KEYS = ("active", "score", "note")  # "active" is also a pointer: updates may break it

_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what `_check_value` accepts, both ends included
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
metadata_updates = st.dictionaries(st.sampled_from(META_KEYS), json_values, max_size=2)  # {}: no-op
payloads = st.binary(max_size=24)


def _outcome(operation: Callable[[], object]) -> object:
    """Return what `operation` returns, or the `MetatreeError` it raises."""
    try:
        return operation()
    except MetatreeError as exc:
        return exc


@dataclass
class _ModelNode:
    """A node as the model sees it: user metadata, ordered children, file contents."""

    metadata: dict[str, Any] = field(default_factory=dict)
    children: dict[str, _ModelNode] = field(default_factory=dict)  # dicts keep insertion order
    files: dict[str, bytes] = field(default_factory=dict)

    def entries(self) -> list[str]:
        return sorted({*self.files, *self.children})  # one entry if they share a name (S3)


class _Model:
    """What the tree must contain, written from the spec rather than from `Database`.

    Failing operations raise the `MetatreeError` subclass the real call must raise, and
    change nothing: every check comes before the first mutation.
    """

    def __init__(self, exclusive_names: bool) -> None:
        self.root = _ModelNode()
        self.cursor: tuple[str, ...] = ()
        self.exclusive_names = exclusive_names  # the backend's capability (docs/requests.md)

    def node(self, path: tuple[str, ...]) -> _ModelNode:
        node = self.root
        for name in path:
            node = node.children[name]
        return node

    def has(self, path: tuple[str, ...]) -> bool:
        try:
            self.node(path)
        except KeyError:
            return False
        return True

    def update_cursor(self, values: dict[str, Any]) -> None:
        """Update the cursor's node: `NotFoundError` if a failed put left it on a new one."""
        if not values:
            return  # update() without arguments does nothing, wherever the cursor is
        if not self.has(self.cursor):
            raise NotFoundError("/".join(self.cursor))
        self.node(self.cursor).metadata.update(values)

    def walk(self) -> Iterator[tuple[tuple[str, ...], _ModelNode]]:
        stack: list[tuple[tuple[str, ...], _ModelNode]] = [((), self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            stack.extend(((*path, n), c) for n, c in reversed(node.children.items()))

    @staticmethod
    def name(segment: str, node: _ModelNode) -> str:
        """Return a literal segment, or the name a ``<key>`` segment points to in `node`."""
        if not segment.startswith("<"):
            return segment
        value = node.metadata.get(segment[1:-1])
        if not isinstance(value, str):
            raise UnresolvedPathError(segment, "missing or not a str")
        try:
            # a location may name what metatreedb stored (`check_location_name`), so a value
            # only the portable rules refuse (a C1 control character) resolves, then is
            # simply not found; the naming rules are not the model's subject
            return check_location_name(value, segment)
        except PathError:
            raise UnresolvedPathError(segment, "not a valid name") from None

    def resolve(self, segments: list[str]) -> tuple[str, ...]:
        path: tuple[str, ...] = ()
        node = self.root
        for segment in segments:
            name = self.name(segment, node)
            if name not in node.children:
                raise NotFoundError("/".join((*path, name)))
            path, node = (*path, name), node.children[name]
        return path

    def find(self, segments: list[str]) -> tuple[str, ...]:
        self.cursor = ()  # as metatreedb: a failed find leaves the cursor at the root
        self.cursor = self.resolve(segments)
        return self.cursor

    def exists(self, segments: list[str]) -> bool:
        if not segments:
            return True
        try:
            node = self.node(self.resolve(segments[:-1]))
            name = self.name(segments[-1], node)
        except (NotFoundError, UnresolvedPathError):
            return False
        return name in node.children or name in node.files

    def put(self, segments: list[str], name: str, data: bytes, force: bool) -> str:
        """Store a file, creating nodes; return its path (`Metatree.put` returns True)."""
        path: tuple[str, ...] = ()
        node = self.root
        new: list[str] = []
        self.cursor = ()  # as metatreedb: a put whose walk fails leaves the root (issue 18)
        for index, segment in enumerate(segments):
            child = self.name(segment, node)
            if child not in node.children:
                if any(s.startswith("<") for s in segments[index + 1 :]):
                    raise UnresolvedPathError(segment, "cannot resolve below a new node")
                if child in node.files and self.exclusive_names:
                    if index == len(segments) - 1:  # metatreedb's walk ends on the file
                        self.cursor = (*path, child)
                    raise AlreadyExistsError(child, "a file has this name")
                new = [child, *segments[index + 1 :]]
                break
            path, node = (*path, child), node.children[child]
        if not new:
            self.cursor = path  # the walk succeeded: a failing file leaves the cursor here
            if name in node.children:
                raise AlreadyExistsError(name, "a child node has this name")
            if name in node.files and not force:
                raise AlreadyExistsError(name)
        for child in new:
            node.children[child] = _ModelNode()
            node = node.children[child]
        node.files[name] = data
        self.cursor = (*path, *new)
        return "/".join((*self.cursor, name))

    def get(self, segments: list[str]) -> bytes:
        """Return a file's bytes; a bare name is a file of the cursor's node (metatreedb)."""
        if len(segments) > 1:  # as metatreedb's find: the root first, then the node
            self.cursor = ()
            self.cursor = self.resolve(segments[:-1])
        if not self.has(self.cursor):  # a node a failed put did not create
            raise NotFoundError("/".join(self.cursor))
        node = self.node(self.cursor)
        name = self.name(segments[-1], node)
        if name not in node.files:  # a child node is no file either
            raise NotFoundError(name)
        return node.files[name]

    def remove(self, segments: list[str], recursive: bool) -> None:
        node = self.node(self.resolve(segments[:-1]))
        name = self.name(segments[-1], node)
        if name in node.children:
            child = node.children[name]
            if not recursive and (child.files or child.children):
                raise PathError(name, "not empty")
            del node.children[name]  # a file sharing its name (S3) is another entry: kept
        elif name in node.files:
            del node.files[name]
        else:
            raise NotFoundError(name)
        self.cursor = ()  # Metatree.remove resets it: it may have named what was removed


class TreeMachine(RuleBasedStateMachine):
    """Runs random programs on a fresh database; `make_storage` gives each one its root.

    Locations are drawn from the model's existing paths (so most calls reach real nodes),
    sometimes with a segment swapped for a ``<pointer>`` that names it, and extended by
    random segments (so misses, dangling pointers and new nodes come up as well).
    """

    def make_storage(self) -> Storage:
        """Return a fresh, empty root; bound by `StatefulTests.test_state_machine`."""
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.storage = self.make_storage()
        self.tree = Metatree(self.storage, KEYS)
        self.model = _Model(self.storage.capabilities.exclusive_names)

    def teardown(self) -> None:
        """Delete the example's root, so that a run leaves little behind on remote stores."""
        self.storage.remove_tree("")

    # -- drawing locations --------------------------------------------------------------
    def _existing(self, data: st.DataObject) -> tuple[list[str], tuple[str, ...]]:
        """Return an existing node as location segments (some via pointers), and its path."""
        path = data.draw(st.sampled_from([p for p, _ in self.model.walk()]), label="node")
        segments = list(path)
        for depth, name in enumerate(path):
            parent = self.model.node(path[:depth])
            keys = [k for k in POINTERS if parent.metadata.get(k) == name]
            if not keys or not data.draw(st.booleans(), label="via pointer"):
                continue
            segments[depth] = f"<{data.draw(st.sampled_from(keys), label='pointer')}>"
        return segments, path

    def _location(
        self,
        data: st.DataObject,
        names: tuple[str, ...],
        extra: int,
        *,
        file: bool = False,
        at_least: int = 0,
    ) -> list[str]:
        """Return an existing node's segments, then `at_least` to `extra` random ones.

        With `file`, the last segment may name a file, so the location may be one segment
        deeper than the tree. The first added segment favours the node's own entries, so
        that gets and removes hit as often as they miss.
        """
        segments, path = self._existing(data)
        node = self.model.node(path)
        room = min(extra, len(KEYS) + int(file) - len(segments))
        count = data.draw(st.integers(min(at_least, room), room), label="added")
        if count == 0:
            return segments
        pointers = tuple(f"<{k}>" for k in POINTERS)
        entries = (*node.children, *node.files)  # files too: new nodes named like them
        segments.append(data.draw(st.sampled_from((*entries, *names, *pointers)), label="entry"))
        more = st.lists(
            st.sampled_from((*names, *pointers)), min_size=count - 1, max_size=count - 1
        )
        return segments + data.draw(more, label="more")

    @staticmethod
    def _check(expect: Callable[[], object], call: Callable[[], object]) -> None:
        """Run the model then the real call: the same error type, or the same result."""
        expected, actual = _outcome(expect), _outcome(call)
        if isinstance(expected, MetatreeError) or isinstance(actual, MetatreeError):
            assert type(actual) is type(expected), f"got {actual!r}, the model: {expected!r}"
        else:
            assert actual == expected, f"got {actual!r}, the model: {expected!r}"

    # -- rules --------------------------------------------------------------------------
    @rule(
        data=st.data(),
        name=st.sampled_from((*FILE_NAMES, *NODE_NAMES)),
        payload=payloads,
        force=st.booleans(),
    )
    def put(self, data: st.DataObject, name: str, payload: bytes, force: bool) -> None:
        """Put a file, into an existing node or creating the nodes on the way."""
        segments = self._location(data, NODE_NAMES, extra=3)
        location = "/".join(segments)

        def put_and_url() -> tuple[bool, str]:
            stored = self.tree.put(location, payload, force=force, name=name)
            return stored, self.tree.url(f"{location}/{name}" if location else name)

        self._check(
            lambda: (True, self.storage.url_of(self.model.put(segments, name, payload, force))),
            put_and_url,
        )

    @rule(data=st.data(), values=metadata_updates, via_cursor=st.booleans())
    def update(self, data: st.DataObject, values: dict[str, Any], via_cursor: bool) -> None:
        """Merge metadata, through a found `Node` or through the cursor (metatreedb style)."""
        if via_cursor:  # the cursor may name a node a failed put did not create
            self._check(
                lambda: self.model.update_cursor(values), lambda: self.tree.update(**values)
            )
            return
        segments, _ = self._existing(data)
        self.tree.find("/".join(segments)).update(**values)
        self.model.node(self.model.find(segments)).metadata.update(values)

    @rule(data=st.data(), key=st.sampled_from(POINTERS), to_file=st.booleans())
    def point(self, data: st.DataObject, key: str, to_file: bool) -> None:
        """Set ``key=<name>`` in a node: mostly an entry of it, sometimes a dangling name."""
        segments, path = self._existing(data)
        node = self.model.node(path)
        pool = [*node.files] if to_file else [*node.children]
        value = data.draw(st.sampled_from([*pool, *NODE_NAMES, *FILE_NAMES]), label="value")
        self.tree.find("/".join(segments)).update(**{key: value})
        self.model.find(segments)
        node.metadata[key] = value

    @rule(data=st.data())
    def find(self, data: st.DataObject) -> None:
        """Find a node (through pointers, or missing): the path or the model's error."""
        segments = self._location(data, NODE_NAMES, extra=1)
        location = "/".join(segments)
        self._check(lambda: self.model.find(segments), lambda: self.tree.find(location).path)

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        """Read a file, named directly or by ``<pointer>``; a node or a miss is NotFound."""
        segments = self._location(data, FILE_NAMES, extra=1, file=True, at_least=1)
        location = "/".join(segments)
        if len(segments) == 1 and not self.model.has(self.model.cursor):
            # a failed put left the cursor, as metatreedb's, on a node it did not create or
            # on a stored file used as a node name: a bare name there is no file to read
            try:
                b"".join(self.tree.get(location))
            except (NotFoundError, AlreadyExistsError):
                return
            raise AssertionError(f"get({location!r}) on {self.model.cursor} did not fail")
        self._check(lambda: self.model.get(segments), lambda: b"".join(self.tree.get(location)))

    @rule(data=st.data())
    def exists(self, data: st.DataObject) -> None:
        """`exists` of nodes, files, misses and unresolved pointers (False, never an error)."""
        segments = self._location(data, (*NODE_NAMES, *FILE_NAMES), extra=1, file=True)
        location = "/".join(segments)
        self._check(lambda: self.model.exists(segments), lambda: self.tree.exists(location))

    @rule(data=st.data(), recursive=st.booleans())
    def remove(self, data: st.DataObject, recursive: bool) -> None:
        """Remove a file or a node (a non-empty node needs `recursive`), or miss."""
        segments = self._location(data, (*NODE_NAMES, *FILE_NAMES), extra=1, file=True)
        if not segments:
            return  # the root: refused, and covered by the example tests
        location = "/".join(segments)
        self._check(
            lambda: self.model.remove(segments, recursive),
            lambda: self.tree.remove(location, recursive=recursive),
        )

    @rule(data=st.data())
    def walk_subtree(self, data: st.DataObject) -> None:
        """Walk from a node: its subtree in index order; only find, put, get move the cursor."""
        segments, path = self._existing(data)
        expected = [p for p, _ in self.model.walk() if p[: len(path)] == path]
        assert [n.path for n, _ in self.tree.walk("/".join(segments))] == expected

    @rule()
    def list_cursor(self) -> None:
        """`Metatree.list` acts on the cursor, wherever the last call left it."""
        if self.model.has(self.model.cursor):  # not a node a failed put did not create
            assert self.tree.list() == self.model.node(self.model.cursor).entries()

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def tree_matches_model(self) -> None:
        """Walk the tree: the model's nodes in index order, with the same metadata and entries."""
        expected = list(self.model.walk())
        actual = list(self.tree.walk())
        assert [n.path for n, _ in actual] == [p for p, _ in expected]
        for (node, metadata), (path, model) in zip(actual, expected, strict=True):
            user = {k: v for k, v in metadata.items() if k != "children"}
            typed = json.dumps(user, sort_keys=True)  # as JSON text, True == 1 no longer holds
            assert typed == json.dumps(model.metadata, sort_keys=True), path
            assert metadata.get("children", []) == node.children == list(model.children), path
            assert node.list() == model.entries(), path

    @invariant()
    def no_lock_left_and_cursor_agrees(self) -> None:
        """Every write released the DB lock; the cursor is where the model says."""
        assert self.storage.kind(LOCK_FILE) is None
        assert self.tree.node.path == self.model.cursor


class StatefulTests:
    """Mixin of `BackendConformance`: run `TreeMachine` on the backend's storage."""

    state_machine_settings: ClassVar[settings] = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,  # remote backends have slow, uneven latencies
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,  # a shipped plugin writes no .hypothesis/ into the user's project
        # A failure must be reported within pytest's timeout: the explain phase alone took 70%
        # of a failing run, and one bug shrunk is enough (fix it, rerun for the next).
        phases=[phase for phase in Phase if phase is not Phase.explain],
        report_multiple_bugs=False,
        # Developers' runs draw fresh programs each time (a failure is a real bug, printed as
        # a minimal program to replay); CI (CI=true) replays a fixed set, so that whether a
        # submission lands does not depend on the draw.
        derandomize=bool(os.environ.get("CI")),
    )
    """Slow backends: ``settings(StatefulTests.state_machine_settings, max_examples=10)``."""

    def test_state_machine(self, storage: Storage) -> None:
        fs, base = storage.fs, storage

        class Bound(TreeMachine):
            def make_storage(self) -> Storage:
                # the fixture's backend class too: a storage may name one (an opt-in lock)
                return Storage(fs, base.abs(f"run-{uuid.uuid4().hex}"), type(base.backend))

        run_state_machine_as_test(Bound, settings=self.state_machine_settings)
