"""The catalog against a hand-written walk (issue 14): local disk at 1k-100k nodes, and S3.

``python -m benchmarks.catalog [--sizes 1k 10k 100k] [--repeats 3] [--no-s3] [--plot PATH]``
builds 3-level trees (``domain/model/version``) whose leaves carry ``accuracy``,
``framework``, ``epochs`` and ``tags`` and one small file (so file records exist), with
metatree itself (one transaction per domain), cached under ``/tmp/metatree-catalog-bench``
so reruns are fast. On local disk it times, median of `--repeats`, ``tree.catalog()``,
today's way (``sum(1 for _ in tree.walk())``, and a walk building the same rows into an
Arrow table), ``tree.search(pc.field("accuracy") > 0.9)``, and for the largest tree
``export_catalog`` (which builds the catalog too) partitioned by domain.

On S3 the 10k tree's metadata (the leaves' files, which no scan reads, stay local) is
uploaded to a moto server hosted by this process, whose request counter counts the GETs;
each measurement runs in a fresh child process, so client and server do not share one
interpreter's lock. Sequential ``walk`` against ``catalog`` at concurrency 1, 8, 32 (the
default) and 64, with metatree's pool of 64 connections, and 32 with aiobotocore's own pool
of 10 (what metatree opened S3 with before); then the same on a 2k tree with
each request delayed 20 ms (moto answers in a few ms of Python; a real store's round trip
is longer, and that is what concurrency hides).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CACHE = "/tmp/metatree-catalog-bench"
KEYS = ("domain", "model", "version")
SHAPES = {"1k": (10, 10, 10), "2k": (10, 10, 20), "10k": (10, 10, 100), "100k": (10, 100, 100)}
"""Children per level: the tree has a*b*c leaves and a + a*b + a*b*c nodes (the root aside)."""

GOAL_LOCAL = 50_000
"""Nodes per second into the Arrow table on local disk (issue 14)."""


def build(shape: tuple[int, int, int]) -> str:
    """Return the root of a tree of `shape`, built with metatree once and cached."""
    from metatree import Metatree

    where = os.path.join(CACHE, "x".join(map(str, shape)))
    root = os.path.join(where, "db")
    if os.path.exists(os.path.join(where, "complete")):
        return root
    shutil.rmtree(where, ignore_errors=True)
    os.makedirs(where)
    tree = Metatree(root, KEYS)
    rng = random.Random(14)
    a, b, c = shape
    for i in range(a):
        with tree.transaction():  # one lock and one write per touched index per domain
            for j in range(b):
                for k in range(c):
                    location = f"d{i:03d}/m{j:03d}/v{k:03d}"
                    tree.put(location, b"weights", name="model.bin")
                    tree.find(location).update(
                        accuracy=rng.random(),
                        framework=rng.choice(("torch", "jax", "sklearn")),
                        epochs=rng.randint(1, 100),
                        tags=rng.sample(("prod", "exp", "gpu", "cpu"), 2),
                    )
    with open(os.path.join(where, "complete"), "w") as out:
        out.write("built by benchmarks/catalog.py\n")
    return root


def nodes_of(shape: tuple[int, int, int]) -> int:
    a, b, c = shape
    return a + a * b + a * b * c


def walk_rows(tree: Any) -> Any:
    """Today's way: a sequential walk building the catalog's rows, then an Arrow table."""
    import pyarrow as pa

    rows = []
    for node, metadata, records in tree.walk(files=True):
        if not node.path:
            continue
        row: dict[str, Any] = {"path": "/".join(node.path), "depth": len(node.path)}
        for i, key in enumerate(KEYS):
            row[key] = node.path[i] if i < len(node.path) else None
        for key, value in metadata.items():
            if key != "children" and not key.startswith("."):
                row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
        row["files"] = [
            {"name": r.name, "size": r.size, "sha256": r.sha256, "created": r.created}
            for r in records.values()
        ]
        rows.append(row)
    return pa.Table.from_pylist(rows)


def _median(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def local(sizes: list[str], repeats: int) -> list[dict[str, Any]]:
    out = []
    for size in sizes:
        out.append(_local_one(size, repeats, export=size == sizes[-1]))
        print(f"# local {size}: {out[-1]}", file=sys.stderr)
    return out


def _local_one(size: str, repeats: int, *, export: bool) -> dict[str, Any]:
    import pyarrow.compute as pc

    from metatree import Metatree

    shape = SHAPES[size]
    start = time.perf_counter()
    root = build(shape)
    built = time.perf_counter() - start
    tree = Metatree(root, KEYS)
    n = tree.catalog().num_rows  # also a warm-up: imports, page cache
    assert n == nodes_of(shape), (n, shape)
    row: dict[str, Any] = {"size": size, "nodes": n, "build": built}
    row["catalog"] = _median(tree.catalog, repeats)
    row["walk"] = _median(lambda: sum(1 for _ in tree.walk()), repeats)
    row["walk_rows"] = _median(lambda: walk_rows(tree), repeats)
    row["search"] = _median(lambda: tree.search(pc.field("accuracy") > 0.9), repeats)
    if export:
        with tempfile.TemporaryDirectory(prefix="metatree-catalog-export-") as where:
            runs = iter(range(repeats))

            def one() -> None:  # each export to a new directory: an export never overwrites
                tree.export_catalog(os.path.join(where, str(next(runs))), "domain")

            row["export"] = _median(one, repeats)
    return row


_CHILD = r"""
import json, sys, time
import pyarrow, pyarrow.compute  # imported before the clock starts
from metatree import Metatree
from metatree.testing.servers import s3_options
endpoint, url, mode, concurrency, pool = sys.argv[1:6]
options = s3_options(endpoint)
if int(pool):
    options["config_kwargs"] = {"max_pool_connections": int(pool)}
