"""DataStore against the libraries' own writers (issue 13): throughput and peak RSS.

``python -m benchmarks.datastore [--mib 256] [--rows 1000000] [--repeats 3]`` stores and loads a
float64 numpy array and a pandas table through a `DataStore` on a local tree, and the same
objects with ``np.save``/``np.load`` and ``pyarrow.parquet.write_table``/``read_table`` into
the same filesystem directly. Each run is a fresh child process, so its peak RSS growth
(``ru_maxrss`` after minus before) is its own; the goal is at least 80 % of the direct
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
    import pandas as pd
    rng = np.random.default_rng(0)
    value = pd.DataFrame({"a": rng.random(size), "b": rng.integers(0, 1000, size),
                          "c": pd.Categorical(rng.choice(["x", "y", "z"], size))})
    nbytes = int(value.memory_usage(deep=True).sum())
if how == "datastore":  # the tree is set up before the clock starts, as the files' directory
    from metatree import DataStore, Metatree
    tree = Metatree(os.path.join(where, "db"), ("run",))
    tree.put("r1", b"x", name="f")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
if how == "direct" and kind == "numpy":
    np.save(os.path.join(where, "a.npy"), value)
    loaded = np.load(os.path.join(where, "a.npy"))
elif how == "direct":
    import pyarrow as pa, pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pandas(value), os.path.join(where, "t.parquet"))
    loaded = pq.read_table(os.path.join(where, "t.parquet")).to_pandas()
else:
    tree.find("r1").update(results=DataStore(value=value))
    loaded = tree.find("r1").metadata["results"].value
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "bytes": nbytes, "growth": peak - base}))
"""


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
        "| object | direct: s | DataStore: s | % of direct | peak RSS growth: direct, DataStore |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, size, label in (
        ("numpy", args.mib, f"numpy float64, {args.mib} MiB"),
        ("pandas", args.rows, f"pandas, {args.rows:,} rows x 3"),
    ):
        runs = {
            how: [_run(kind, how, size) for _ in range(args.repeats)]
            for how in ("direct", "datastore")
        }
        direct = statistics.median(r["seconds"] for r in runs["direct"])
        stored = statistics.median(r["seconds"] for r in runs["datastore"])
        nbytes = runs["datastore"][0]["bytes"]
        growth = {how: statistics.median(r["growth"] for r in runs[how]) / nbytes for how in runs}
        print(
            f"| {label} | {direct:.3f} | {stored:.3f} | {100 * direct / stored:.0f} % "
            f"| {growth['direct']:.2f}x, {growth['datastore']:.2f}x the object |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
