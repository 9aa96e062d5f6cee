"""DataStore against the libraries' own writers (issue 13): throughput and peak RSS.

``python -m benchmarks.datastore [--mib 256] [--rows 1000000] [--repeats 3]`` stores and loads a
float64 numpy array and a pandas table through a `DataStore` on a local tree, and the same
objects with ``np.save``/``np.load`` and ``pyarrow.parquet.write_table``/``read_table`` into
the same filesystem directly: once as they are (the bytes may still be in the page cache
when they return) and once followed by an fsync (durable, as a DataStore's put is). Each run
is a fresh child process, so its peak RSS growth (``ru_maxrss`` after minus before; the
libraries are imported before) is its own; the goal is at least 80 % of the direct
throughput and a peak growth of at most 1.5 times the object's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from typing import Any

_CHILD = r"""
import json, os, resource, sys, time
import numpy as np

kind, how, size, where = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kind == "numpy":
    value = np.random.default_rng(0).random(size * 2**20 // 8)
    nbytes = value.nbytes
else:
    import pandas as pd, pyarrow as pa, pyarrow.parquet as pq  # imported before the baseline
    rng = np.random.default_rng(0)
    value = pd.DataFrame({"a": rng.random(size), "b": rng.integers(0, 1000, size),
                          "c": pd.Categorical(rng.choice(["x", "y", "z"], size))})
    nbytes = int(value.memory_usage(deep=True).sum())
if how == "datastore":  # the tree is set up before the clock starts, as the files' directory
    from metatree import DataStore, Metatree
    tree = Metatree(os.path.join(where, "db"), ("run",))
    tree.put("r1", b"x", name="f")


def save(path):
    with open(path, "wb") as out:
        if kind == "numpy":
            np.save(out, value)
        else:
            pq.write_table(pa.Table.from_pandas(value), out)
        if how == "durable":  # what metatree promises: on disk when the call returns
            out.flush()
            os.fsync(out.fileno())


def load(path):
    if kind == "numpy":
        return np.load(path)
    return pq.read_table(path).to_pandas()


base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
times = []
for _ in range(3):  # in one process: the first pass also pays the kernel's first touches
    start = time.perf_counter()
    if how == "datastore":
        tree.find("r1").update(results=DataStore(value=value))
    else:
        save(os.path.join(where, "value"))
    stored = time.perf_counter()
    if how == "datastore":
        loaded = tree.find("r1").metadata["results"].value
    else:
        loaded = load(os.path.join(where, "value"))
    end = time.perf_counter()
    del loaded
    times.append({"store": stored - start, "load": end - stored, "seconds": end - start})
    if len(times) == 1:  # the peak of one store and load, before garbage of later passes
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"times": times, "bytes": nbytes, "growth": peak - base}))
"""

HOWS = ("direct", "durable", "datastore")
"""``np.save``/``pq.write_table`` as they are, the same followed by an fsync, and a DataStore."""


def _run(kind: str, how: str, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="metatree-ds-bench-") as where:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, kind, how, str(size), where],
            capture_output=True,
            check=True,
            text=True,
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="size of the numpy array")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the pandas table")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        "| object | how | store: s | load: s | total: s | DataStore's throughput, % of this "
        "| peak RSS growth |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, size, label in (
        ("numpy", args.mib, f"numpy float64, {args.mib} MiB"),
        ("pandas", args.rows, f"pandas, {args.rows:,} rows x 3"),
    ):
        # interleaved, after one discarded round, each run a store and load three times: the
        # kernel's memory state (page cache, huge pages) varies from run to run
        runs: dict[str, list[dict[str, Any]]] = {how: [] for how in HOWS}
        for round_ in range(args.repeats + 1):
            for how in HOWS:
                result = _run(kind, how, size)
                if round_:
                    runs[how].append(result)
        nbytes = runs["datastore"][0]["bytes"]
        median = {
            how: {
                part: statistics.median(t[part] for r in runs[how] for t in r["times"])
                for part in ("store", "load", "seconds")
            }
            | {"growth": statistics.median(r["growth"] for r in runs[how])}
            for how in HOWS
        }
        ours = median["datastore"]["seconds"]
        for how in HOWS:
            m = median[how]
            share = "" if how == "datastore" else f"{100 * m['seconds'] / ours:.0f} %"
            print(
                f"| {label} | {how} | {m['store']:.3f} | {m['load']:.3f} | {m['seconds']:.3f} "
                f"| {share} | {m['growth'] / nbytes:.2f}x the object |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
