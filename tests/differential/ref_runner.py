"""Run a JSON scenario against whichever package ``import metatree`` finds, and print the results.

The differential tests run this file with the python of a virtualenv holding metatreedb 0.2.3,
in isolated mode (``python -I``) from a temporary working directory, so ``metatree`` is the
installed metatreedb package and never this repository's. The same functions drive our own
package in-process (`tests.differential.scenarios`), so both sides are summarised by one code.

Only the standard library is used here: the reference virtualenv has nothing else of ours.

Scenario (stdin)::

    {"root": "/tmp/x/db", "keys": ["model", "version"], "create": true,
     "ops": [{"op": "put", "location": "m/v1", "file": "src/trained.pkl"}, ...]}

Relative ``file``/``path`` values are taken relative to the root's parent directory. Each op
gives ``{"ok": bool, "value": ..., "error": "ClassName" | null}``; see `run_op` for the ops.
"""

from __future__ import annotations

import ast
import importlib
import json
import multiprocessing
import os
import sys
import time
from typing import Any

Summary = dict[str, Any]


def _tree_class() -> Any:
    return importlib.import_module("metatree").Metatree


def _local(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(root), path)


def _joined(chunks: Any) -> str | None:
    if chunks is None:
        return None
    return b"".join(chunks).decode("latin-1")


def _open(root: str, keys: list[str] | None, **options: Any) -> Any:
    return _tree_class()(root, None if keys is None else tuple(keys), **options)


