"""kill -9 trials: a writer killed anywhere leaves a tree that fsck repairs to clean (issue 15).

Each trial forks a child (no interpreter start-up: a trial costs a few ms) that opens a fresh
tree on local disk and runs `_PROGRAM`: puts of files and of a directory, forced replaces of
both, updates, DataStore values replaced, a transaction of several writes, removes. The parent
SIGKILLs it at a random point of one step: steps in turn, the point drawn uniformly in the
step's span measured by calibration runs, counted from the step's start as the child reports
it (so the kills land in every step, however long the steps before took). Then:

* the kernel released the killed holder's ``flock``: the lock file can be locked at once, so
  the repair needs no lock breaking (a ``.lock`` lease left behind is a stale-lock finding);
* ``fsck(repair=True, force=True)`` ends clean, and a second ``fsck()`` finds nothing;
* every read works: `walk`, `catalog` (with pyarrow), a get of every recorded file, every
  DataStore value, `verify`;
* nothing committed was lost: the child reports each step it finished through a pipe, and the
  tree must hold what the finished steps produced, and for what the step in flight changes,
  the state before or after it: wholly one or the other, except in the transaction, whose
  commit may stop after a prefix (no journal: docs say so).

One exception to "nothing lost", from the core write path (docs/format.md, Integrity on read):
a forced put replaces the file (or directory) before its record, so a kill between them leaves
the new data under the old record; force moves that data to the quarantine. The old data was
deleted by the put itself, not by fsck: the target may then be gone, provided the quarantine
holds the new data. A put into a node without records killed before its record leaves a file
without record, which fsck cannot tell from one metatreedb stored: it stays, unrecorded.

The trees live on ``/dev/shm`` where it exists: a kill -9 leaves the same state on any local
filesystem (the page cache survives the process), and a tmpfs has no fsync cost to pay.
"""

from __future__ import annotations

import fcntl
import gc
import itertools
import os
import random
import shutil
import signal
import statistics
import struct
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from metatree import DataStore, Metatree
from metatree import fsck as fsck_module
from metatree._core import index
from metatree._core.db import Database
from metatree._locking import LeaseInfo
from metatree.backends.local import LocalBackend
from metatree.datastore import VALUE_OF
from metatree.fsck import KINDS, QUARANTINE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

_KEYS = ("exp", "run")
_CALIBRATIONS = 3
_VALUE_PREFIX = "results."
"""DataStore value files (``results.<key>.<token>.bin``): random names, compared by value."""
_Step = tuple[str, "Callable[[Metatree, Path], object]", str]


def _replace_directory(tree: Metatree, src: Path) -> None:
    tree.put("e1/r2", str(src / "sub"), recursive=True, name="d", force=True)


def _transaction(tree: Metatree, src: Path) -> None:
    with tree.transaction():
        tree.put("e2/r1", b"g", name="g.bin")
        tree.put("e1/r1", b"cc", name="f.bin", force=True)
        tree.put("e1/r1", b"hhh", name="h.bin")
        tree.remove("e1/r2", recursive=True)
        tree.find("e1").update(k=1)


