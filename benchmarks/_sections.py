"""The benchmark's sections; each returns plain rows (dicts) for the report.

Every section starts fresh databases named after the implementation, so no implementation
sees another's data, and every worker is a separate client process (see ``_harness.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from typing import IO, Any

from benchmarks._harness import IMPLS, Backend, Pythons, Worker, median, percentile

OPS = (
    ("open", "open"),
    ("find3", "find at depth 3"),
    ("find_placeholder", "find with a placeholder"),
    ("get_small", "get a small file"),
    ("get_placeholder", "get through placeholders"),
    ("list", "list a node"),
    ("update", "update"),
    ("put_leaf", "put a new leaf"),
    ("put_tree", "put a new tree (3 nodes)"),
    ("put_existing", "put into an existing node"),
)
"""Operations of the side-by-side section, in the order they run (puts last: they grow x/y)."""

MODEL_OPS = (
    ("model_alias_switch", "set_alias (a switch)"),
    ("model_download", "download latest (bytes)"),
    ("model_list", "list_models"),
    ("model_upload", "upload (bytes)"),
)
"""Operations of the model-store section, in the order they run (uploads last)."""


UNCAPPED = 3600.0
"""Seconds: a run that should never be cut short."""

PLAN = {
    "local": ("ops", "scale", "concurrency", "large", "archive", "bulk", "build", "models"),
    "s3": ("ops", "scale", "large", "archive", "bulk", "models"),
    "webhdfs": ("ops", "concurrency"),
    "seaweedfs": ("concurrency", "models"),
    "azure": ("concurrency", "models"),
}
"""Sections per backend. moto's conditional writes are not atomic (the lock needs them), so
concurrency on S3 runs on SeaweedFS; large files and scale skip WebHDFS, whose test server
is a Python stand-in that says nothing about HDFS throughput. The model store's writers'
storm runs where the concurrency section does (not on moto). Azure runs on Azurite, whose
conditional writes are atomic (docs/backends.md)."""


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: `full` for the published figures, `quick` for the CI smoke test."""

    repeats: int
    scale_sizes: tuple[int, ...]
    scale_repeats: int
    scale_budget: float
    """Seconds metatreedb may spend growing one tree on local disk (its puts read the whole
    index several times each); on remote servers, `remote_scale_budget`."""
    remote_scale_budget: float
    writers: tuple[int, ...]
    hammer_seconds: float
    large_mib: int
    archive_files: int
    archive_mib: int
    """The archived directory: `archive_files` random files, `archive_mib` MiB in all."""
    bulk_puts: int
    bulk_budget: float
    build_children: int
    """Children put in one transaction for the build target (local disk)."""
    plan: dict[str, tuple[str, ...]]
    """Sections per backend."""
    reference_backends: tuple[str, ...] | None = None
    """Backends metatreedb runs on (None: all); its many requests make remote runs slow."""
    scale_others_max: int = 100_000
    """Largest scale size metatreedb and the floor grow to; past it, metatree alone."""

    @classmethod
    def full(cls) -> Settings:
        return cls(
            repeats=30,
            scale_sizes=(10, 1_000, 10_000, 100_000, 1_000_000),
            scale_repeats=15,
            scale_budget=180.0,
            remote_scale_budget=100.0,
            writers=(1, 2, 4, 8),
            hammer_seconds=5.0,
            large_mib=1024,
            archive_files=1000,
            archive_mib=1024,
            bulk_puts=1000,
            bulk_budget=120.0,
            build_children=10_000,
            plan=PLAN,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            repeats=2,
            scale_sizes=(10, 30),
            scale_repeats=2,
            scale_budget=3.0,
            remote_scale_budget=2.0,
            writers=(1, 2),
            hammer_seconds=0.3,
            large_mib=32,  # big enough that reading the file whole would show in peak RSS
            archive_files=20,
            archive_mib=4,
            bulk_puts=10,
            bulk_budget=3.0,
            build_children=100,
            plan={  # every section once; S3 where its counts or streaming are checked
                "local": PLAN["local"],
                "s3": ("ops", "large"),
                "webhdfs": ("ops",),
            },
            reference_backends=("local",),
        )


