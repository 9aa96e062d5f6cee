"""Benchmark worker: one process driving one implementation, commanded over stdin/stdout.

The orchestrator (``python -m benchmarks``) starts one worker per implementation and backend,
with the interpreter of the implementation's virtualenv, so metatree, metatreedb 0.2.3 and
the floor all run as separate client processes against the same servers, which run in the
orchestrator: no client shares a GIL with a server, and requests are counted at the server
while the worker waits for its next command.

Implementations:

``metatree`` / ``metatreedb``
    ``import metatree`` names ours in our virtualenv and metatreedb's package in the
    reference one (both install a top-level ``metatree``); their APIs agree on everything
    used here, so one code drives both.
``floor``
    Raw fsspec calls doing the least work an operation needs on the same on-disk format:
    the reads that prove a node exists (each parent's ``children`` index), the writes that
    store it, no lock and no checks. It is the bound a correct implementation cannot beat
    by more than its lock's cost.

Only the standard library and fsspec are imported here: the reference virtualenv has
nothing else of ours. Commands are JSON lines; each gets one JSON line back (see `main`).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import sys
import time
import traceback
from typing import Any

KEYS = ("a", "b", "c")
"""Levels of the operation trees: x/y/z is a depth-3 node."""


def _peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _source(tmp: str, name: str, data: bytes = b"benchmark payload\n") -> str:
    """A local file named `name` (metatreedb stores a file under its own name)."""
    folder = os.path.join(tmp, "src", name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        with open(path, "wb") as out:
            out.write(data)
    return path


class TreeClient:
    """metatree or metatreedb through the API they share."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import metatree

        self.cls = metatree.Metatree if hasattr(metatree, "Metatree") else _metatreedb_class()
        self.spec = spec
        self.tmp = spec["tmp"]
        self.keys = tuple(spec["keys"])
        self.tree = self.open()
        self.node: Any = None

    def open(self) -> Any:
        return self.cls(self.spec["root"], self.keys, **self.spec["options"])

    # -- fixtures ---------------------------------------------------------------------
    def setup_ops(self) -> None:
        self.tree.put("x/y/z", _source(self.tmp, "f"))
        self.tree.find("x").update(active="y")
        self.tree.find("x/y/z").update(model_file="f")

    def prepare(self, op: str) -> None:
        if op in {"update", "list"}:
            self.node = self.tree.find("x/y/z")
        elif op == "scale_update":
            self.node = self.tree.find("m")

    # -- operations (i: a number unique to this call) ---------------------------------
    def run(self, op: str, i: int) -> None:
        tree = self.tree
        if op == "open":
            self.open()
        elif op == "put_tree":
            tree.put(f"t{i}/y/z", _source(self.tmp, "f"))
        elif op == "put_leaf":
            tree.put(f"x/y/l{i}", _source(self.tmp, "f"))
        elif op == "put_existing":
            tree.put("x/y/z", _source(self.tmp, f"g{i}"))
        elif op == "find3":
            tree.find("x/y/z")
        elif op == "find_placeholder":
            tree.find("x/<active>/z")
        elif op in {"update", "scale_update"}:
            self.node.update(**{f"k{i}": i})
        elif op == "get_small":
            b"".join(tree.get("x/y/z/f"))
        elif op == "get_placeholder":
            b"".join(tree.get("x/<active>/z/<model_file>"))
        elif op == "list":
            self.node.list()
        elif op == "scale_put":
            tree.put(f"m/n{i}", _source(self.tmp, "f"))
        elif op == "scale_find":
            tree.find(f"m/v{i}")
        else:
            raise ValueError(f"unknown op {op!r}")

    def grow(self, start: int, stop: int, batch: int) -> None:
        """Put m/v<start>..m/v<stop-1>: one put each, or transactions of `batch` puts."""
        src = _source(self.tmp, "f")
        if batch <= 1 or not hasattr(self.tree, "transaction"):
            for i in range(start, stop):
                self.tree.put(f"m/v{i}", src)
            return
        for first in range(start, stop, batch):
            with self.tree.transaction():
                for i in range(first, min(first + batch, stop)):
                    self.tree.put(f"m/v{i}", src)

    def metadata_keys(self, location: str) -> list[str]:
        return list(self.tree.find(location).metadata)

    def put_file(self, location: str, path: str) -> None:
        self.tree.put(location, path)

    def get_file(self, location: str, out: str) -> None:
        self.tree.get(location, outfile=out)

    def archive_put(self, location: str, folder: str, name: str) -> None:
        self.tree.put(location, folder, archive=True, name=name)

    def archive_get(self, location: str, name: str, out: str) -> None:
        self.tree.get(f"{location}/{name}", extract_to=out)

    def stored_size(self, location: str, name: str) -> int:
        size: int = self.tree.stat(f"{location}/{name}").size
        return size


