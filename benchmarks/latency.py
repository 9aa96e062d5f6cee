"""Latency against waves (issue 17): each operation's time next to one round trip.

``python -m benchmarks.latency [--delay 0.02] [--repeats 15] [--backends s3 seaweedfs webhdfs]
[--json PATH]`` times, median of `--repeats`, the basic operations on a 3-level tree (``x/y/z``
with one small file ``f``) against one ranged GET of that file, on each backend twice:
with waves (metatree as it is) and as before issue 17: one request at a time (the backend's
``read_concurrency`` set to 1: the path local disk keeps) and every upload waiting for the
server's "100 Continue".

moto answers in a few milliseconds of Python, so its server waits `--delay` seconds before
each answer (20 ms: a real region's round trip; requests in flight wait together, as on a
network); the fake WebHDFS server does the same, and SeaweedFS (a real S3 server) sits behind
a TCP proxy that holds each request as long (`DelayProxy`). Servers run in this process and
each measurement in a child process, so client and server do not share one interpreter's lock.

Requests and waves per operation are counted once per backend, at the server (`Waves`: the
same count tests/test_requests.py asserts; at the proxy for SeaweedFS).
Nothing here asserts anything about time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

KEYS = ("a", "b", "c")
SMALL = b"small file " * 10

OPS = ("one GET", "4 GETs gathered", "find", "get", "stat", "update", "put new leaf", "put file")
"""What is timed: one ranged GET of x/y/z/f (the unit), four metadata.json GETs sent together
(`Storage.read_many`), find of x/y/z, get of x/y/z/f (verified), stat, update of a found node,
put of a new leaf x/y/w<i>, put of a new file g<i> into the existing leaf x/y/z."""


def operations(tree: Any) -> dict[str, Callable[[int], object]]:
    """Return each operation of `OPS` as a function of the repetition's number."""
    storage = tree.storage
    node = tree.find("x/y/z")
    indexes = ["metadata.json", "x/metadata.json", "x/y/metadata.json", "x/y/z/metadata.json"]
    return {
        "one GET": lambda _: storage.read_versioned("x/y/z/f", 2**18),
        "4 GETs gathered": lambda _: storage.read_many(indexes),
        "find": lambda _: tree.find("x/y/z"),
        "get": lambda _: b"".join(tree.get("x/y/z/f")),
        "stat": lambda _: tree.stat("x/y/z/f"),
        "update": lambda i: node.update(step=i),
        "put new leaf": lambda i: tree.put(f"x/y/w{uuid.uuid4().hex[:8]}{i}", SMALL, name="f"),
        "put file": lambda i: tree.put("x/y/z", SMALL, name=f"g{uuid.uuid4().hex[:8]}{i}"),
    }


def open_tree(config: dict[str, Any]) -> Any:
    """Open the benchmark's tree (created, with x/y/z/f, if new); one request at a time if asked."""
    from metatree import Metatree

    tree = Metatree(config["root"], KEYS, **config["options"])
    if not tree.exists("x/y/z/f"):
        tree.put("x/y/z", SMALL, name="f")
    if not config["waves"]:  # as before issue 17: one request at a time, 100-continue
        tree.storage.backend.read_concurrency = 1  # type: ignore[misc]  # the sequential path
        import metatree.backends.s3

        setattr(metatree.backends.s3, "CONTINUE_THRESHOLD", -1)  # noqa: B010 - a Final
    return tree


def child(config: dict[str, Any]) -> dict[str, float]:
    """Time each operation in this (child) process: median seconds of `repeats`, after two."""
    tree = open_tree(config)
    out: dict[str, float] = {}
    for name, op in operations(tree).items():
        times = []
        for i in range(config["repeats"] + 2):
            start = time.perf_counter()
            op(i)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times[2:])
    return out


