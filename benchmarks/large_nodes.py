"""Large nodes (issue 16): per-operation cost against the number of siblings, and build times.

``python -m benchmarks.large_nodes local [--sizes 10 1000 10000 100000 1000000]``
``python -m benchmarks.large_nodes moto --sizes 10 10000``
``python -m benchmarks.large_nodes seaweedfs --sizes 100000 --budget 600``

One parent ``m`` grows through `--sizes` children (``m/v<i>``, each with one small file), in
transactions of `--batch` (10 000) puts, as a bulk load would; the build time of each step and
the total are recorded without the measurements between them. At each size a freshly opened
tree (a new process's caches: the first operation reads the node's whole index) times, median
of `--repeats` after one warm-up, each operation's first (cold) run reported apart:

- put: a new child ``m/n<i>`` with one file (the sibling count grows by `--repeats` + 1);
- find: one existing child ``m/v<k>``, spread over the node;
- update: one key of an existing child's metadata (the handle found before the clock starts);
- update parent: one key of ``m``'s own metadata (as the scale section's "update parent").

The measuring runs in a child process and the S3 server (moto, or SeaweedFS's ``weed mini``)
in this one, so client and server do not share one interpreter's lock. Only metatree runs
here: metatreedb 0.2.3 and the floor stop at the scale section's time cap (``python -m
benchmarks --sections scale``). With `--profile`, one more transaction of `--batch` puts at
the largest size runs under cProfile and the top 15 functions by own time are printed.
Nothing asserts anything about time: tests/test_benchmarks.py only checks a tiny run works.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import itertools
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

KEYS = ("parent", "child")


# -- the measuring process ---------------------------------------------------------------
def _open(spec: dict[str, Any]) -> Any:
    from metatree import Metatree

    return Metatree(spec["root"], KEYS, **spec["options"])


def _source(tmp: str) -> str:
    path = os.path.join(tmp, "f")
    if not os.path.exists(path):
        with open(path, "wb") as out:
            out.write(b"benchmark payload\n")
    return path


def _grow(
    tree: Any, src: str, start: int, stop: int, batch: int, deadline: float = float("inf")
) -> int:
    """Put m/v<start>..m/v<stop-1> in transactions of `batch` puts; return the size reached.

    No transaction starts after `deadline` (a `time.perf_counter` value).
    """
    for first in range(start, stop, batch):
        if time.perf_counter() > deadline:
            return first
        with tree.transaction():
            for i in range(first, min(first + batch, stop)):
                tree.put(f"m/v{i}", src)
    return stop


def _timed(fn: Any, runs: int) -> tuple[float, list[float]]:
    """(the first run's seconds, the seconds of `runs` more)."""
    times = []
    for _ in range(runs + 1):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return times[0], times[1:]


def _measure(spec: dict[str, Any], size: int, repeats: int, extra: int) -> dict[str, Any]:
    """Cold and median latencies of put/find/update at `size` children, on a fresh tree."""
    began = time.perf_counter()
    tree = _open(spec)
    opened = time.perf_counter() - began
    src = _source(spec["tmp"])
    row: dict[str, Any] = {"open_ms": opened * 1e3}
    step = max(1, size // (repeats + 1))
    finds = itertools.count(0, step)
    cold, times = _timed(lambda: tree.find(f"m/v{next(finds) % size}"), repeats)
    row.update(find_cold_ms=cold * 1e3, find_ms=statistics.median(times) * 1e3)
    names = iter(range(extra, extra + repeats + 1))
    cold, times = _timed(lambda: tree.put(f"m/n{next(names)}", src), repeats)
    row.update(put_cold_ms=cold * 1e3, put_ms=statistics.median(times) * 1e3)
    node = tree.find(f"m/v{size // 3}")
    keys = iter(range(extra, extra + repeats + 1))
    cold, times = _timed(lambda: node.update(**{f"k{next(keys)}": 1}), repeats)
    row.update(update_cold_ms=cold * 1e3, update_ms=statistics.median(times) * 1e3)
    parent = tree.find("m")
    keys = iter(range(extra, extra + repeats + 1))
    cold, times = _timed(lambda: parent.update(**{f"p{next(keys)}": 1}), repeats)
    row.update(parent_cold_ms=cold * 1e3, parent_ms=statistics.median(times) * 1e3)
    return row


def _profile(spec: dict[str, Any], start: int, batch: int) -> str:
    tree = _open(spec)
    src = _source(spec["tmp"])
    tree.find("m/v0")  # the index read, outside the profile
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    _grow(tree, src, start, start + batch, batch)
    profiler.disable()
    seconds = time.perf_counter() - began
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    return (
        f"one transaction of {batch} puts at {start} children: {seconds:.1f} s\n" + out.getvalue()
    )


def synthesize(spec: dict[str, Any], size: int, repeats: int) -> dict[str, Any]:
    """A v2 node of `size` children whose log is written by hand: one snapshot of the names.

    The closest thing to a built million-child node when building one takes longer than the
    run may: metatree builds the mirror (the threshold's 10 000 children in one transaction)
    and switches the node to v2 with one more put; then the snapshot the next compaction would
    write, holding ``v10000``..``v<size-1>``, is written at the next sequence number. Only the children the
    measurement touches get their node (a copy of ``v0``'s); the others are listed, as after a
    crash before their node was written, which no read here looks at. Local disk only.
    """
    from metatree._core.index import default_threshold

    tree = _open(spec)
    src = _source(spec["tmp"])
    began = time.perf_counter()
    mirror = default_threshold()  # 10 000 unless METATREE_INDEX_THRESHOLD says otherwise
    _grow(tree, src, 0, mirror, 10_000)
    _grow(tree, src, mirror, mirror + 1, 1)
    node = os.path.join(spec["root"], "m")
    with open(os.path.join(node, "metadata.json")) as stream:
        generation = json.load(stream)[".metatree.index"]["generation"]
    log = os.path.join(node, ".metatree.index", generation)
    seq = max(int(n.removesuffix(".json").rsplit("-", 1)[-1]) for n in os.listdir(log)) + 1
    names = [f"v{i}" for i in range(mirror, size)]
    with open(os.path.join(log, f"snapshot-{seq:020d}.json"), "w") as out:
        json.dump({"children": names, "seq": seq}, out, separators=(",", ":"))
    step = max(1, size // (repeats + 1))
    touched = {(j * step) % size for j in range(repeats + 1)} | {size // 3}
    for k in touched - set(range(mirror + 1)):
        os.makedirs(os.path.join(node, f"v{k}"))
        for name in ("metadata.json", "f"):
            with open(os.path.join(node, "v0", name), "rb") as a:
                data = a.read()
            with open(os.path.join(node, f"v{k}", name), "wb") as b:
                b.write(data)
    return {"children": size, "build_s": time.perf_counter() - began, "synthetic": True}


def child(spec: dict[str, Any], args: argparse.Namespace) -> None:
    """Grow and measure; print one JSON line per size (the parent collects them)."""
    if args.synthetic:
        row = synthesize(spec, args.synthetic, args.repeats)
        row.update(build_total_s=row["build_s"], batch=args.batch, complete=True)
        row.update(_measure(spec, args.synthetic, args.repeats, extra=args.synthetic))
        print(json.dumps(row), flush=True)
        return
    tree = _open(spec)
    src = _source(spec["tmp"])
    size, total = 0, 0.0
    for target in args.sizes:
        began = time.perf_counter()
        reached = _grow(tree, src, size, target, args.batch, began + args.budget - total)
        spent = time.perf_counter() - began
        total += spent
        if reached == size:
            break
        size = reached
        row = {"children": size, "build_s": spent, "build_total_s": total, "batch": args.batch,
               "complete": size == target}  # fmt: skip
        row.update(_measure(spec, size, args.repeats, extra=size))
        print(json.dumps(row), flush=True)
        if size < target:
            print(json.dumps({"stopped": f"{total:.0f} s spent, budget {args.budget:.0f} s"}))
            break
    if args.profile:
        print(json.dumps({"profile": _profile(spec, 10**9, args.batch)}), flush=True)


# -- the orchestrating process -----------------------------------------------------------
@contextlib.contextmanager
def _where(backend: str, tmp: str) -> Iterator[dict[str, Any]]:
    """Start `backend`'s server (none for local disk) and yield the tree's spec."""
    if backend == "local":
        yield {"root": os.path.join(tmp, "tree"), "options": {}, "tmp": tmp}
        return
    from metatree.testing.servers import MotoS3Server, SeaweedS3Server, make_bucket, s3_options

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server: Any
    if backend == "moto":
        server = MotoS3Server()
    else:
        data = os.path.join(tmp, "weed")
        os.makedirs(data)
        server = SeaweedS3Server(data)
    with server:
        bucket = make_bucket(server.endpoint_url, "large")
        yield {
            "root": f"s3://{bucket}/tree",
            "options": s3_options(server.endpoint_url),
            "tmp": tmp,
        }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the child against `args.backend`; return its rows (printed as they come)."""
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="metatree-large-", dir=args.tmp) as tmp,
        _where(args.backend, tmp) as spec,
    ):
        command = [sys.executable, "-m", "benchmarks.large_nodes", "--child", json.dumps(spec),
                   *args.argv]  # fmt: skip
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                row = json.loads(line)
                rows.append(row)
                if "profile" in row:
                    print(row["profile"], file=sys.stderr)
                else:
                    print(f"# {args.backend}: {row}", file=sys.stderr, flush=True)
        if proc.returncode:
            raise SystemExit(f"the measuring process failed ({proc.returncode})")
    return rows


def table(backend: str, rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        (
            f"| {backend} | children | build s (step) | build s (total) | put ms | find ms "
            "| update ms | update parent ms | first put / find / update ms (cold) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "children" not in r:
            continue
        cold = f"{r['put_cold_ms']:.1f} / {r['find_cold_ms']:.1f} / {r['update_cold_ms']:.1f}"
        lines.append(
            f"| metatree | {r['children']:,} | {r['build_s']:.1f} | {r['build_total_s']:.1f} "
            f"| {r['put_ms']:.2f} | {r['find_ms']:.3f} | {r['update_ms']:.2f} "
            f"| {r['parent_ms']:.2f} | {cold} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("backend", choices=("local", "moto", "seaweedfs"))
    parser.add_argument("--sizes", nargs="+", type=int,
                        default=[10, 1_000, 10_000, 100_000, 1_000_000])  # fmt: skip
    parser.add_argument("--batch", type=int, default=10_000, help="puts per transaction")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--budget", type=float, default=3600.0,
                        help="start no transaction after this many seconds of building")  # fmt: skip
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--synthetic", type=int, metavar="N",
                        help="measure a node of N children whose log is written by hand "
                        "(see `synthesize`): no build")  # fmt: skip
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--into", help="merge the rows into this benchmarks.json")
    parser.add_argument("--tmp", help="where the tree lives (default: the system's temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.child:
        child(json.loads(args.child), args)
        return 0
    rows = run(args)
    print(table(args.backend, rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"backend": args.backend, "argv": args.argv, "rows": rows}, out, indent=1)
    if args.into:
        merge_into(args.into, args.backend, rows)
    return 0


LABELS = {"local": "local disk", "moto": "S3 (moto)", "seaweedfs": "S3 (SeaweedFS)"}


def merge_into(path: str, backend: str, rows: list[dict[str, Any]]) -> None:
    """Put `rows` into the benchmark's saved results (``large_nodes``, replacing `backend`'s).

    ``python -m benchmarks --report-only`` then draws them on the scale plot.
    """
    with open(path) as stream:
        saved = json.load(stream)
    label = LABELS[backend]
    kept = [r for r in saved["results"].get("large_nodes", []) if r["backend"] != label]
    sized = [{**r, "backend": label} for r in rows if "children" in r]
    saved["results"]["large_nodes"] = kept + sized
    with open(path, "w") as stream:
        json.dump(saved, stream, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
