"""Run scenarios on both implementations, and compare what they return and leave on disk.

`run_ours` runs a scenario in-process on this repository's `metatree`; `run_theirs` runs it in
a subprocess on metatreedb 0.2.3 (``ref_runner.py``, isolated mode, a temporary cwd). Both use
the op code of ``ref_runner.py``, so the two sides are summarised identically.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import metatree.errors
from metatree._records import RECORDS, records_of
from tests.differential import ref_runner

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

Summary = dict[str, Any]
Scenario = dict[str, Any]

RUNNER = Path(ref_runner.__file__).resolve()
TYPED_ERRORS = frozenset(metatree.errors.__all__)
"""Class names of our typed errors: where metatreedb fails, ours must fail with one of them."""
SYSTEM_PREFIXES = (".metatree", ".lock")
"""Names of system entries: the config, our temp files, and the lock (both use ``.lock``)."""
METADATA = "metadata.json"


def scenario(
    root: Path, keys: tuple[str, ...], ops: list[dict[str, Any]], **extra: Any
) -> Scenario:
    """Build a scenario for the database at `root`."""
    return {"root": str(root), "keys": list(keys), "ops": ops, **extra}


def run_ours(spec: Scenario) -> list[Summary]:
    """Run `spec` on our package, in this process; results go through JSON as theirs do."""
    results = ref_runner.run_scenario(spec)
    loaded: list[Summary] = json.loads(json.dumps(results, default=repr))
    return loaded


def run_theirs(python: Path, spec: Scenario, timeout: float = 90.0) -> list[Summary]:
    """Run `spec` on metatreedb 0.2.3 with the reference virtualenv's `python`."""
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(
            [str(python), "-I", str(RUNNER)],
            input=json.dumps(spec),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise AssertionError(f"ref_runner failed ({done.returncode}):\n{done.stderr[-3000:]}")
    loaded: list[Summary] = json.loads(done.stdout)
    return loaded


# -- normalisations ------------------------------------------------------------------------
def is_system(name: str) -> bool:
    """Whether `name` is a system entry that ``list`` hides in ours (and shows in metatreedb)."""
    return name == METADATA or name.startswith(SYSTEM_PREFIXES)


def norm_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Children as a sorted set ("children_order"), other values as str ("metadata_types").

    Our file records ("file_records") are compared with the stored bytes by `check_records`.
    """
    out: dict[str, Any] = {k: str(v) for k, v in metadata.items() if k not in ("children", RECORDS)}
    if "children" in metadata:
        out["children"] = sorted(set(metadata["children"]))
    return out


def norm_list(names: list[str]) -> list[str]:
    """Sorted, without system entries ("list_hides_system_files")."""
    return sorted(n for n in names if not is_system(n))


def norm_location(value: str, root: str) -> str:
    """A URL below the root, with the root replaced by ``<root>``."""
    prefix = "file://" + os.path.realpath(root)
    assert value.startswith(prefix), (value, prefix)
    return "<root>" + value[len(prefix) :]


def _value_normaliser(kind: str, root: str) -> Callable[[Any], Any]:
    if kind in {"find", "location", "node_location"}:
        return lambda value: norm_location(value, root)
    if kind in {"metadata", "node_metadata"}:
        return norm_metadata
    if kind in {"list", "node_list"}:
        return norm_list
    return lambda value: value


def compare(
    spec_ours: Scenario,
    ours: list[Summary],
    spec_theirs: Scenario,
    theirs: list[Summary],
    refusals: Mapping[str, str | None],
) -> list[str]:
    """Compare two runs op by op; return the mismatches (empty when they agree).

    An op carrying ``"difference": NAME`` is an intended divergence: metatreedb succeeds and
    ours refuses with the error class ``refusals[NAME]`` or, when that is None, ours succeeds
    where metatreedb fails. Every other op must agree after the normalisations.
    """
    problems: list[str] = []
    for index, (op, mine, ref) in enumerate(zip(spec_ours["ops"], ours, theirs, strict=True)):
        where = f"op {index} {op}"
        difference = op.get("difference")
        if difference is not None:
            expected = refusals[difference]
            if expected is None:
                if not mine["ok"] or ref["ok"]:
                    problems.append(f"{where}: expected ours ok, theirs failing: {mine} {ref}")
            elif not ref["ok"] or mine["error"] != expected:
                problems.append(f"{where}: expected theirs ok, ours {expected}: {mine} {ref}")
            continue
        if not ref["ok"]:
            if mine["ok"]:  # "typed_errors": both must fail, ours with a typed error
                problems.append(f"{where}: metatreedb raised {ref['error']}, ours returned {mine}")
            elif mine["error"] not in TYPED_ERRORS:
                problems.append(f"{where}: ours raised untyped {mine['error']}")
            continue
        if op["op"] in {"get", "node_get"} and ref["value"] is None:
            # "get_missing_raises": metatreedb returns None, we raise a typed error
            if mine["error"] not in {"NotFoundError", "PathError"}:
                problems.append(f"{where}: metatreedb returned None, ours gave {mine}")
            continue
        if not mine["ok"]:
            problems.append(f"{where}: ours raised {mine['error']}, metatreedb returned {ref}")
            continue
        normalise_mine = _value_normaliser(op["op"], spec_ours["root"])
        normalise_ref = _value_normaliser(op["op"], spec_theirs["root"])
        if normalise_mine(mine["value"]) != normalise_ref(ref["value"]):
            problems.append(f"{where}: ours {mine['value']!r} != metatreedb {ref['value']!r}")
    return problems


# -- on disk -------------------------------------------------------------------------------
def check_records(
    metadata: Mapping[str, Any], rel: str, files: Mapping[str, bytes | None]
) -> list[str]:
    """Our file records must describe the bytes stored beside them (size and sha256)."""
    node = os.path.dirname(rel)
    problems = []
    for name, record in records_of(metadata, rel).items():
        data = files.get(os.path.normpath(os.path.join(node, name)))
        if data is None:
            problems.append(f"{rel}: a record for {name!r}, which is not stored")
        elif (record.size, record.sha256) != (len(data), hashlib.sha256(data).hexdigest()):
            problems.append(f"{rel}: the record of {name!r} does not describe its bytes")
    return problems


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry below `root` (directories map to None), system entries excluded."""
    entries: dict[str, bytes | None] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(SYSTEM_PREFIXES)]
        rel_folder = os.path.relpath(folder, root)
        for name in dirs:
            entries[os.path.normpath(os.path.join(rel_folder, name))] = None
        for name in files:
            if name.startswith(SYSTEM_PREFIXES):
                continue
            rel = os.path.normpath(os.path.join(rel_folder, name))
            entries[rel] = (Path(folder) / name).read_bytes()
    return entries


