"""The seed's model-repository example, end to end, on a local tree.

Run ``python -m metatree.demo [ROOT]``: it creates a database with the levels
``("model", "version")`` in ROOT (default: a new temporary directory), stores three versions of
a model, points ``active`` at one of them, prints the tree and every metadata.json, and resolves
the templates ``my-awful-model/<active>`` and ``my-awful-model/<active>/<model_file>``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import uuid
from typing import TYPE_CHECKING

from metatree import Metatree

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["main", "render_tree"]


def render_tree(root: str) -> Iterator[str]:
    """Yield the lines of a ``tree``-style drawing of the local directory `root`."""
    yield root

    def walk(folder: str, prefix: str) -> Iterator[str]:
        names = sorted(os.listdir(folder))
        for index, name in enumerate(names):
            last = index == len(names) - 1
            yield f"{prefix}{'└── ' if last else '├── '}{name}"
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                yield from walk(path, prefix + ("    " if last else "│   "))

    yield from walk(root, "")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m metatree.demo", description=__doc__)
    parser.add_argument("root", nargs="?", help="an empty or new directory (default: a temp dir)")
    args = parser.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="metatree-demo-")

    metatree = Metatree(root, ("model", "version"))
    staging = tempfile.mkdtemp(prefix="metatree-demo-files-")
    trained = os.path.join(staging, "trained.pkl")
    for i in range(1, 4):
        with open(trained, "wb") as f:
            pickle.dump(uuid.uuid4(), f)
        metatree.put(f"my-awful-model/v{i}", trained)

    metatree.find("my-awful-model")
    metatree.update(active="v2")
    for i in range(1, 4):
        metatree.find(f"my-awful-model/v{i}").update(model_file="trained.pkl")

    print("$ tree", root)
    for line in render_tree(metatree.storage.root):
        print(line)
    print()
    for node, metadata, files in metatree.walk(files=True):
        shown = "/".join(node.path) or "(root)"
        print(f"{shown}: metadata {json.dumps(metadata)}")
        for name, record in files.items():
            origin = record.provenance
            print(
                f"    {name}: {record.size} bytes, sha256 {record.sha256[:12]}..., "
                f"put {record.created:%Y-%m-%d %H:%M:%S} UTC by {origin.user}@{origin.host} "
                f"({origin.python})"
            )
    print()
    report = metatree.verify()
    print(
        f"verify: {len(report.ok)} files intact, {len(report.mismatched)} changed, "
        f"{len(report.missing)} missing"
    )
    metatree.find("my-awful-model/<active>")
    print(f"my-awful-model/<active> -> {metatree.location}")
    chunks = metatree.get("my-awful-model/<active>/<model_file>")
    model = pickle.loads(b"".join(chunks))
    print(f"my-awful-model/<active>/<model_file> -> {metatree.location}/trained.pkl")
    print(f"loaded model: {model!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