_PROGRAM: list[_Step] = [
    # (name, step, how it may end when killed: "atomic" wholly or not at all; "replace" as
    # atomic, or its target gone and the new data quarantined; "partial" any prefix)
    ("put file", lambda t, s: t.put("e1/r1", b"aaaaa", name="f.bin"), "atomic"),
    ("put directory", lambda t, s: t.put("e1/r2", str(s), recursive=True, name="d"), "atomic"),
    ("forced directory put", _replace_directory, "replace"),
    ("update", lambda t, s: t.find("e1/r1").update(status="new", n=1), "atomic"),
    ("datastore", lambda t, s: t.find("e1/r1").update(results=DataStore(w=b"x1")), "atomic"),
    (
        "datastore replaced",
        lambda t, s: t.find("e1/r1").update(results=DataStore(w=b"x22", s=b"y")),
        "atomic",
    ),
    ("forced put", lambda t, s: t.put("e1/r1", b"bbbbbbb", name="f.bin", force=True), "replace"),
    ("transaction", _transaction, "partial"),
    ("remove file", lambda t, s: t.remove("e1/r1/h.bin"), "atomic"),
    ("put in an inner node", lambda t, s: t.put("e1", b"readme", name="README"), "atomic"),
    ("remove node", lambda t, s: t.remove("e2", recursive=True), "atomic"),
]
"""The writer's program: each step's result is checked as the reference run saw it."""
_TRIALS = int(os.environ.get("METATREE_KILL_TRIALS", 10 * len(_PROGRAM)))
"""10 kills per step; more to hunt (``METATREE_KILL_TRIALS=2000``; a failure prints its seed)."""


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """A directory for the trees: on tmpfs where there is one (no fsync cost), else tmp_path."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        yield tmp_path
        return
    where = Path(tempfile.mkdtemp(prefix="metatree-kill-", dir=shm))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """The local directory the program puts recursively."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"A" * 10)
    (src / "sub" / "b.bin").write_bytes(b"B" * 20)
    return src


def _child(root: Path, src: Path, done: int) -> None:
    """Run the program in this (forked) process; after each step, write the time on `done`."""
    status = 1
    gc.disable()  # a collection would touch (so copy) every page of the parent's heap
    try:
        tree = Metatree(str(root), _KEYS, lock_timeout=5.0)
        for _, step, _ in _PROGRAM:
            step(tree, src)
            os.write(done, struct.pack("d", time.perf_counter()))  # 8 bytes: one atomic write
        status = 0
    finally:
        os._exit(status)  # never back into pytest's frames


def _run(root: Path, src: Path, kill: tuple[int, float] | None) -> list[float]:
    """Fork the writer; with `kill` = (step, delay), SIGKILL it `delay` seconds into that step.

    The step's start is the fork (step 0) or the end of the step before, which the child
    reports: so each kill lands in the step it aims at, whatever the steps before it took on
    a busy machine. Returns when each step the child finished ended, in seconds after the
    fork (``perf_counter`` is the system's monotonic clock, the same in both processes).
    """
    read, write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(root, src, write)
    os.close(write)
    data = b""
    try:
        if kill is not None:
            step, delay = kill
            while len(data) < 8 * step and (chunk := os.read(read, 8 * step - len(data))):
                data += chunk
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if kill is None:
            assert os.waitstatus_to_exitcode(status) == 0, "the writer failed unkilled"
        while chunk := os.read(read, 4096):  # the write end is closed: this ends
            data += chunk
        return [end - start for (end,) in struct.iter_unpack("d", data)]
    finally:
        os.close(read)


def _files_read(tree: Metatree, location: str, names: list[str], scratch: Path) -> dict[str, bytes]:
    """Get every recorded file of a node (verified): plain files one by one, directories whole."""
    out: dict[str, bytes] = {}
    for top in sorted({n.split("/", 1)[0] for n in names if "/" in n}):
        local = scratch / uuid.uuid4().hex
        tree.get(f"{location}/{top}", str(local), recursive=True)
        for name in names:
            if name.startswith(f"{top}/"):
                out[name] = (local / name.split("/", 1)[1]).read_bytes()
    for name in names:
        if "/" not in name:
            out[name] = b"".join(tree.get(f"{location}/{name}"))
    return out