def parse_metadata(data: bytes, rel: str) -> dict[str, Any]:
    """Parse a metadata.json; metatreedb's 0-byte root file ("root_metadata_empty") is {}."""
    if not data and rel == METADATA:
        return {}
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def read_config(root: Path) -> dict[str, Any]:
    """The parts of ``.metatree`` both write: keys and locking_enabled ("config_format")."""
    config = json.loads((root / ".metatree").read_bytes())
    return {"keys": list(config["keys"]), "locking_enabled": config["locking_enabled"]}


def compare_trees(ours: Path, theirs: Path) -> list[str]:
    """Compare two database directories; return the differences (empty when equivalent)."""
    mine, ref = snapshot(ours), snapshot(theirs)
    problems = []
    if set(mine) != set(ref):
        problems.append(
            f"entries only in ours: {sorted(set(mine) - set(ref))}, "
            f"only in metatreedb: {sorted(set(ref) - set(mine))}"
        )
    for rel in sorted(set(mine) & set(ref)):
        a, b = mine[rel], ref[rel]
        if a is None or b is None:
            if (a is None) != (b is None):
                problems.append(f"{rel}: a directory on one side only")
            continue
        if os.path.basename(rel) == METADATA:
            problems.extend(check_records(parse_metadata(a, rel), rel, mine))
            left = norm_metadata(parse_metadata(a, rel))
            right = norm_metadata(parse_metadata(b, rel))
            if left != right:
                problems.append(f"{rel}: ours {left} != metatreedb {right}")
        elif a != b:
            problems.append(f"{rel}: file bytes differ ({a[:40]!r} vs {b[:40]!r})")
    if read_config(ours) != read_config(theirs):
        problems.append(f".metatree: ours {read_config(ours)} != {read_config(theirs)}")
    return problems