tree = Metatree(url, ("domain", "model", "version"), **options)
start = time.perf_counter()
if mode == "walk":
    n = sum(1 for _ in tree.walk()) - 1  # the root aside, as in the catalog
else:
    n = tree.catalog(concurrency=int(concurrency)).num_rows
print(json.dumps({"seconds": time.perf_counter() - start, "rows": n}))
"""

S3_RUNS = (("walk", 0, 0), ("catalog", 1, 0), ("catalog", 8, 0), ("catalog", 32, 10),
           ("catalog", 32, 0), ("catalog", 64, 0))  # fmt: skip
"""(mode, concurrency, max_pool_connections; 0: metatree's default pool of 64, 10 is
aiobotocore's own default, which metatree used before)."""


def s3(size: str, delay: float) -> list[dict[str, Any]]:
    import s3fs

    from metatree.testing.servers import MotoS3Server, make_bucket, s3_options

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    root = build(SHAPES[size])
    out = []
    with MotoS3Server() as server:
        bucket = make_bucket(server.endpoint_url, "catalog")
        fs = s3fs.S3FileSystem(**s3_options(server.endpoint_url))
        objects = {}
        for here, _, names in os.walk(root):
            for name in names:
                if name == "model.bin":  # never read by a walk nor a catalog: 10k PUTs saved
                    continue
                rel = os.path.relpath(os.path.join(here, name), root)
                with open(os.path.join(here, name), "rb") as f:
                    objects[f"{bucket}/tree/{rel}"] = f.read()
        start = time.perf_counter()
        fs.pipe(objects, batch_size=64)  # concurrent PUTs on s3fs's loop
        print(f"# uploaded {len(objects)} objects in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)  # fmt: skip
        server.set_delay(delay)
        for mode, concurrency, pool in S3_RUNS:
            server.reset_counters()
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, server.endpoint_url, f"s3://{bucket}/tree",
                 mode, str(concurrency), str(pool)],
                capture_output=True, check=True, text=True,
            )  # fmt: skip
            result = json.loads(done.stdout)
            requests = server.requests
            gets = sum(r.method == "GET" and r.path.endswith("/metadata.json") for r in requests)
            row = {"size": size, "delay": delay, "mode": mode, "concurrency": concurrency,
                   "pool": pool or 64, "requests": len(requests), "gets": gets} | result  # fmt: skip
            out.append(row)
            print(f"# s3: {row}", file=sys.stderr)
    return out


