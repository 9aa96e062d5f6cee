"""Throughput of N writer processes updating distinct keys of one node, and lost updates.

    python benchmarks/locks.py [--writers 8] [--updates 200] [--backend local webhdfs seaweedfs]

Writers are spawned and set up first, then all start at the same wall-clock instant, so the
figure is ok updates per second of the contended phase, spawn time excluded. "lost" counts
acknowledged updates missing from the node afterwards (it must be 0).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

from metatree import Metatree
from metatree.errors import MetatreeError

KEYS = ("model", "version")


def writer(tree: Metatree, worker: int, count: int, start: float) -> tuple[int, float]:
    node = tree.find("m/v1")
    ok = 0
    time.sleep(max(0.0, start - time.time()))
    for i in range(count):
        try:
            node.update(**{f"w{worker}-{i}": i})
            ok += 1
        except MetatreeError:
            pass
    return ok, time.time()


def run(tree: Metatree, writers: int, updates: int) -> dict[str, float]:
    tree.put("m/v1", b"x", name="f", force=True)
    start = time.time() + 3.0 + writers * 0.5  # after every writer has spawned and imported
    with ProcessPoolExecutor(writers, mp_context=mp.get_context("spawn")) as pool:
        results = list(
            pool.map(writer, [tree] * writers, range(writers), [updates] * writers,
                     [start] * writers)
        )  # fmt: skip
    ok = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results) - start
    stored = set(tree.find("m/v1").metadata)
    lost = sum(1 for w in range(writers) for i in range(updates) if f"w{w}-{i}" not in stored) - (
        writers * updates - ok
    )
    return {"ok": ok, "elapsed": elapsed, "ok_per_s": ok / elapsed, "lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--backend", nargs="+", default=["local", "webhdfs", "seaweedfs"])
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    for backend in args.backend:
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "local":
                tree = Metatree(os.path.join(tmp, "db"), KEYS)
                result = run(tree, args.writers, args.updates)
            elif backend == "webhdfs":
                from metatree.testing.webhdfs_server import WebHDFSServer

                with WebHDFSServer(tmp) as server:
                    tree = Metatree(f"webhdfs:///bench/{uuid.uuid4().hex}", KEYS,
                                    host=server.host, port=server.port, user="bench")  # fmt: skip
                    result = run(tree, args.writers, args.updates)
            else:
                from metatree.testing.servers import SeaweedS3Server, make_bucket

                with SeaweedS3Server(tmp) as server:
                    bucket = make_bucket(server.endpoint_url, "bench")
                    tree = Metatree(f"s3://{bucket}/db", KEYS, endpoint_url=server.endpoint_url,
                                    key="testing", secret="testing")  # fmt: skip
                    result = run(tree, args.writers, args.updates)
        print(
            f"{backend:10s} writers={args.writers} updates={args.writers * args.updates} "
            f"ok={result['ok']:.0f} lost={result['lost']:.0f} "
            f"elapsed={result['elapsed']:.1f}s ok/s={result['ok_per_s']:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