class ModelClient:
    """metatree's model store (issue 12), on a store of its own: ours only, no counterpart.

    Setup uploads ``d/v1`` and ``d/v2`` and points ``production`` at v1; for the writers'
    storm, each writer's two models ``w<n>a``/``w<n>b`` (one transaction).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        from metatree import ModelStore

        self.store = ModelStore(spec["root"], **spec["options"])
        self.tmp = spec["tmp"]

    def setup_ops(self) -> None:
        self.store.upload("d", b"weights v1\n", model_id="v1")
        self.store.upload("d", b"weights v2\n", model_id="v2")
        self.store.set_alias("d", "production", "v1")

    def setup_storm(self, writers: int) -> None:
        with self.store.tree.transaction():
            for w in range(writers):
                for side in "ab":
                    self.store.upload("d", f"writer {w}{side}".encode(), model_id=f"w{w}{side}")

    def prepare(self, op: str) -> None:
        """Nothing to prepare: every operation starts from the domain ``d``."""

    def run(self, op: str, i: int) -> None:
        if op == "model_alias_switch":
            self.store.set_alias("d", "production", ("v1", "v2")[i % 2])
        elif op == "model_download":
            self.store.download("d", local_path=os.path.join(self.tmp, "dl"), overwrite=True)
        elif op == "model_upload":
            self.store.upload("d", b"weights\n", model_id=f"u{i}")
        elif op == "model_list":
            self.store.list_models("d")
        else:
            raise ValueError(f"unknown op {op!r}")

    def alias_switches(self, alias: str, worker: int) -> dict[str, int]:
        """How many switches of `alias` the history records to each of `worker`'s models."""
        models = {f"w{worker}a", f"w{worker}b"}
        recorded = [c for c in self.store.history("d", alias) if c.new in models]
        return {"recorded": len(recorded)}


def _metatreedb_class() -> Any:
    from metatree.metatree import (  # type: ignore[import-not-found]  # metatreedb 0.2.3's layout
        Metatree,
    )

    return Metatree


