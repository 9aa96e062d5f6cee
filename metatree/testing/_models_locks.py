"""The model store under contention and crashes: 8 uploaders, 8 alias switchers, kill -9.

Part of the conformance suite (mixed into `BackendConformance` and the SeaweedFS lock class),
under the rules of the lock tests (`LockTestBase`): other processes must see the storage,
and the server's conditional writes must be atomic under contention (moto's are not: these
tests run on SeaweedFS instead). Every change of the model store is one locked write of the
domain's metadata (docs/models.md), so what is asserted is what that promises: nothing lost,
a history numbered without gaps whose entries chain (each ``old`` is the previous ``new``),
and readers that never see an alias missing.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from metatree import Metatree
from metatree.errors import MetatreeError
from metatree.models import ModelStore
from metatree.models._store import KEYS
from metatree.testing import _workers
from metatree.testing._locks import SPAWN, LockTestBase

if TYPE_CHECKING:
    from metatree._storage import Storage
    from metatree.models import Change

__all__ = ["ModelStoreLockTests"]


def _chained(changes: list[Change], name: str, first_old: str | None) -> list[Change]:
    """Return the entries of `name`, checked to chain from `first_old` (no entry lost)."""
    entries = [c for c in changes if c.name == name]
    old = first_old
    for change in entries:
        assert (change.old, change.new != change.old) == (old, True), change
        old = change.new
    return entries


def _numbered(store: ModelStore, domain: str) -> list[Change]:
    """Return the domain's whole history, checked to be numbered 0, 1, 2... without gaps."""
    changes = store.history(domain)
    assert [c.seq for c in changes] == list(range(len(changes)))
    return changes


class ModelStoreLockTests(LockTestBase):
    """Concurrent uploads and alias switches lose nothing; a killed switch leaves no half."""

    model_writers: ClassVar[int] = 8
    uploads_per_writer: ClassVar[int] = 3
    switches_per_writer: ClassVar[int] = 3
    alias_kill_trials: ClassVar[int] = 6

    def _store(self, storage: Storage, **options: Any) -> ModelStore:
        return ModelStore.open(Metatree(storage, KEYS, **options))

    def test_models_concurrent_uploads(self, storage: Storage, tmp_path: Path) -> None:
        """Two uploads in one second overwrote each other in modelstore (its issue #197)."""
        self._require_processes(storage)
        store = self._store(storage)
        n, count = self.model_writers, self.uploads_per_writer
        with SPAWN.Manager() as manager, ProcessPoolExecutor(n, mp_context=SPAWN) as pool:
            start = [manager.Barrier(n)] * n
            results = list(
                pool.map(_workers.upload_models, [store.tree] * n, range(n), [count] * n, start)
            )
        assert [errors for _, errors in results] == [[]] * n
        uploaded = dict(item for done, _ in results for item in done)
        assert len(uploaded) == n * count  # the uuid4 ids too are distinct
        listed = store.list_models("d")
        assert sorted(listed) == sorted(uploaded)
        for i, (model_id, data) in enumerate(uploaded.items()):
            path = store.download("d", model_id, tmp_path / str(i))  # checked against sha256
            assert Path(path).read_bytes() == data
        latest = _chained(_numbered(store, "d"), "latest", None)
        assert [c.new for c in latest] == listed[::-1]  # one entry per upload, in upload order
        assert store.get_model_info("d")["model"]["model_id"] == listed[0] == latest[-1].new

    def test_models_concurrent_alias_switches(self, storage: Storage) -> None:
        """MLflow's file registry: last writer wins and no history is kept (its issue #2169)."""
        self._require_processes(storage)
        store = self._store(storage)
        n, rounds = self.model_writers, self.switches_per_writer
        models = [f"m{w}" for w in range(n)]
        with store.tree.transaction():
            for model in models:
                store.upload("d", model.encode(), model_id=model)
        store.set_alias("d", "production", models[0])
        seen: list[str] = []
        problems: list[str] = []
        stop = threading.Event()

        def read() -> None:  # its own objects: a reader in another thread, as in a server
            reader = self._store(storage)
            while not stop.is_set():
                try:
                    seen.append(reader.get_alias("d", "production"))
                    seen.append(reader.tree.find("d/<production>").name)
                except MetatreeError as exc:  # NotFoundError, UnresolvedPathError: missing
                    problems.append(repr(exc))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            with SPAWN.Manager() as manager, ProcessPoolExecutor(n, mp_context=SPAWN) as pool:
                start = [manager.Barrier(n)] * n
                results = list(
                    pool.map(_workers.alias_switches, [store.tree] * n, models, [rounds] * n, start)
                )
        finally:
            stop.set()
            reader.join()
        assert [errors for _, errors in results] == [[]] * n
        assert problems == []
        assert seen
        assert set(seen) <= set(models)
        changes = _numbered(store, "d")
        production = _chained(changes, "production", None)
        assert len(production) == 1 + sum(switched for switched, _ in results)
        assert store.get_alias("d", "production") == production[-1].new
        staging = _chained(changes, "staging", None)
        assert n <= len(staging) <= n * rounds  # each writer's first switch changes it
        assert {c.new for c in staging} == set(models)
        assert store.get_alias("d", "staging") == staging[-1].new
        assert store.tree.find("d/<staging>").name == staging[-1].new

    def test_models_kill_during_alias_switch(self, storage: Storage) -> None:
        """A killed switch leaves the old alias or the new one, and no half history entry."""
        self._require_processes(storage)
        store = self._store(storage, lock_ttl=self.lease_ttl, lock_timeout=30)
        models = ["a", "b", "c"]
        with store.tree.transaction():
            for model in models:
                store.upload("d", model.encode(), model_id=model)
        store.set_alias("d", "production", "a")
        # killed with the switch staged, before its commit: nothing of it was written
        parent, child = SPAWN.Pipe()
        holder = SPAWN.Process(target=_workers.stage_alias_switch, args=(store.tree, "b", child))
        holder.start()
        try:
            assert parent.poll(60), "the switch was not staged"
            assert parent.recv() == "staged"
        finally:
            holder.kill()
            holder.join()
        assert store.get_alias("d", "production") == "a"
        assert len(_chained(_numbered(store, "d"), "production", None)) == 1
        # killed at random moments of a stream of switches: in its lock, its write, its unlock
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(["metatree", "metatree.testing._workers"])
        rng = random.Random(12)
        for trial in range(self.alias_kill_trials):
            parent, child = context.Pipe()
            writer = context.Process(
                target=_workers.switch_alias_forever, args=(store.tree, models, child)
            )
            writer.start()
            try:
                assert parent.poll(60), "the writer did not start"
                parent.recv()
                time.sleep(rng.uniform(0.005, 0.1))
            finally:
                writer.kill()
                writer.join()
            current = store.get_alias("d", "production")
            assert current in models
            production = _chained(_numbered(store, "d"), "production", None)
            assert production[-1].new == current
            following = models[(models.index(current) + 1 + trial % 2) % len(models)]
            store.set_alias("d", "production", following)  # the lock is free (or taken over)
            assert store.get_alias("d", "production") == following
        assert len(_chained(_numbered(store, "d"), "production", None)) > self.alias_kill_trials