@dataclass
class Context:
    """What every section needs: interpreters, a log for workers' stderr, a scratch dir."""

    pythons: Pythons
    log: IO[str]
    tmp: str

    settings: Settings

    def impls(self, backend: Backend) -> list[str]:
        """The implementations to run on `backend` (metatreedb only if it installed)."""
        return [i for i in IMPLS if self.runs(i, backend)]

    def runs(self, impl: str, backend: Backend) -> bool:
        """Whether `impl` runs on `backend` in this run."""
        if self.pythons.of(impl) is None:
            return False
        only = self.settings.reference_backends
        return impl != "metatreedb" or only is None or backend.name in only

    def worker(self, impl: str) -> Worker:
        python = self.pythons.of(impl)
        assert python is not None
        return Worker(python, self.tmp, self.log, self.pythons.source_of(impl))


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_ms": median(times) * 1e3, "p90_ms": percentile(times, 90) * 1e3}


# -- operations side by side --------------------------------------------------------------
def run_ops(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """Request count (one run, counted at the server) and latency of each operation."""
    rows = []
    for impl in ctx.impls(backend):
        with ctx.worker(impl) as worker:
            worker.call("open", impl=impl, spec=backend.spec(impl, "ops"))
            worker.call("setup_ops")
            ops = [op for op, _ in OPS]
            for op, measured in _time_ops(worker, backend, ops, settings, prepare=True):
                rows.append({"backend": backend.name, "impl": impl, "op": op, **measured})
    return rows


def _time_ops(
    worker: Any, backend: Backend, ops: list[str], settings: Settings, *, prepare: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """Time each op: a warm-up run, one run counted at the server, then `repeats` timed.

    With `prepare`, the worker prepares each op first (its fixtures), right before it runs.
    """
    measured = []
    i = 0
    for op in ops:
        if prepare:
            worker.call("prepare", op=op)
        worker.call("time", op=op, start=i, n=1)  # warm-up: connections, caches
        backend.reset()
        worker.call("time", op=op, start=i + 1, n=1)
        requests = backend.count()
        times = worker.call("time", op=op, start=i + 2, n=settings.repeats)
        i += 2 + settings.repeats
        measured.append((op, {"requests": requests, **_stats(times)}))
    return measured


# -- scale --------------------------------------------------------------------------------
def run_scale(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """Grow one parent's children through `scale_sizes`; latency of put/find/update at each.

    Remote servers stop at the second size: moto answers in about 10 ms, so 10 000 single puts
    (8 requests each) would take a quarter of an hour. Only metatreedb's run is capped by time;
    past `scale_others_max` (100 000) only metatree grows (issue 16: a million children), as
    the floor's index write of a 10 MB list per batch makes its build quadratic too.

    Up to 10 000 children the tree grows one put at a time, as users add models; beyond, in
    batches (`scale_batch`: a transaction for metatree, one index write for the floor), since
    rewriting a 1 MB index per put would take hours; metatreedb has no batch and is capped.
    """
    rows = []
    local = backend.name == "local"
    sizes = settings.scale_sizes if local else settings.scale_sizes[:2]
    for impl in ctx.impls(backend):
        budget = UNCAPPED
        if impl == "metatreedb":
            budget = settings.scale_budget if local else settings.remote_scale_budget
        mine = [t for t in sizes if impl == "metatree" or t <= settings.scale_others_max]
        with ctx.worker(impl) as worker:
            worker.call("open", impl=impl, spec=backend.spec(impl, "scale"))
            size, spent = 0, 0.0
            for target in mine:
                batch = scale_batch(target)
                grown = worker.call(
                    "grow", start=size, stop=target, batch=batch, budget=budget - spent
                )
                spent += grown["seconds"]
                row: dict[str, Any] = {
                    "backend": backend.name,
                    "impl": impl,
                    "target": target,
                    "size": grown["reached"],
                    "build_s": grown["seconds"],
                    "build_total_s": spent,
                    "batch": batch,
                    "complete": grown["reached"] == target,
                }
                size = grown["reached"]
                if size > 0:
                    row.update(_scale_latencies(worker, size, settings.scale_repeats))
                rows.append(row)
                if not row["complete"]:
                    break
    return rows


def scale_batch(target: int) -> int:
    """Puts per write growing a node towards `target` children (1: one put at a time)."""
    if target <= 10_000:
        return 1
    return 1_000 if target <= 100_000 else 10_000  # issue 16's bulk load: transactions of 10 000


def _scale_latencies(worker: Worker, size: int, repeats: int) -> dict[str, float]:
    out = {}
    worker.call("prepare", op="scale_update")
    for op, start in (("scale_put", size), ("scale_find", size // 2), ("scale_update", size)):
        wrap = size if op == "scale_find" else None  # find existing children only
        worker.call("time", op=op, start=start, n=1, wrap=wrap)  # warm-up
        times = worker.call("time", op=op, start=start + 1, n=repeats, wrap=wrap)
        out[f"{op.removeprefix('scale_')}_ms"] = median(times) * 1e3
    return out


# -- concurrency --------------------------------------------------------------------------
def run_concurrency(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """N writer processes update distinct keys of one node; ok updates/s and lost updates.

    Writers open the tree first and start at one wall-clock instant, each updating for
    ``hammer_seconds``; an update is ok when it returned. Lost: ok updates missing from the
    node afterwards.
    """
    rows = []
    for impl in ctx.impls(backend):
        if impl == "floor":
            continue  # no lock: not a contender for correctness, only for speed
        workers = [ctx.worker(impl) for _ in range(max(settings.writers))]
        try:
            for count in settings.writers:
                spec = backend.spec(impl, f"writers{count}")
                workers[0].call("open", impl=impl, spec=spec)
                workers[0].call("setup_ops")
                for w in workers[:count]:
                    w.send("open", impl=impl, spec=spec)
                for w in workers[:count]:
                    w.reply()
                start_at = time.time() + 0.5
                for n, w in enumerate(workers[:count]):
                    w.send(
                        "hammer",
                        location="x/y/z",
                        worker=n,
                        start_at=start_at,
                        duration=settings.hammer_seconds,
                    )
                results = [w.reply() for w in workers[:count]]
                elapsed = max(r["end"] for r in results) - start_at
                acked = {k for r in results for k in r["acked"]}
                present = set(workers[0].call("metadata_keys", location="x/y/z"))
                rows.append(
                    {
                        "backend": backend.name,
                        "impl": impl,
                        "writers": count,
                        "ok": len(acked),
                        "errors": sum(r["errors"] for r in results),
                        "seconds": elapsed,
                        "ok_per_s": len(acked) / elapsed,
                        "lost": len(acked - present),
                    }
                )
        finally:
            for w in workers:
                w.close()
    return rows


# -- the model store (issue 12) -----------------------------------------------------------
def run_models(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """The model store: latency and requests of its operations; then N writers' alias storm.

    The storm: each writer switches ``production`` between two models of its own for
    ``hammer_seconds``; every acked switch changes the alias, so it must be one entry of the
    alias's history (lost: acked switches the history lacks). Not on moto, whose conditional
    writes are not atomic (the lock needs them).
    """
    rows: list[dict[str, Any]] = []
    with ctx.worker("modelstore") as worker:
        worker.call("open", impl="modelstore", spec=backend.spec("metatree", "models"))
        worker.call("setup_ops")
        for op, measured in _time_ops(worker, backend, [op for op, _ in MODEL_OPS], settings):
            rows.append({"backend": backend.name, "kind": "op", "op": op, **measured})
    if backend.name == "s3":
        return rows
    count = max(settings.writers)
    workers = [ctx.worker("modelstore") for _ in range(count)]
    try:
        spec = backend.spec("metatree", "models-storm")
        for w in workers:
            w.send("open", impl="modelstore", spec=spec)
            w.reply()
        workers[0].call("setup_ops")
        workers[0].call("setup_storm", writers=count)
        start_at = time.time() + 0.5
        for n, w in enumerate(workers):
            w.send("alias_storm", worker=n, start_at=start_at, duration=settings.hammer_seconds)
        results = [w.reply() for w in workers]
        elapsed = max(r["end"] for r in results) - start_at
        recorded = [
            workers[0].call("alias_switches", alias="production", worker=n)["recorded"]
            for n in range(count)
        ]
        ok = sum(r["ok"] for r in results)
        rows.append(
            {
                "backend": backend.name,
                "kind": "storm",
                "writers": count,
                "ok": ok,
                "errors": sum(r["errors"] for r in results),
                "seconds": elapsed,
                "ok_per_s": ok / elapsed,
                "lost": sum(max(0, r["ok"] - k) for r, k in zip(results, recorded, strict=True)),
            }
        )
    finally:
        for w in workers:
            w.close()
    return rows


# -- large files --------------------------------------------------------------------------
def _big_file(ctx: Context, mib: int) -> str:
    path = os.path.join(ctx.tmp, f"big-{mib}MiB.bin")
    if not os.path.exists(path):
        block = os.urandom(2**20)
        with open(path, "wb") as out:
            out.writelines(block for _ in range(mib))
    return path


def run_large(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """Put then get one large file; seconds, MiB/s and the worker's peak RSS growth.

    Each transfer runs in a fresh worker, so peak RSS growth is the transfer's own. The
    floor is fsspec's ``put_file``/``get_file`` of the same file, nothing else.
    """
    source = _big_file(ctx, settings.large_mib)
    size = os.path.getsize(source)
    rows = []
    for impl in ctx.impls(backend):
        spec = backend.spec(impl, "large")
        location = "big/y/z"
        out = os.path.join(ctx.tmp, f"out-{impl}.bin")
        for kind in ("put", "get"):
            with ctx.worker(impl) as worker:
                worker.call("open", impl=impl, spec=spec)
                target = out if kind == "get" else source
                where = f"{location}/{os.path.basename(source)}" if kind == "get" else location
                done = worker.call("transfer", kind=kind, location=where, path=target)
            if kind == "get":
                if os.path.getsize(out) != size:
                    raise RuntimeError(f"{impl} got {os.path.getsize(out)} of {size} bytes")
                os.unlink(out)
            rows.append(
                {
                    "backend": backend.name,
                    "impl": impl,
                    "kind": kind,
                    "mib": size / 2**20,
                    "seconds": done["seconds"],
                    "mib_per_s": size / 2**20 / done["seconds"],
                    "rss_growth_mib": done["rss_growth"] / 2**20,
                }
            )
    return rows


# -- archives -----------------------------------------------------------------------------
ARCHIVE_IMPLS = ("metatree", "floor")
"""metatreedb 0.2.3 has no archives; the floor streams Python's tarfile through fsspec."""


def _archive_dir(ctx: Context, files: int, mib: int) -> str:
    """A directory of `files` random files, `mib` MiB in all, in ten folders; built once a run.

    Random bytes do not compress, so gzip does its full work and the archive is as large as
    the directory: the throughput is the worst case, not a lucky one.
    """
    path = os.path.join(ctx.tmp, f"tree-{files}x{mib}MiB")
    if os.path.isdir(path):
        return path
    building = f"{path}.part"
    shutil.rmtree(building, ignore_errors=True)
    each, extra = divmod(mib * 2**20, files)
    for n in range(files):
        folder = os.path.join(building, f"d{n % 10}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"f{n:05d}.bin"), "wb") as out:
            out.write(os.urandom(each + (n < extra)))
    os.rename(building, path)
    return path


def _tree_size(folder: str) -> tuple[int, int]:
    """(regular files, bytes) below `folder`."""
    files = total = 0
    for base, _, names in os.walk(folder):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(base, name))
    return files, total


def run_archive(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """Put a directory as one streamed .tar.gz, then get it back extracted into a fresh dir.

    Each step runs in a fresh worker, so peak RSS growth is its own. MiB/s is of the source
    directory's size. The floor is Python's tarfile streamed through fsspec's ``open`` (gzip
    level 6, as metatree's): no scan, no checks, no sha256, no temp dir, nothing deterministic.
    """
    source = _archive_dir(ctx, settings.archive_files, settings.archive_mib)
    files, size = _tree_size(source)
    name = f"{os.path.basename(source)}.tar.gz"
    rows = []
    for impl in ARCHIVE_IMPLS:
        if not ctx.runs(impl, backend):
            continue
        spec = backend.spec(impl, "archive")
        out = os.path.join(ctx.tmp, f"extracted-{impl}")
        for kind in ("put", "get"):
            with ctx.worker(impl) as worker:
                worker.call("open", impl=impl, spec=spec)
                done = worker.call(
                    "archive", kind=kind, location="arc/y/z", name=name, path=source, out=out
                )
            if kind == "get":
                got = _tree_size(out)
                shutil.rmtree(out)
                if got[0] < files or got[1] < size:  # metatree adds its python-info.json
                    raise RuntimeError(f"{impl} extracted {got} of ({files}, {size})")
            rows.append(
                {
                    "backend": backend.name,
                    "impl": impl,
                    "kind": kind,
                    "files": files,
                    "mib": size / 2**20,
                    "stored_mib": done["stored"] / 2**20,
                    "seconds": done["seconds"],
                    "mib_per_s": size / 2**20 / done["seconds"],
                    "rss_growth_mib": done["rss_growth"] / 2**20,
                }
            )
    return rows


# -- bulk ---------------------------------------------------------------------------------
BULK_MODES = (
    ("metatree", 0, "metatree, one transaction"),
    ("metatree", 1, "metatree, single puts"),
    ("metatreedb", 1, "metatreedb, single puts"),
    ("floor", 1, "floor, single puts"),
    ("floor", 0, "floor, one index write"),
)
"""(implementation, batch: 0 for all in one, 1 for one at a time, label)."""


def run_bulk(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """N puts of new children of one node: in one transaction against one at a time."""
    rows = []
    for impl, batch, label in BULK_MODES:
        if not ctx.runs(impl, backend):
            continue
        with ctx.worker(impl) as worker:
            worker.call("open", impl=impl, spec=backend.spec(impl, f"bulk{batch}"))
            worker.call("grow", start=0, stop=1, batch=1, budget=60.0)  # the parent m
            backend.reset()
            grown = worker.call(
                "grow",
                start=1,
                stop=settings.bulk_puts + 1,
                batch=batch or settings.bulk_puts,
                budget=settings.bulk_budget if impl == "metatreedb" else UNCAPPED,
            )
            requests = backend.count()
        puts = grown["reached"] - 1
        rows.append(
            {
                "backend": backend.name,
                "impl": impl,
                "mode": label,
                "puts": puts,
                "complete": puts == settings.bulk_puts,
                "seconds": grown["seconds"],
                "puts_per_s": puts / grown["seconds"],
                "requests": requests,
            }
        )
    return rows


def run_build(ctx: Context, backend: Backend, settings: Settings) -> list[dict[str, Any]]:
    """`build_children` new children of one node put in one metatree transaction."""
    with ctx.worker("metatree") as worker:
        worker.call("open", impl="metatree", spec=backend.spec("metatree", "build"))
        grown = worker.call(
            "grow",
            start=0,
            stop=settings.build_children,
            batch=settings.build_children,
            budget=600.0,
        )
    return [
        {
            "backend": backend.name,
            "impl": "metatree",
            "children": grown["reached"],
            "seconds": grown["seconds"],
        }
    ]


@contextlib.contextmanager
def timed(name: str) -> Any:
    """Print how long a section took (to stderr, for whoever runs the benchmark)."""
    began = time.perf_counter()
    yield
    print(f"  {name}: {time.perf_counter() - began:.1f} s", flush=True)