class FloorClient:
    """The least work per operation on the same format, with raw fsspec calls."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import fsspec

        options = dict(spec["options"])
        protocol = spec["protocol"]
        if protocol == "file":
            options["auto_mkdir"] = True  # object stores need no directories either
        self.fs = fsspec.filesystem(protocol, **options)
        self.root = spec["path"].rstrip("/")
        self.tmp = spec["tmp"]
        self.keys = tuple(spec["keys"])
        if not self.fs.exists(f"{self.root}/.metatree"):
            self.fs.pipe_file(
                f"{self.root}/.metatree",
                json.dumps({"keys": list(self.keys), "locking_enabled": True}).encode(),
            )
            self._write("", {})

    def _path(self, node: str, name: str = "metadata.json") -> str:
        return "/".join(p for p in (self.root, node, name) if p)

    def _read(self, node: str) -> dict[str, Any]:
        self.fs.invalidate_cache()
        result: dict[str, Any] = json.loads(self.fs.cat_file(self._path(node)))
        return result

    def _write(self, node: str, metadata: dict[str, Any]) -> None:
        self.fs.pipe_file(self._path(node), json.dumps(metadata).encode())

    def _walk(self, location: str) -> dict[str, Any]:
        """Read each index on the way: a node exists when its parent lists it."""
        node = ""
        metadata = self._read("")
        for part in location.split("/"):
            if part.startswith("<"):
                part = metadata[part[1:-1]]
            if part not in metadata.get("children", []):
                raise FileNotFoundError(f"{node}/{part}")
            node = f"{node}/{part}".lstrip("/")
            if node.count("/") + 1 < len(self.keys):
                metadata = self._read(node)
        return metadata

    def _new_nodes(
        self, parent: str, names: list[str], file: str, parent_md: dict[str, Any] | None = None
    ) -> None:
        """Create `names` (a chain) below the existing `parent`, `file` in the deepest.

        The deepest node first and the parent's index last, as the format requires.
        """
        if parent_md is None:
            parent_md = self._read(parent)
        if names[0] in parent_md.get("children", []):
            raise FileExistsError(f"{parent}/{names[0]}")
        nodes = ["/".join([parent, *names[: d + 1]]).lstrip("/") for d in range(len(names))]
        self.fs.put_file(file, self._path(nodes[-1], os.path.basename(file)))
        for depth in range(len(nodes) - 1, -1, -1):
            below = {"children": [names[depth + 1]]} if depth + 1 < len(names) else {}
            self._write(nodes[depth], below)
        parent_md["children"] = [*parent_md.get("children", []), names[0]]
        self._write(parent, parent_md)

    def setup_ops(self) -> None:
        self._new_nodes("", ["x", "y", "z"], _source(self.tmp, "f"))
        for node, values in (("x", {"active": "y"}), ("x/y/z", {"model_file": "f"})):
            self._write(node, {**self._read(node), **values})

    def prepare(self, op: str) -> None:
        return None

    def run(self, op: str, i: int) -> None:
        fs = self.fs
        if op == "open":
            fs.cat_file(self._path("", ".metatree"))
        elif op == "put_tree":
            self._new_nodes("", [f"t{i}", "y", "z"], _source(self.tmp, "f"))
        elif op == "put_leaf":
            parent_md = self._walk("x/y")  # 3 reads: root, x, x/y
            self._new_nodes("x/y", [f"l{i}"], _source(self.tmp, "f"), parent_md)
        elif op == "put_existing":
            self._walk("x/y/z")
            target = self._path("x/y/z", f"g{i}")
            if fs.exists(target):
                raise FileExistsError(target)
            fs.put_file(_source(self.tmp, f"g{i}"), target)
        elif op == "find3":
            self._walk("x/y/z")
        elif op == "find_placeholder":
            self._walk("x/<active>/z")
        elif op in {"update", "scale_update"}:
            node = "x/y/z" if op == "update" else "m"
            self._write(node, {**self._read(node), f"k{i}": i})
        elif op == "get_small":
            self._walk("x/y/z")
            fs.cat_file(self._path("x/y/z", "f"))
        elif op == "get_placeholder":
            self._walk("x/<active>/z")
            name = self._read("x/y/z")["model_file"]
            fs.cat_file(self._path("x/y/z", name))
        elif op == "list":
            fs.invalidate_cache()
            fs.ls(self._path("x/y/z", ""))
        elif op == "scale_put":
            self._new_nodes("m", [f"n{i}"], _source(self.tmp, "f"))
        elif op == "scale_find":
            if f"v{i}" not in self._read("m")["children"]:
                raise FileNotFoundError(f"m/v{i}")
        else:
            raise ValueError(f"unknown op {op!r}")

    def grow(self, start: int, stop: int, batch: int) -> None:
        """Add m/v<start>..: each child's files, then m's index once per `batch` children."""
        src = _source(self.tmp, "f")
        if not self.fs.exists(self._path("m")):
            self._new_nodes("", ["m"], src)
        for first in range(start, stop, max(batch, 1)):
            names = [f"v{i}" for i in range(first, min(first + max(batch, 1), stop))]
            parent = self._read("m")
            for name in names:
                self.fs.put_file(src, self._path(f"m/{name}", "f"))
                self._write(f"m/{name}", {})
            parent["children"] = [*parent.get("children", []), *names]
            self._write("m", parent)

    def metadata_keys(self, location: str) -> list[str]:
        return list(self._read(location))

    def put_file(self, location: str, path: str) -> None:
        self.fs.put_file(path, self._path(location, os.path.basename(path)))

    def get_file(self, location: str, out: str) -> None:
        node, name = location.rsplit("/", 1)
        self.fs.get_file(self._path(node, name), out)

    def archive_put(self, location: str, folder: str, name: str) -> None:
        """``tar czf`` streamed into the store (tarfile's own gzip is level 9 on 3.11: ours)."""
        import tarfile

        with (
            self.fs.open(self._path(location, name), "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed,
            tarfile.open(fileobj=packed, mode="w|") as tar,
        ):
            tar.add(folder, arcname=".")

    def archive_get(self, location: str, name: str, out: str) -> None:
        """Stream the archive back and extract it with tarfile's "data" filter."""
        import tarfile

        with (
            self.fs.open(self._path(location, name), "rb") as raw,
            gzip.GzipFile(fileobj=raw, mode="rb") as packed,
            tarfile.open(fileobj=packed, mode="r|") as tar,
        ):
            tar.extractall(out, filter="data")

    def stored_size(self, location: str, name: str) -> int:
        size: int = self.fs.size(self._path(location, name))
        return size


def _hammer(
    client: Any, location: str, worker: int, start_at: float, duration: float
) -> dict[str, Any]:
    """Update distinct keys of one node from `start_at` for `duration` seconds."""
    node = client.tree.find(location)
    acked: list[str] = []
    errors = 0
    time.sleep(max(0.0, start_at - time.time()))
    i = 0
    while time.time() < start_at + duration:
        key = f"w{worker}_{i}"
        i += 1
        try:
            node.update(**{key: i})
        except Exception:  # noqa: BLE001 (metatreedb raises bare Exception when its lock gives up)
            errors += 1
            continue
        acked.append(key)
    return {"acked": acked, "errors": errors, "end": time.time()}


def _alias_storm(client: Any, worker: int, start_at: float, duration: float) -> dict[str, Any]:
    """Switch ``production`` between this writer's two models from `start_at` for `duration`.

    Each switch changes the alias (this writer set its other model last, or another writer
    set one of theirs), so each acked switch must be one history entry.
    """
    ok, errors, i = 0, 0, 0
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < start_at + duration:
        i += 1
        try:
            client.store.set_alias("d", "production", f"w{worker}{'ab'[i % 2]}")
        except Exception:  # noqa: BLE001 (counted: the report says how many failed)
            errors += 1
            continue
        ok += 1
    return {"ok": ok, "errors": errors, "end": time.time()}


def _transfer(client: Any, kind: str, location: str, path: str) -> dict[str, Any]:
    """Put or get one (large) file; seconds taken and peak RSS growth of this process."""
    before = _peak_rss()
    began = time.perf_counter()
    if kind == "put":
        client.put_file(location, path)
    else:
        client.get_file(location, path)
    return {"seconds": time.perf_counter() - began, "rss_growth": _peak_rss() - before}


def _archive(client: Any, kind: str, location: str, name: str, path: str, out: str) -> Any:
    """Put the directory `path` as the archive `name`, or get it extracted into `out`."""
    before = _peak_rss()
    began = time.perf_counter()
    if kind == "put":
        client.archive_put(location, path, name)
    else:
        client.archive_get(location, name, out)
    seconds = time.perf_counter() - began
    rss_growth = _peak_rss() - before
    return {
        "seconds": seconds,
        "rss_growth": rss_growth,
        "stored": client.stored_size(location, name),
    }


def _grow(client: Any, start: int, stop: int, batch: int, budget: float) -> dict[str, Any]:
    """Grow m's children towards `stop`; stop early once `budget` seconds are spent."""
    began = time.perf_counter()
    reached = start
    step = max(batch, 1)
    while reached < stop and time.perf_counter() - began < budget:
        upto = min(reached + step, stop)
        client.grow(reached, upto, batch)
        reached = upto
    return {"reached": reached, "seconds": time.perf_counter() - began}


def handle(state: dict[str, Any], msg: dict[str, Any]) -> Any:
    """Run one command; the client lives in `state` between commands."""
    cmd = msg["cmd"]
    if cmd == "open":
        began = time.perf_counter()
        impl = {"floor": FloorClient, "modelstore": ModelClient}.get(msg["impl"], TreeClient)
        state["client"] = impl(msg["spec"])
        return {"seconds": time.perf_counter() - began}
    client = state["client"]
    if cmd == "setup_ops":
        return client.setup_ops()
    if cmd == "prepare":
        return client.prepare(msg["op"])
    if cmd == "time":
        times = []
        wrap = msg.get("wrap") or sys.maxsize  # numbers wrap around to stay among the existing
        for i in range(msg["start"], msg["start"] + msg["n"]):
            began = time.perf_counter()
            client.run(msg["op"], i % wrap)
            times.append(time.perf_counter() - began)
        return times
    if cmd == "grow":
        return _grow(client, msg["start"], msg["stop"], msg["batch"], msg["budget"])
    if cmd == "hammer":
        return _hammer(client, msg["location"], msg["worker"], msg["start_at"], msg["duration"])
    if cmd == "setup_storm":
        return client.setup_storm(msg["writers"])
    if cmd == "alias_storm":
        return _alias_storm(client, msg["worker"], msg["start_at"], msg["duration"])
    if cmd == "alias_switches":
        return client.alias_switches(msg["alias"], msg["worker"])
    if cmd == "metadata_keys":
        return client.metadata_keys(msg["location"])
    if cmd == "transfer":
        return _transfer(client, msg["kind"], msg["location"], msg["path"])
    if cmd == "archive":
        args = (msg["kind"], msg["location"], msg["name"], msg["path"], msg["out"])
        return _archive(client, *args)
    raise ValueError(f"unknown command {cmd!r}")


def main() -> None:
    """Serve JSON-line commands: ``{"cmd": ...}`` in, ``{"ok": value}`` or ``{"error": tb}`` out."""
    if len(sys.argv) > 1:  # the checkout to measure (run with -I: nothing else is on the path)
        sys.path.insert(0, sys.argv[1])
    state: dict[str, Any] = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of a library must not break the protocol
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "exit":
            break
        try:
            reply = {"ok": handle(state, msg)}
        except Exception:  # noqa: BLE001 (any failure goes back to the orchestrator)
            reply = {"error": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