def _snapshot(tree: Metatree, scratch: Path) -> dict[tuple[str, ...], Any]:
    """Read the whole tree through the public API (every read must work) into comparable items."""
    items: dict[tuple[str, ...], Any] = {}
    nodes = 0
    for node, metadata, records in tree.walk(files=True):
        location = "/".join(node.path)
        nodes += 1
        items["node", location] = True
        for name, data in _files_read(tree, location, sorted(records), scratch).items():
            if not name.startswith(_VALUE_PREFIX):  # random names: checked through the value
                items["file", location, name] = data
        for key, value in metadata.items():
            if key == "children":
                continue
            if isinstance(value, DataStore):  # each value one verified read
                value = {k: value[k] for k in sorted(value)}
            items["meta", location, key] = value
    report = tree.verify()
    assert not report.mismatched
    assert not report.missing
    assert not report.unexpected
    for location in report.unrecorded:  # judged by `_judge`
        items["unrecorded", location] = True
    if _has_pyarrow():
        assert tree.catalog().num_rows == nodes - 1  # every node but the root
    return items


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _quarantined(root: Path) -> set[bytes]:
    """The contents of every file a repair set aside."""
    found = set()
    for path in (root / QUARANTINE).rglob("*"):
        if path.is_file() and path.name != "manifest.json":
            found.add(path.read_bytes())
    return found


def _reference(base: Path, src: Path) -> list[dict[tuple[str, ...], Any]]:
    """The tree after 0, 1, ... steps, as one uninterrupted run in this process sees it."""
    tree = Metatree(str(base / "reference"), _KEYS)
    states = [_snapshot(tree, base)]  # before the first step (a database not yet created)
    for _, step, _ in _PROGRAM:
        step(tree, src)
        states.append(_snapshot(tree, base))
    return states


def _judge(
    got: dict[tuple[str, ...], Any],
    states: list[dict[tuple[str, ...], Any]],
    done: int,
    quarantined: set[bytes],
) -> None:
    """Check that the repaired tree holds the finished steps' results (see the module doc)."""
    before = states[done]
    if done == len(_PROGRAM):
        assert got == before
        return
    after = states[done + 1]
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    for key in [k for k in got if k[0] == "unrecorded"]:
        # a put into a node without records killed between its file and its record: fsck
        # cannot tell the file from one metatreedb stored (no records either), and leaves it
        node, _, name = key[1].rpartition("/")
        assert ("file", node, name) in changed, key
        assert ("file", node, name) not in got, key
        got.pop(key)
    for key in got.keys() | before.keys():
        if key not in changed:
            assert got.get(key) == before.get(key), key
    got_changed = {k: got.get(k) for k in changed}
    if got_changed in ({k: before.get(k) for k in changed}, {k: after.get(k) for k in changed}):
        return  # the step applied wholly, or not at all
    kind = _PROGRAM[done][2]
    new_bytes = {after[k] for k in changed if k[0] == "file" and after.get(k) is not None}
    if kind == "replace":
        # killed between the new data and its record: force quarantines the new data, and
        # the old was already replaced by the put itself (see the module doc)
        assert all(v is None for v in got_changed.values()), got_changed
        assert new_bytes <= quarantined, "the new data is neither in place nor quarantined"
        return
    assert kind == "partial", f"{_PROGRAM[done][0]} applied in part: {got_changed}"
    for key, value in got_changed.items():  # a prefix of a transaction's commit
        assert value in (before.get(key), after.get(key)) or (
            value is None and key[0] == "file" and after.get(key) in quarantined  # as above
        ), (key, value)


def _os_lock_free(root: Path) -> bool:
    """Whether the local lock file (if the writer made one) can be locked now, without waiting."""
    lock = root / ".metatree.lock"
    if not lock.exists():
        return True
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases it
    return True


