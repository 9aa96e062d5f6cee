"""Concurrent transfers (issue 16): a 1 000-put transaction on S3 (moto), before and after.

``python -m benchmarks.transfers [--puts 1000] [--files 200] [--delays 0 0.02] [--before PATH]``

One moto server, hosted by this process (its counter counts the requests), for the whole run;
each measurement runs in a fresh child process, so client and server do not share one
interpreter's lock. Each child opens a new database, puts the parent ``m`` alone, then times
one transaction putting ``m/v1`` .. ``m/v<puts>``, each with the same small local file (as the
bulk section does). Rows:

* ``before`` (with ``--before PATH``): the metatree checkout at PATH (today's sequential code),
  on the same server in the same run;
* ``concurrency=1``: this checkout with its uploads one after another;
* ``concurrency=32``: this checkout's default on S3.

Then again with each request delayed (``MotoS3Server.set_delay``; 20 ms by default): moto
answers in a few milliseconds of Python, a real store's round trip is longer, and that is
what concurrency hides. Last, a recursive put and a recursive get of a directory of
``--files`` small files (1 KiB, in ten folders), before and after. Nothing here asserts
anything about time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

_CHILD = r"""
import json, os, sys, time, uuid
from metatree import Metatree
endpoint, bucket, puts, width, source = sys.argv[1:6]
options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
tree = Metatree(f"s3://{bucket}/{uuid.uuid4().hex}", ("m", "v"), **options)
tree.put("m/v0", source)
print("ready", flush=True)
sys.stdin.readline()  # the parent resets the server's counter first
kwargs = {} if width == "before" else {"concurrency": int(width)}
start = time.perf_counter()
with tree.transaction(**kwargs):
    for i in range(1, int(puts) + 1):
        tree.put(f"m/v{i}", source)
seconds = time.perf_counter() - start
assert len(tree.find("m").children) == int(puts) + 1
assert tree.find(f"m/v{puts}").files[os.path.basename(source)].size == os.path.getsize(source)
print(json.dumps({"seconds": seconds}), flush=True)
"""

_TREE_CHILD = r"""
import json, os, sys, tempfile, time, uuid
from metatree import Metatree
endpoint, bucket, files = sys.argv[1:4]
options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
tree = Metatree(f"s3://{bucket}/{uuid.uuid4().hex}", ("m", "v"), **options)
tmp = tempfile.mkdtemp()
folder = os.path.join(tmp, "d")
for i in range(int(files)):
    os.makedirs(os.path.join(folder, str(i % 10)), exist_ok=True)
    with open(os.path.join(folder, str(i % 10), f"f{i}"), "wb") as out:
        out.write(os.urandom(1024))
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
tree.put("m/v1", folder, recursive=True)
put = time.perf_counter() - start
start = time.perf_counter()
tree.get("m/v1/d", outfile=os.path.join(tmp, "out"), recursive=True)
print(json.dumps({"put_seconds": put, "get_seconds": time.perf_counter() - start}), flush=True)
"""


def run_tree(files: int, delays: list[float], before: str | None) -> list[dict[str, Any]]:
    """Time a recursive put and get of `files` small files, before and after, per delay."""
    from metatree.testing.servers import MotoS3Server, make_bucket

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    modes = ([("before", before)] if before else []) + [("after", here)]
    rows = []
    with MotoS3Server() as server:
        bucket = make_bucket(server.endpoint_url, "trees")
        for delay in delays:
            server.set_delay(delay)
            for mode, checkout in modes:
                args = [server.endpoint_url, bucket, str(files)]
                row = _measure(server, checkout, args, _TREE_CHILD)
                row |= {"delay": delay, "mode": mode, "files": files}
                rows.append(row)
                print(f"# {row}", file=sys.stderr, flush=True)
    return rows


def run(puts: int, delays: list[float], before: str | None) -> list[dict[str, Any]]:
    """Time each mode at each delay on one moto server; return one row per measurement."""
    from metatree.testing.servers import MotoS3Server, make_bucket

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    modes = [("before", before)] if before else []
    modes += [("1", here), ("32", here)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, MotoS3Server() as server:
        source = os.path.join(tmp, "f")
        with open(source, "wb") as out:
            out.write(b"benchmark payload\n")
        bucket = make_bucket(server.endpoint_url, "transfers")
        for delay in delays:
            server.set_delay(delay)
            for width, checkout in modes:
                row = _measure(
                    server, checkout, [server.endpoint_url, bucket, str(puts), width, source]
                )
                row |= {"delay": delay, "mode": "before" if width == "before" else f"concurrency={width}",
                        "puts": puts}  # fmt: skip
                rows.append(row)
                print(f"# {row}", file=sys.stderr, flush=True)
    return rows


def _measure(server: Any, checkout: str, args: list[str], code: str = _CHILD) -> dict[str, Any]:
    """Run one child on `checkout`; return its seconds and the requests the server counted."""
    env = {**os.environ, "PYTHONPATH": checkout}
    child = subprocess.Popen(  # in `checkout`: ``-c`` puts the working directory first
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=checkout,
    )  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    server.reset_counters()
    child.stdin.write("go\n")
    child.stdin.flush()
    result: dict[str, Any] = json.loads(child.stdout.readline())
    if child.wait() != 0:
        raise RuntimeError(f"the child on {checkout} failed")
    return result | {"requests": len(server.requests)}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per delay and mode, with the speed-up over the first mode."""
    lines = [
        "| delay per request | mode | puts | seconds | puts/s | requests | speed-up |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for delay in dict.fromkeys(r["delay"] for r in rows):
        group = [r for r in rows if r["delay"] == delay]
        base = group[0]["seconds"]
        lines.extend(
            f"| {delay * 1000:g} ms | {r['mode']} | {r['puts']:,} | {r['seconds']:.2f} | "
            f"{r['puts'] / r['seconds']:,.0f} | {r['requests']:,} | {base / r['seconds']:.1f}x |"
            for r in group
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--puts", type=int, default=1000)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--before", default=None, help="a metatree checkout to time as today's")
    parser.add_argument("--files", type=int, default=200, help="files of the recursive put/get")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.puts, args.delays, args.before)
    print(table(rows))
    trees = run_tree(args.files, args.delays, args.before)
    print("\n| delay per request | mode | files | put -r: s | get -r: s | requests |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in trees:
        print(f"| {r['delay'] * 1000:g} ms | {r['mode']} | {r['files']:,} | "
              f"{r['put_seconds']:.2f} | {r['get_seconds']:.2f} | {r['requests']:,} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"transaction": rows, "trees": trees}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