def plot(path: str, local_rows: list[dict[str, Any]], s3_rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    n = [r["nodes"] for r in local_rows]
    ax.plot(n, [r["catalog"] for r in local_rows], "o-", label="local: catalog()")
    ax.plot(n, [r["walk"] for r in local_rows], "s--", label="local: walk() (count)")
    ax.plot(n, [r["walk_rows"] for r in local_rows], "^--", label="local: walk() building rows")
    ax.plot(n, [r["search"] for r in local_rows], "x:", label="local: search(accuracy > 0.9)")
    ax.plot(n, [x / GOAL_LOCAL for x in n], color="grey", lw=0.8, label="goal: 50 000 nodes/s")
    markers = {"walk": "s", "catalog": "o"}
    for delay, colour in ((0.0, "tab:red"), (0.02, "tab:purple")):
        for r in s3_rows:
            if r["delay"] != delay or (r["mode"] == "catalog" and r["concurrency"] not in (1, 64)):
                continue
            what = "walk" if r["mode"] == "walk" else f"catalog c={r['concurrency']}"
            ax.scatter(r["rows"], r["seconds"], marker=markers[r["mode"]], color=colour,
                       facecolors="none" if r["concurrency"] == 1 else colour,
                       label=f"S3 moto{' +20 ms' if delay else ''}: {what}", zorder=3)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes")
    ax.set_ylabel("seconds")
    ax.set_title("metatree catalog vs walk (issue 14)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["1k", "10k", "100k"], choices=SHAPES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--s3-size", default="10k", choices=SHAPES)
    parser.add_argument("--delayed-size", default="2k", choices=SHAPES)
    parser.add_argument("--plot", default="docs/benchmarks-catalog.png")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    local_rows = local(args.sizes, args.repeats)
    s3_rows = [] if args.no_s3 else s3(args.s3_size, 0.0) + s3(args.delayed_size, 0.02)
    print("| local disk | nodes | catalog: s | nodes/s | walk (count): s | walk building rows: s "
          "| catalog vs walk rows | search: s | export (with catalog): s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in local_rows:
        export = f"{r['export']:.2f}" if "export" in r else ""
        print(f"| {r['size']} | {r['nodes']:,} | {r['catalog']:.3f} | "
              f"{r['nodes'] / r['catalog']:,.0f} | {r['walk']:.3f} | {r['walk_rows']:.3f} | "
              f"{r['walk_rows'] / r['catalog']:.1f}x | {r['search']:.3f} | {export} |")  # fmt: skip
    if s3_rows:
        print()
        print("| S3 (moto) | delay | nodes | how | concurrency | pool | seconds | nodes/s "
              "| vs walk | metadata GETs | GETs per node |")  # fmt: skip
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        walks = {r["delay"]: r["seconds"] for r in s3_rows if r["mode"] == "walk"}
        for r in s3_rows:
            conc = "" if r["mode"] == "walk" else r["concurrency"]
            pool = "" if r["mode"] == "walk" else r["pool"]
            print(f"| {r['size']} | {r['delay'] * 1000:.0f} ms | {r['rows']:,} | {r['mode']} | "
                  f"{conc} | {pool} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | "
                  f"{walks[r['delay']] / r['seconds']:.1f}x | {r['gets']:,} | "
                  f"{r['gets'] / r['rows']:.4f} |")  # fmt: skip
    if args.plot:
        plot(args.plot, local_rows, s3_rows)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"local": local_rows, "s3": s3_rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