def _kills(runs: list[list[float]], rng: random.Random) -> Iterator[tuple[int, float]]:
    """Yield (step, delay) per trial: each step in turn, a random point of its measured span.

    Step 0's span also covers the fork and the child's opening of the tree.
    """
    spans = [
        statistics.median(run[i] - (run[i - 1] if i else 0.0) for run in runs)
        for i in range(len(_PROGRAM))
    ]
    for trial in range(_TRIALS):
        step = trial % len(_PROGRAM)
        yield step, rng.uniform(0.0, spans[step])


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_a_killed_writer_leaves_a_tree_fsck_repairs(
    base: Path, src: Path, tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill -9 at random points of each step; fsck must repair the tree to the reference.

    ``v2``: every node with more than one child keeps its index in a log (docs/format.md,
    "Format v2"), folded into a snapshot every second piece, so kills also land between a
    node's files and its piece, and inside compactions. The forked writer inherits both.
    """
    if layout == "v2":
        monkeypatch.setenv(index.THRESHOLD_ENV, "1")
        monkeypatch.setattr(index, "COMPACT_PIECES", 2)
    seed = int(os.environ.get("METATREE_KILL_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    states = _reference(base, src)
    calibration = []
    for i in range(_CALIBRATIONS):
        ends = _run(base / f"calibration-{i}", src, None)
        assert len(ends) == len(_PROGRAM)
        calibration.append(ends)
    in_flight = [0] * (len(_PROGRAM) + 1)
    held = 0
    for trial, (aim, delay) in enumerate(_kills(calibration, rng)):
        root = base / f"trial-{trial}"
        done = len(_run(root, src, (aim, delay)))
        in_flight[done] += 1
        try:
            lease = (root / ".lock").exists()
            held += lease
            assert _os_lock_free(root), "the kernel kept a killed writer's flock"
            tree = Metatree(str(root), _KEYS, lock_timeout=5.0)
            report = tree.fsck(repair=True, force=True, verify=trial % 2 == 1)
            assert report.clean, report.findings
            # the killed writer's lease (if it left one) is judged dead: no force needed
            kinds = {f.kind for f in report.repaired if f.location == ".lock"}
            assert kinds == ({"stale-lock"} if lease else set()), report.repaired
            assert tree.fsck().clean
            assert tree.fsck(verify=True).clean
            got = _snapshot(tree, base)
            _judge(got, states, done, _quarantined(root))
        except BaseException as exc:
            kept = tmp_path / f"trial-{trial}"
            shutil.copytree(root, kept, symlinks=True)
            step = _PROGRAM[done][0] if done < len(_PROGRAM) else "after the end"
            exc.add_note(
                f"{layout} kill trial {trial} (METATREE_KILL_SEED={seed}): killed {delay * 1e3:.2f} ms "
                f"into step {aim}, {done} steps done, in {step!r}; the tree is copied to {kept}"
            )
            raise
        shutil.rmtree(root)
    print(f"seed {seed}; killed in steps {in_flight}; {held} trials with a .lock left")


def test_a_replace_killed_before_it_deleted_the_old_data_keeps_it(
    base: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old side of a forced directory put, swapped out but not yet deleted, is set aside.

    Killed there, the writer leaves the old directory (which the node's records still
    describe) under a reserved name beside the new one: a leftover temporary that a repair,
    even without force, must move to the quarantine, not delete.
    """
    root = base / "swapped"
    Metatree(str(root), _KEYS).put("e1/r2", str(src), recursive=True, name="d")
    pid = os.fork()
    if pid == 0:  # the child dies where the writer deletes the old directory
        monkeypatch.setattr(LocalBackend, "_delete_tree", lambda self, path: os._exit(9))
        try:
            _replace_directory(Metatree(str(root)), src)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    tree = Metatree(str(root))
    report = tree.fsck(repair=True)
    assert "leftover-temporary" in {f.kind for f in report.repaired}
    assert {b"A" * 10, b"B" * 20} <= _quarantined(root)  # the old files
    assert tree.fsck(repair=True, force=True).clean


# -- repairs killed --------------------------------------------------------------------------
_REPAIR_TRIALS = int(os.environ.get("METATREE_REPAIR_KILL_TRIALS", "6"))
"""Repairs killed at random times, after one kill at each step boundary (30 or so); a seed
is printed, ``METATREE_KILL_SEED`` replays it."""
_FORCE_KINDS = {kind for kind, fix in KINDS.items() if fix == "force"}


def _damaged(root: Path, outside: Path) -> None:
    """Build a tree with damage of most kinds, for force and for repair alike (one each)."""
    tree = Metatree(str(root), _KEYS)
    tree.put("e1/r1", b"weights", name="w.bin")
    tree.put("e1/r1", b"other", name="x.bin")
    tree.put("e1/r2", b"two", name="t.bin")
    tree.put("e2/r1", b"keep", name="k.bin")
    tree.put("e2/r2", b"gone", name="g.bin")
    tree.find("e1/r1").update(cfg=DataStore(a=b"new"))
    tree.put("e1/r1", b"old value", name="cfg.a.0123abcd", info={VALUE_OF: "cfg"})
    (root / "e1/r1/w.bin").write_bytes(b"WEIGHTS!")  # mismatched-file
    (root / "e1/r1/planted.bin").write_bytes(b"planted")  # unrecorded-file
    (root / "e1/r1/x.bin").unlink()  # missing-file
    (root / "e1/ghost").mkdir()
    (root / "e1/ghost/metadata.json").write_bytes(b"{}")  # orphan-directory
    (root / "e1/theirs").mkdir()
    (root / "e1/theirs/metadata.json").write_bytes(b'{"user": 1}')  # ambiguous-directory
    (root / "e1/theirs/o.bin").write_bytes(b"their data")
    (root / "e1/.metatree.tmp.0a").write_bytes(b"a writer's temp")  # leftover-temporary
    (root / "e2/r1/metadata.json").write_bytes(b"{x")  # corrupt-metadata, its data stays
    shutil.rmtree(root / "e2/r2")  # dangling-entry
    (root / ".lock").write_bytes(_DEAD_LEASE)  # stale-lock
    (root / "e1/r2/link").symlink_to(outside)  # link


_DEAD_LEASE = LeaseInfo("0" * 32, "elsewhere", 1, 1.0, 2.0, 1, ttl=1.0).to_bytes()


def _data(root: Path) -> set[bytes]:
    """The bytes of every regular file below `root` but the lock and valid indexes: the data."""
    out = set()
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file() or path.name in (".lock", ".metatree"):
            continue
        data = path.read_bytes()
        if path.name == "manifest.json" or (path.name == "metadata.json" and data != b"{x"):
            continue
        out.add(data)
    return out


def _journal(root: Path) -> tuple[set[tuple[str, str]], bool]:
    """Every (location, kind) the quarantine's manifests planned, and whether all are done."""
    out, done = set(), True
    for manifest in (root / QUARANTINE).glob("*/manifest.json"):
        entries = orjson.loads(manifest.read_bytes())
        out |= {(e["from"], e["kind"]) for e in entries}
        done = done and all(e.get("done") for e in entries)
    return out, done


def _undone(root: Path) -> set[tuple[str, str]]:
    """The (location, kind) of every manifest entry not done (the metadata.json's: its node)."""
    out = set()
    for manifest in (root / QUARANTINE).glob("*/manifest.json"):
        for e in orjson.loads(manifest.read_bytes()):
            if e.get("done") is not True:
                out.add((e["from"].removesuffix("/metadata.json"), e["kind"]))
    return out


_STEPS = ("break_lock", "plan", "_edit", "move", "_rebuild", "mark_done")
"""The repair's steps (functions of `metatree.fsck`, and `Database.break_lock`): a trial kills
the repair just before or just after one call of one of them."""


def _repair(root: Path, *, delay: float | None = None, event: int | None = None) -> int:
    """Fork a repair (with force) of `root` and SIGKILL it; return its step events, unkilled.

    `event`: it kills itself at its `event`-th step boundary (before or after a call of one of
    `_STEPS`: every step of the repair, deterministically). `delay`: the parent kills it that
    many seconds in (anywhere, inside a step too). Neither: it runs to its end.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        status = 1
        gc.disable()
        try:
            count = itertools.count()
            for name in _STEPS:  # this forked child's own copies of the module and class
                owner: Any = Database if name == "break_lock" else fsck_module
                setattr(owner, name, _stepped(getattr(owner, name), count, event))
            Metatree(str(root), lock_timeout=5.0).fsck(repair=True, force=True)
            os.write(write, struct.pack("q", next(count)))
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    try:
        if delay is not None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        data = os.read(read, 8)
    finally:
        os.close(read)
    if delay is None and event is None:
        assert os.waitstatus_to_exitcode(status) == 0, "the repair failed unkilled"
        return int(struct.unpack("q", data)[0])
    return 0


def _stepped(call: Callable[..., Any], count: Iterator[int], event: int | None) -> Any:
    """Wrap `call` to count the boundaries before and after it, dying at the `event`-th."""

    def stepped(*args: Any, **kwargs: Any) -> Any:
        if next(count) == event:
            os.kill(os.getpid(), signal.SIGKILL)
        out = call(*args, **kwargs)
        if next(count) == event:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    return stepped


def test_a_killed_repair_is_finished_by_plain_then_forced_repairs(
    base: Path, tmp_path: Path
) -> None:
    """kill -9 anywhere in a repair: a plain repair finishes the safe part, force the rest.

    Plain: without force, though the killed repair had it; it fixes every repair kind, and
    leaves force kinds (a manifest grants nothing: anyone can plant one), those the killed
    repair had planned reported as such. A forced repair then ends clean. Nothing is lost:
    every byte of data the damaged tree held is in the tree or in the quarantine, the planted
    link's target is untouched, and every read works.
    """
    seed = int(os.environ.get("METATREE_KILL_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "key").write_bytes(b"private")
    template = base / "damaged"
    _damaged(template, outside)
    data = _data(template)
    calibration = base / "calibration"
    shutil.copytree(template, calibration, symlinks=True)
    start = time.perf_counter()
    events = _repair(calibration)
    span = time.perf_counter() - start
    assert Metatree(str(calibration)).fsck().clean
    finished = 0
    states = {"before its journal": 0, "mid-pass": 0, "after": 0}
    trials = events + _REPAIR_TRIALS
    for trial in range(trials):
        root = base / f"repair-{trial}"
        shutil.copytree(template, root, symlinks=True)
        # each step boundary once, then kills at random times (inside a step too)
        if trial < events:
            delay = None
            _repair(root, event=trial)
        else:
            delay = rng.uniform(0.0, span)
            _repair(root, delay=delay)
        try:
            planned, done = _journal(root)
            states["mid-pass" if not done else "after" if planned else "before its journal"] += 1
            tree = Metatree(str(root), lock_timeout=5.0)
            report = tree.fsck(repair=True)  # plain: no force
            left = {(f.location, f.kind) for f in report.findings}
            assert {kind for _, kind in left} <= _FORCE_KINDS, report.findings
            planned_at = {where for where, _ in planned} | {
                where.removesuffix("/metadata.json") for where, _ in planned
            }
            undone = _undone(root)  # the plain repair rewrote no manifest
            for f in report.findings:  # only what a manifest planned is reported as planned
                noted = "an interrupted repair had planned its fix" in f.detail
                assert not noted or f.location in planned_at, (f, planned)
                assert noted or (f.location, f.kind) not in undone, (f, planned)
            finished += report.clean
            assert tree.fsck(repair=True, force=True).clean
            assert not tree.fsck(repair=True).repaired
            assert data <= _data(root), data - _data(root)
            assert (outside / "key").read_bytes() == b"private"
            assert [p.name for p in outside.iterdir()] == ["key"]
            _snapshot(tree, base)
        except BaseException as exc:
            kept = tmp_path / f"repair-{trial}"
            shutil.copytree(root, kept, symlinks=True)
            exc.add_note(
                f"repair kill trial {trial} (METATREE_KILL_SEED={seed}): killed "
                + (f"at step boundary {trial}" if delay is None else f"{delay * 1e3:.2f} ms in")
                + f" (of {events} boundaries, {span * 1e3:.2f} ms); copied to {kept}"
            )
            raise
        shutil.rmtree(root)
    print(
        f"seed {seed}; {trials} kills {states}; {finished} finished clean without force (nothing planned left)"
    )
