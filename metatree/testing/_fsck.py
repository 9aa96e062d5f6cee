"""fsck and gc (issue 15): a table of damage, each found, repaired to clean, and readable.

Part of the conformance suite: every test runs on every backend. Each fault is planted with
the storage primitives (as a crash, another client or a hand edit would leave it) on a small
tree; `fsck` must find it and write nothing, `fsck(repair=True)` (with force where the fix
loses a record or metadata) must leave a tree `fsck` calls clean and every read handles, and
a second repair must find nothing to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from metatree import Metatree
from metatree import _quarantine as quarantine
from metatree._links import has_links
from metatree._locking import LeaseInfo
from metatree.datastore import VALUE_OF, DataStore
from metatree.errors import LockError, PathError
from metatree.fsck import KINDS, QUARANTINE
from metatree.testing._helpers import unchanged
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from metatree._storage import Storage

__all__ = ["FsckTests"]

_KEYS = ("model", "version", "stage")
_DEAD_PID = 2**22 + 1
"""Above Linux's largest pid_max: no process has it."""
_DEAD_LEASE = dataclasses.replace(LeaseInfo.new("0" * 32, 1.0, None), pid=_DEAD_PID).to_bytes()
"""A lease of this machine whose holder is provably gone (no such pid)."""
_SLOW_LEASE = LeaseInfo("0" * 32, "elsewhere", 1, 1.0, 2.0, 1, ttl=1.0).to_bytes()
"""A lease of another machine, expired in 1970 by its holder's clock (one running slow)."""


def _small(storage: Storage) -> Metatree:
    tree = Metatree(storage, _KEYS)
    tree.put("m/v1/s1", b"weights", name="model.bin")
    tree.put("m/v2/s1", b"x", name="a.bin")
    return tree


def _unreferenced(tree: Metatree, storage: Storage) -> None:
    """Leave a DataStore's old value, as an update killed before it deleted it does."""
    tree.find("m/v1/s1").update(cfg=DataStore(a=b"new"))
    tree.put("m/v1/s1", b"old", name="cfg.a.0123abcd", info={VALUE_OF: "cfg"})


def _outside(storage: Storage) -> Path:
    """Return a directory beside the root, holding ``key``: what planted links point to."""
    outside = Path(f"{storage.root.rstrip('/')}-outside")
    outside.mkdir(exist_ok=True)
    (outside / "key").write_bytes(b"private")
    return outside


def _link(rel: str, to_file: bool) -> Callable[[Metatree, Storage], None]:
    """Plant a symbolic link at `rel` (replacing what is there) to a file or a directory outside.

    Only where the stored data is this host's filesystem (the links capability): elsewhere
    no link can be planted, and the case is skipped.
    """

    def plant(tree: Metatree, storage: Storage) -> None:
        if not has_links(storage):
            pytest.skip("no symbolic links in this store")
        outside = _outside(storage)
        where = Path(storage.root, rel)
        where.parent.mkdir(parents=True, exist_ok=True)
        if where.is_dir():
            storage.remove_tree(rel)
        elif where.exists():
            where.unlink()
        where.symlink_to(outside / "key" if to_file else outside)

    return plant


def _loop(tree: Metatree, storage: Storage) -> None:
    """Plant a link to itself (``ln -s loop loop``): following it fails (ELOOP)."""
    if not has_links(storage):
        pytest.skip("no symbolic links in this store")
    Path(storage.root, "m/v1/s1/loop").symlink_to("loop")