def count(server: Any, config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Return (requests, waves) per operation, counted at the server (in this process)."""
    tree = open_tree(config)
    ops = operations(tree)
    out = {}
    server.count_waves(0.1)
    try:
        for name, op in ops.items():
            op(0)  # warm: the lock's first object, fsspec's instance cache
            server.reset_counters()
            op(1)
            requests = list(server.requests)
            numbers = {r.wave for r in requests}
            out[name] = (len(requests), len(numbers))
    finally:
        server.count_waves(None)
    return out


_REQUEST_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/1\.[01]\r\n")


class DelayProxy:
    """A TCP proxy that holds each request `delay` seconds before passing it on: a round trip.

    For servers without a delay of their own (SeaweedFS). Whatever the client sends after
    the server's last answer on a connection waits: a request, and also a body the client
    held back until the server's "100 Continue" (botocore asks for that on uploads: a round
    trip of its own on a real network, which moto's server does not show). Requests on
    different connections (a client's pool) wait together, as on a network.
    """

    def __init__(self, port: int, delay: float) -> None:
        import socket
        import threading

        self.upstream, self.delay = port, delay
        self.requests: list[Any] = []
        """One record (its ``wave``) per request, while `count_waves` is on."""
        self.waves: Any = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            state = {"answered": True}
            threading.Thread(
                target=self._pump, args=(client, server, state, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, state, False), daemon=True
            ).start()

    def _pump(self, src: Any, dst: Any, state: dict[str, bool], request: bool) -> None:
        try:
            while data := src.recv(65536):
                if request and state["answered"]:
                    # after an answer: a new request, or a body after "100 Continue"; each
                    # waits for its round trip, and the waves count both (as a client does)
                    time.sleep(self.delay)
                    waves = self.waves
                    if waves is not None:
                        wave = waves.arrive()
                        if _REQUEST_LINE.match(data):
                            self.requests.append(types.SimpleNamespace(wave=wave))
                        waves.hold(wave)
                state["answered"] = not request
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def count_waves(self, quiet: float | None) -> None:
        """Count requests and waves as the test servers do (`Waves`); None stops."""
        from metatree.testing.servers import Waves

        self.waves = None if quiet is None else Waves(quiet)

    def reset_counters(self) -> None:
        self.requests = []

    def set_delay(self, seconds: float) -> None:
        self.delay = seconds

    def close(self) -> None:
        self.listener.close()


def measure(
    name: str, server: Any, root: str, options: dict[str, Any], args: Any
) -> list[dict[str, Any]]:
    rows = []
    for waves in (True, False):
        config = {"root": root, "options": options, "waves": waves, "repeats": args.repeats}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.latency", "--child", json.dumps(config)],
            capture_output=True, check=True, text=True,
        )  # fmt: skip
        times = json.loads(done.stdout)
        counts: dict[str, tuple[int, int]] = {}
        if server is not None and hasattr(server, "count_waves"):
            server.set_delay(0)
            counts = count(server, config)
            server.set_delay(args.delay)
        for op in OPS:
            requests, nwaves = counts.get(op, (None, None))
            rows.append({"backend": name, "waves_on": waves, "op": op, "seconds": times[op],
                         "requests": requests, "waves": nwaves})  # fmt: skip
        print(f"# {name} waves={waves}: {times}", file=sys.stderr)
    return rows


def run(args: Any) -> list[dict[str, Any]]:
    from metatree.testing.servers import MotoS3Server, SeaweedS3Server, make_bucket, s3_options
    from metatree.testing.webhdfs import WebHDFSServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        if "s3" in args.backends:
            with MotoS3Server() as moto:
                moto.set_delay(args.delay)
                bucket = make_bucket(moto.endpoint_url, "latency")
                root = f"s3://{bucket}/{uuid.uuid4().hex}"
                rows += measure("s3", moto, root, s3_options(moto.endpoint_url), args)
        if "seaweedfs" in args.backends:
            os.makedirs(os.path.join(tmp, "weed"))
            with SeaweedS3Server(os.path.join(tmp, "weed")) as weed:
                bucket = make_bucket(weed.endpoint_url, "latency")
                root = f"s3://{bucket}/{uuid.uuid4().hex}"
                port = int(weed.endpoint_url.rsplit(":", 1)[1])
                proxy = DelayProxy(port, args.delay)
                try:
                    url = f"http://127.0.0.1:{proxy.port}"
                    rows += measure("seaweedfs", proxy, root, s3_options(url), args)
                finally:
                    proxy.close()
        if "webhdfs" in args.backends:
            with WebHDFSServer(os.path.join(tmp, "hdfs")) as hdfs:
                hdfs.set_delay(args.delay)
                options = {"host": hdfs.host, "port": hdfs.port, "user": "bench"}
                rows += measure("webhdfs", hdfs, f"webhdfs:///{uuid.uuid4().hex}", options, args)
    return rows


def table(rows: list[dict[str, Any]], delay: float) -> str:
    """Render the rows as one markdown table per backend: latency against waves."""
    lines = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        by = {(r["op"], r["waves_on"]): r for r in rows if r["backend"] == backend}
        unit = by[("one GET", True)]["seconds"]
        how = "a proxy holds" if backend == "seaweedfs" else "the server holds"
        shown = f"{how} each request {delay * 1000:.0f} ms"
        lines += [
            f"#### {backend} ({shown})",
            "",
            (
                "| operation | requests | waves | ms | x one GET "
                "| before: requests | waves | ms | x one GET |"
            ),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for op in OPS:
            now, before = by[(op, True)], by[(op, False)]

            def n(value: int | None) -> str:
                return "" if value is None else str(value)

            lines.append(
                f"| {op} | {n(now['requests'])} | {n(now['waves'])} | "
                f"{now['seconds'] * 1000:.1f} | {now['seconds'] / unit:.2f} | "
                f"{n(before['requests'])} | {n(before['waves'])} | "
                f"{before['seconds'] * 1000:.1f} | {before['seconds'] / unit:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--backends", nargs="+", default=["s3", "seaweedfs", "webhdfs"])
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    rows = run(args)
    print(table(rows, args.delay))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