def run_op(tree: Any, op: dict[str, Any], root: str) -> tuple[Any, Any]:
    """Run one op on `tree`; return ``(tree, value)`` (``reopen`` replaces the tree).

    Ops: ``put`` (location, file), ``find`` (location; value: the found node's location),
    ``update`` (metadata, on the tree's cursor), ``update_literal`` (key, literal: a
    Python literal such as a tuple, which JSON cannot carry), ``get`` (location; value: the bytes as a
    latin-1 str, or null when it returned None), ``list``, ``location``, ``metadata``,
    ``node_update`` / ``node_metadata`` / ``node_list`` / ``node_location`` (find, then act
    on the returned object), ``node_get`` (find location, then ``.get(file)`` on it),
    ``write_local`` (path, data: write a local file), ``reopen`` (keys: a new tree object on
    the same root) and ``hammer`` (see `hammer`).
    """
    kind = op["op"]
    if kind == "put":
        force = {"force": True} if op.get("force") else {}
        return tree, tree.put(op["location"], _local(root, op["file"]), **force)
    if kind == "find":
        return tree, tree.find(op["location"]).location
    if kind == "update":
        return tree, tree.update(**op["metadata"])
    if kind == "get":
        if "outfile" in op:
            return tree, _joined(tree.get(op["location"], outfile=_local(root, op["outfile"])))
        return tree, _joined(tree.get(op["location"]))
    if kind == "list":
        return tree, tree.list()
    if kind == "location":
        return tree, tree.location
    if kind == "metadata":
        return tree, tree.metadata
    if kind == "update_literal":
        return tree, tree.update(**{op["key"]: ast.literal_eval(op["literal"])})
    if kind == "node_update":
        return tree, tree.find(op["location"]).update(**op["metadata"])
    if kind == "node_metadata":
        return tree, tree.find(op["location"]).metadata
    if kind == "node_list":
        return tree, tree.find(op["location"]).list()
    if kind == "node_location":
        return tree, tree.find(op["location"]).location
    if kind == "node_get":
        return tree, _joined(tree.find(op["location"]).get(op["file"]))
    if kind == "write_local":
        path = _local(root, op["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(op["data"].encode("latin-1"))
        return tree, None
    if kind == "reopen":
        return _open(root, op.get("keys")), None
    if kind == "hammer":
        counts = op["processes"], op["updates"]
        return tree, hammer(root, op["location"], *counts, method=op.get("start_method"))
    raise ValueError(f"unknown op {kind!r}")


SYSTEM_PREFIXES = (".metatree", ".lock")


def snapshot_text(root: str) -> dict[str, str | None]:
    """Every entry below `root` and its sibling ``out`` (a directory is None, a file its bytes
    as latin-1), system entries excluded: the state a traced scenario compares after each op.
    """
    entries: dict[str, str | None] = {}
    base = os.path.dirname(root)
    for top in (root, os.path.join(base, "out")):
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith(SYSTEM_PREFIXES))
            rel_folder = os.path.relpath(folder, base)
            for name in dirs:
                entries[os.path.normpath(os.path.join(rel_folder, name))] = None
            for name in sorted(files):
                if name.startswith(SYSTEM_PREFIXES):
                    continue
                with open(os.path.join(folder, name), "rb") as stream:
                    data = stream.read()
                entries[os.path.normpath(os.path.join(rel_folder, name))] = data.decode("latin-1")
    return entries


def _cursor(tree: Any) -> str | None:
    try:
        return str(tree.location)
    except Exception:  # noqa: BLE001 - a cursor that cannot be shown is an outcome too
        return None


def run_scenario(scenario: dict[str, Any]) -> list[Summary]:
    """Open the tree and run every op on it, recording each outcome; never raises for an op.

    With ``"trace": true`` each outcome also has the tree's ``cursor`` (its ``location``)
    and the ``tree`` on disk (`snapshot_text`) after the op.
    """
    root = scenario["root"]
    trace = scenario.get("trace", False)
    results: list[Summary] = []
    options = {k: scenario[k] for k in ("locking_enabled",) if k in scenario}
    tree = _open(root, scenario.get("keys"), **options)
    for op in scenario["ops"]:
        result: Summary
        try:
            tree, value = run_op(tree, op, root)
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome to compare
            result = {"ok": False, "value": None, "error": type(exc).__name__}
        else:
            result = {"ok": True, "value": value, "error": None}
        if trace:
            result["cursor"] = _cursor(tree)
            result["tree"] = snapshot_text(root)
        results.append(result)
    return results


def serve() -> None:
    """Run one scenario per stdin line, answering one JSON line each (the fuzzer's worker).

    A scenario that cannot even start (its tree does not open) answers ``{"crash": ...}``.
    """
    _tree_class()  # import metatreedb first, so that its lock retries can be shortened
    _fast_retries()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer: Any = run_scenario(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            answer = {"crash": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer, default=repr) + "\n")
        sys.stdout.flush()


def _fast_retries() -> None:
    """metatreedb sleeps 3 s between lock attempts: shorten it so the demonstration is quick.

    The lost updates do not come from that delay but from ``update`` reading the metadata
    before it takes the lock (and from the exists-then-touch lock); a shorter pause only makes
    more attempts fail with "max attempts reached", which are not counted as acknowledged.
    """
    module = sys.modules.get("metatree.metatree")
    if module is not None and hasattr(module, "sleep"):
        setattr(module, "sleep", lambda seconds: time.sleep(min(seconds, 0.01)))  # noqa: B010


def _hammer_worker(
    root: str, location: str, worker: int, updates: int, start: Any, queue: Any
) -> None:
    _fast_retries()
    tree = _open(root, None)
    acknowledged = []
    start.wait()
    for index in range(updates):
        key = f"w{worker}_{index}"
        try:
            tree.find(location).update(**{key: "x"})
        except Exception:  # noqa: BLE001, S112 - a failed update is not acknowledged
            continue
        acknowledged.append(key)
    queue.put(acknowledged)


def hammer(
    root: str, location: str, processes: int, updates: int, method: str | None = None
) -> Summary:
    """Let `processes` processes each update distinct keys of one node `updates` times.

    `method` is the multiprocessing start method (default: fork where available).

    Returns how many updates were acknowledged (returned without error), which of them are
    missing from the node's metadata afterwards (``lost``), and the time taken.
    """
    if method is None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context: Any = multiprocessing.get_context(method)
    start = context.Event()
    queue = context.Queue()
    workers = [
        context.Process(target=_hammer_worker, args=(root, location, n, updates, start, queue))
        for n in range(processes)
    ]
    for process in workers:
        process.start()
    began = time.monotonic()
    start.set()
    acknowledged: list[str] = []
    for _ in workers:
        acknowledged.extend(queue.get(timeout=120))
    for process in workers:
        process.join(timeout=30)
    elapsed = time.monotonic() - began
    metadata = _open(root, None).find(location).metadata
    lost = sorted(k for k in acknowledged if k not in metadata)
    return {"acknowledged": len(acknowledged), "lost": lost, "seconds": round(elapsed, 2)}


def main() -> None:
    """Read the scenario on stdin, print the results as one JSON array (``--serve``: many)."""
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    scenario = json.load(sys.stdin)
    results = run_scenario(scenario)
    json.dump(results, sys.stdout, default=repr)


if __name__ == "__main__":
    main()