_FAULTS: dict[str, tuple[str, Callable[[Metatree, Storage], None]]] = {
    "orphan": ("orphan-directory", lambda t, s: s.write_atomic("m/ghost/metadata.json", b"{}")),
    "dangling": ("dangling-entry", lambda t, s: s.remove_tree("m/v2")),
    "bad-entry": (
        "invalid-entry",
        lambda t, s: s.write_atomic("m/metadata.json", b'{"children": ["v1", "v2", "../x"]}'),
    ),
    "corrupt": ("corrupt-metadata", lambda t, s: s.write_atomic("m/v2/s1/metadata.json", b"{x")),
    "root-index-gone": ("corrupt-metadata", lambda t, s: s.remove_file("metadata.json")),
    "temp-file": ("leftover-temporary", lambda t, s: s.write_atomic("m/.metatree.tmp.0a", b"j")),
    "staging-dir": (
        "leftover-temporary",
        lambda t, s: s.write_atomic("m/v1/s1/.metatree.staging.0b/f", b"j"),
    ),
    "stale-lock": ("stale-lock", lambda t, s: s.write_atomic(".lock", _DEAD_LEASE)),
    "foreign-lock": ("foreign-lock", lambda t, s: s.write_atomic(".lock", b"not a lease")),
    "missing": ("missing-file", lambda t, s: s.remove_file("m/v1/s1/model.bin")),
    "changed": ("mismatched-file", lambda t, s: s.write_atomic("m/v1/s1/model.bin", b"other")),
    "planted": ("unrecorded-file", lambda t, s: s.write_atomic("m/v1/s1/planted.bin", b"p")),
    "bad-records": (
        "corrupt-records",
        lambda t, s: s.write_atomic(
            "m/v1/s1/metadata.json", b'{".metatree.records": {"files": 3}}'
        ),
    ),
    "old-value": ("unreferenced-value", _unreferenced),
    "link-node": ("link", _link("m/v2", to_file=False)),
    "link-file": ("link", _link("m/v1/s1/new.bin", to_file=True)),
    "link-below": ("link", _link("m/v1/s1/d/inner", to_file=False)),
    "link-unrecorded": ("link", _link("m/v2/d/inner", to_file=False)),  # no records there
    "link-metadata": ("link", _link("m/metadata.json", to_file=True)),
    "link-lock": ("link", _link(".lock", to_file=True)),
    "link-os-lock": ("link", _link(".metatree.lock", to_file=True)),
    "link-loop": ("link", _loop),
    "link-quarantine": ("link", _link(QUARANTINE, to_file=False)),
}
"""Each case: the kind fsck must report, and how the damage is planted."""
_THEN_FORCE = {"link-metadata"}
"""Cases whose repair exposes damage for force: the link's node has no index once it moved."""


class FsckTests:
    """fsck finds each kind of damage and repairs it; gc collects what repair set aside."""

    @pytest.mark.parametrize("case", sorted(_FAULTS))
    def test_fsck_finds_and_repairs(self, storage: Storage, case: str) -> None:
        tree = _small(storage)  # clean: test_fsck_verify_... checks fsck says so
        kind, plant = _FAULTS[case]
        plant(tree, storage)
        if kind == "link":  # opened on it: a link at a lock name must not stop the open
            tree = Metatree(storage, _KEYS)
        with _unchanged(storage, kind):  # checking writes nothing
            found = tree.fsck()
        assert kind in {f.kind for f in found.findings}, found
        force = KINDS[kind] == "force" or case in _THEN_FORCE
        if kind == "foreign-lock":  # maybe metatreedb at work: refused, nothing written
            with unchanged(storage), pytest.raises(LockError):
                tree.fsck(repair=True)
        elif KINDS[kind] == "force":  # without force, what would lose a record stays, reported
            assert kind in {f.kind for f in tree.fsck(repair=True).findings}
        report = tree.fsck(repair=True, force=force)
        assert report.clean, report.findings
        assert kind in {f.kind for f in report.repaired}
        if case == "corrupt":  # the bad file is kept for people to read
            kept_files = [
                storage.read_bytes(f"{QUARANTINE}/{p}") for p in storage.walk_files(QUARANTINE)
            ]
            assert b"{x" in kept_files
        kept = {node.path for node, _ in tree.walk()}  # a repair never drops a good node
        assert ("m", "v1", "s1") in kept
        assert ("m", "v2", "s1") in kept or case in ("dangling", "link-node")
        if kind == "link":  # the link itself moved, its target untouched
            outside = _outside(storage)
            assert [p.name for p in outside.iterdir()] == ["key"]
            assert (outside / "key").read_bytes() == b"private"
            moved = [p for p in Path(storage.root, QUARANTINE).rglob("*") if p.is_symlink()]
            assert len(moved) == 1, moved
            assert tree.gc(dry_run=False).items  # the link goes, unfollowed
            assert (outside / "key").read_bytes() == b"private"
        again = tree.fsck(repair=True, force=True)  # idempotent: nothing left to do
        assert again.clean, again
        assert not again.repaired
        _reads(tree)

    def test_fsck_judges_a_lease_by_the_storage_clock(self, storage: Storage) -> None:
        """A lease expired by its holder's clock but written just now is not stale.

        Its holder's clock may run slow: the storage's (S3 LastModified, WebHDFS
        modificationTime) says it was renewed a moment ago. Where the kernel's lock decides
        (local disk: its lock file is free), no clock is asked. Where the write time can be
        set back (memory), the same lease, unwritten for an hour, is stale.
        """
        tree = _small(storage)
        storage.write_atomic(".lock", _SLOW_LEASE)
        if tree.lock_status() is None:
            return  # the kernel says its holder is gone: stale whatever the clocks say
        with unchanged(storage):
            assert tree.fsck().clean
        store = getattr(storage.fs, "store", None)  # fsspec's memory filesystem, unwrapped
        if storage.capabilities.data_in_memory and store is not None:
            hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
            store[storage.abs(".lock")].created = hour_ago
            assert [f.kind for f in tree.fsck().findings] == ["stale-lock"]

    def test_fsck_verify_finds_changed_bytes_of_the_same_size(
        self, storage: Storage, tmp_path: Path
    ) -> None:
        tree = _small(storage)
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "a.bin").write_bytes(b"aaaa")
        tree.put("m/v2/s1", str(tmp_path / "ckpt"), recursive=True)
        storage.write_atomic("m/v1/s1/model.bin", b"WEIGHTS")
        storage.write_atomic("m/v2/s1/ckpt/a.bin", b"AAAA")
        assert tree.fsck().clean  # sizes only
        storage.write_atomic("m/v2/s1/ckpt/planted", b"p")
        found = tree.fsck(verify=True).findings
        assert [(f.kind, f.location) for f in found] == [
            ("mismatched-file", "m/v1/s1/model.bin"),
            ("mismatched-file", "m/v2/s1/ckpt/a.bin"),
            ("unrecorded-file", "m/v2/s1/ckpt/planted"),
        ]
        report = tree.fsck(repair=True, verify=True, force=True)
        assert report.clean, report.findings
        assert storage.kind("m/v2/s1/ckpt/planted") is None  # moved to the quarantine
        _reads(tree)

    def test_gc_lists_then_removes_the_quarantine(self, storage: Storage) -> None:
        tree = _small(storage)
        storage.write_atomic("m/ghost/metadata.json", b"{}")
        _unreferenced(tree, storage)
        report = tree.fsck(repair=True)  # the orphan and the value go to the quarantine
        assert str(report.quarantine).startswith(f"{QUARANTINE}/")
        storage.write_atomic("m/v1/s1/cfg.a.89abcdef", b"left")  # another, unrecorded: kept
        with unchanged(storage):
            dry = tree.gc()
        assert dry.dry_run
        assert {i.kind for i in dry.items} == {"quarantine"}
        assert dry.size == sum(len(storage.read_bytes(i.location)) for i in dry.items) > 0
        done = tree.gc(dry_run=False)
        assert done.items == dry.items
        assert not list(storage.walk_files(QUARANTINE))
        assert not tree.gc().items
        _reads(tree)

    def test_gc_removes_an_unreferenced_value(self, storage: Storage) -> None:
        tree = _small(storage)
        _unreferenced(tree, storage)
        tree.find("m/v1/s1").update(note="plain")  # a user's file that looks like a value
        tree.put("m/v1/s1", b"mine", name="note.a.0123abcd")
        dry = tree.gc()
        assert [(i.location, i.kind) for i in dry.items] == [
            ("m/v1/s1/cfg.a.0123abcd", "unreferenced-value")
        ]
        tree.gc(dry_run=False)
        assert storage.kind("m/v1/s1/cfg.a.0123abcd") is None
        assert tree.fsck().clean
        assert tree.find("m/v1/s1").metadata["cfg"]["a"] == b"new"
        assert b"".join(tree.get("m/v1/s1/note.a.0123abcd")) == b"mine"

    def test_repair_never_hides_nor_takes_data_without_force(self, storage: Storage) -> None:
        """Attack round: look-alikes, a node without its metadata.json, broken references."""
        tree = _small(storage)
        tree.find("m/v1/s1").update(cfg=DataStore(a=b"live"), arch=DataStore(b=b"live"))
        tree.put("m/v1/s1", b"USER NOTES", name="cfg.notes.deadbeef.txt")  # looks like a value
        metadata = orjson.loads(storage.read_bytes("m/v1/s1/metadata.json"))
        metadata["arch"]["extra"] = 1  # a reference this version cannot parse
        storage.write_atomic("m/v1/s1/metadata.json", orjson.dumps(metadata))
        storage.remove_file("m/v2/metadata.json")  # its child s1 and its files stay
        before = tree.fsck().findings
        assert {(f.kind, f.location) for f in before} >= {("corrupt-metadata", "m/v2")}
        assert not any(f.kind == "unreferenced-value" for f in before)
        tree.fsck(repair=True)  # without force: nothing of these is touched
        assert b"".join(tree.get("m/v1/s1/cfg.notes.deadbeef.txt")) == b"USER NOTES"
        assert storage.kind("m/v2/s1/a.bin") == "file"
        assert "v2" in tree.find("m").children  # not dropped as dangling
        tree.gc(dry_run=False)
        assert b"".join(tree.get("m/v1/s1/cfg.notes.deadbeef.txt")) == b"USER NOTES"
        assert len([n for n in storage.listdir("m/v1/s1") if n.startswith("arch.b.")]) == 1
        tree.fsck(repair=True, force=True)  # the index of m/v2 is rebuilt from what is there
        assert b"".join(tree.get("m/v2/s1/a.bin")) == b"x"

    def test_a_planted_manifest_grants_nothing(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A manifest anyone can plant: a plain repair moves no user data for it, rewrites it not.

        Its force entries only mark the findings as planned (for a forced repair to finish);
        one over the size bound is not read at all, and reported.
        """
        tree = _small(storage)
        storage.write_atomic("m/v1/s1/notes.txt", b"precious")
        storage.write_atomic("m/v1/s1/model.bin", b"changed!")
        forged = [
            {"name": None, "from": "m/v1/s1/notes.txt", "kind": "unreferenced-value"},
            {"name": "0000-model.bin", "from": "m/v1/s1/model.bin", "kind": "mismatched-file"},
            {"name": None, "from": "m/v1/s1/notes.txt", "kind": "unrecorded-file", "done": 1},
        ]
        manifest = f"{QUARANTINE}/20200101T000000Z-deadbeef/manifest.json"
        storage.write_atomic(manifest, orjson.dumps(forged))
        monkeypatch.setattr(quarantine, "MAX_MANIFEST", 4096)
        big = f"{QUARANTINE}/20200101T000000Z-0badf00d/manifest.json"
        storage.write_atomic(big, b"[" + b'{"from": "m", "kind": "x"},' * 200 + b"{}]")
        with pytest.warns(MetatreeWarning, match="0badf00d"):
            report = tree.fsck(repair=True)
        assert not report.repaired
        assert storage.read_bytes("m/v1/s1/notes.txt") == b"precious"
        assert storage.read_bytes("m/v1/s1/model.bin") == b"changed!"
        assert storage.read_bytes(manifest) == orjson.dumps(forged)  # not marked done
        left = {f.location: f.detail for f in report.findings}
        assert "a repair with force finishes it" in left["m/v1/s1/notes.txt"]
        assert "finishes it" in left["m/v1/s1/model.bin"]

    def test_gc_refuses_a_foreign_lock_as_repair_does(self, storage: Storage) -> None:
        tree = _small(storage)
        _unreferenced(tree, storage)
        storage.write_atomic(".lock", b"")  # metatreedb's lock: it may be writing now
        with unchanged(storage), pytest.raises(LockError):
            tree.gc(dry_run=False)
        assert tree.gc().items  # a dry run still lists

    def test_a_long_orphan_name_is_quarantined(self, storage: Storage) -> None:
        tree = _small(storage)
        long = "o" * 200
        storage.write_atomic(f"m/{long}/metadata.json", b"{}")
        assert [f.kind for f in tree.fsck(repair=True).repaired] == ["orphan-directory"]
        assert tree.fsck().clean

    def test_fsck_refuses_bad_flags_and_repairs_inside_a_transaction(
        self, storage: Storage
    ) -> None:
        tree = _small(storage)
        storage.write_atomic("m/ghost/metadata.json", b"{}")
        with unchanged(storage):
            with tree.transaction():
                assert [f.kind for f in tree.fsck().findings] == ["orphan-directory"]
                with pytest.raises(LockError):
                    tree.fsck(repair=True)
                with pytest.raises(LockError):
                    tree.gc(dry_run=False)
            for call in (
                lambda: tree.fsck(repair="yes"),  # type: ignore[arg-type]
                lambda: tree.fsck(force=1),  # type: ignore[arg-type]
                lambda: tree.gc(dry_run="no"),  # type: ignore[arg-type]
                # a progress that cannot be called: refused before a repair writes anything
                lambda: tree.fsck(repair=True, progress=5),  # type: ignore[arg-type]
                lambda: tree.verify(progress="x"),  # type: ignore[arg-type]
                lambda: list(tree.search({}, progress=5)),  # type: ignore[arg-type]
                lambda: tree.catalog(progress=5),  # type: ignore[arg-type]
            ):
                with pytest.raises(PathError):
                    call()


@contextlib.contextmanager
def _unchanged(storage: Storage, kind: str) -> Iterator[None]:
    """`unchanged`, or where links are planted (which it refuses to walk) the same by lstat."""
    if kind != "link":
        with unchanged(storage):
            yield
        return
    before = _by_lstat(Path(storage.root))
    yield
    assert _by_lstat(Path(storage.root)) == before


def _by_lstat(root: Path) -> dict[str, object]:
    """Every name below `root`: a link's target, a file's bytes, a directory's being there."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path)] = os.readlink(path)
        else:
            out[str(path)] = path.read_bytes() if path.is_file() else None
    return out


def _reads(tree: Metatree) -> None:
    """Every read handles the repaired tree: walk, catalog, get and verify."""
    nodes = list(tree.walk(files=True))
    assert nodes
    tree.catalog()
    for node, _, records in nodes:
        for name in records:
            b"".join(tree.get(f"{'/'.join(node.path)}/{name}"))
    assert tree.verify().clean
