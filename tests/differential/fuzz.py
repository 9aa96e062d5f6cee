"""A differential fuzzer: random programs run on metatreedb 0.2.3 and on metatree, compared.

A program is a list of ops in ``ref_runner``'s format (put/find/update/get/list/location/
metadata with str and dict locations, ``<key>`` placeholders set by earlier updates, ops
that fail, ``outfile``). `programs` is the hypothesis strategy; `RefWorker` runs programs on
metatreedb in ONE long-lived subprocess of the reference virtualenv (``ref_runner --serve``);
`run_program` runs both sides on local disk (temporary roots) with ``"trace"``, so each op
records its outcome, the cursor and the tree on disk after it; `compare_program` compares
them op by op modulo `INTENDED_DIFFERENCES`.

An intended difference either makes an op equivalent (``SAME``: comparison goes on) or
explains why the two trees part on purpose (``STOP``: the rest of that program is not
compared, since both sides now hold different trees). Anything else is a divergence.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hypothesis import strategies as st

import metatree.errors
from tests.differential import ref_runner, scenarios

if TYPE_CHECKING:
    from collections.abc import Callable

Op = dict[str, Any]
Program = dict[str, Any]
Result = dict[str, Any]
Verdict = Literal["same", "stop"] | None

RUNNER = Path(ref_runner.__file__).resolve()
TYPED_ERRORS = frozenset(metatree.errors.__all__)
PATH_ERRORS = frozenset({"PathError", "TemplateSyntaxError", "UnresolvedPathError"})

# -- the alphabet of programs -----------------------------------------------------------------
NODES = ("m", "n", "v1", "v2")
"""Node names: few, so that programs hit the same nodes again and again."""
PLACEHOLDERS = ("<active>", "<current>", "<missing>")
FILE_PLACEHOLDERS = ("<model_file>", "<missing>")
POINTER_KEYS = ("active", "current", "model_file")
"""Metadata keys read by placeholders: updates give them names (str), never other types."""
SOURCES = {
    "src/a.bin": "A",
    "src/b.bin": "B",
    "src/model.bin": "weights",
    "src/metadata.json.bak": "backup",  # difference 5: metatreedb hides metadata.json* names
}
ABSENT = "src/absent.bin"
FILES = ("a.bin", "b.bin", "model.bin", "metadata.json.bak", "metadata.json", "absent.bin")
HOSTILE = ("", "..", "x:y", " m", "m ", "a*b", "a<b", "<a", ".metatree", "\u202em", "\ufeffm")
"""Names metatree refuses (PathError) that metatreedb may accept: used by few programs."""
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*|<[a-z_]+>")
KEYS2 = ("model", "version")
KEYS3 = ("project", "model", "version")


def _setup() -> list[Op]:
    ops = [{"op": "write_local", "path": p, "data": d} for p, d in SOURCES.items()]
    return [*ops, {"op": "write_local", "path": "out/keep", "data": ""}]


SETUP = _setup()


@st.composite
def _segment(draw: st.DrawFn, hostile: bool) -> str:
    kind = draw(st.sampled_from(["node"] * 6 + ["placeholder"] * 2 + ["hostile"] * 2 * hostile))
    if kind == "node":
        return draw(st.sampled_from(NODES))
    if kind == "placeholder":
        return draw(st.sampled_from(PLACEHOLDERS))
    return draw(st.sampled_from(HOSTILE))


@st.composite
def str_locations(draw: st.DrawFn, keys: tuple[str, ...], hostile: bool) -> str:
    """``"m/<active>"``-like; sometimes too deep, empty, with a leading or trailing '/'."""
    size = draw(st.sampled_from([*range(1, len(keys) + 1)] * 8 + [0, len(keys) + 1]))
    text = "/".join(draw(st.lists(_segment(hostile), min_size=size, max_size=size)))
    affix = draw(st.sampled_from(["none"] * 30 + ["leading", "trailing", "double"]))
    if affix == "leading":
        return "/" + text
    if affix == "trailing":
        return text + "/"
    if affix == "double" and "/" in text:
        return text.replace("/", "//", 1)
    return text


@st.composite
def dict_locations(draw: st.DrawFn, keys: tuple[str, ...], hostile: bool) -> dict[str, Any]:
    """``{level: name | {"value": name} | {"metadata": key}}``; sometimes skipping a level."""
    levels = list(keys[: draw(st.integers(0, len(keys)))])
    shape = draw(st.sampled_from(["prefix"] * 24 + ["skip", "unknown"]))
    if shape == "skip":  # a level missing above a deeper one
        skipped = draw(st.integers(0, len(keys) - 2))
        deepest = draw(st.integers(skipped + 1, len(keys) - 1))
        levels = [k for k in keys[: deepest + 1] if k != keys[skipped]]
    location: dict[str, Any] = {}
    for level in levels:
        name = draw(_segment(hostile))
        form = draw(st.sampled_from(["str", "value", "metadata"]))
        if name.startswith("<") and name.endswith(">") and len(name) > 2:
            location[level] = {"metadata": name[1:-1]}
        elif form == "value":
            location[level] = {"value": name}
        else:
            location[level] = name
    if shape == "unknown":
        location["other"] = "x"
    return location


def locations(keys: tuple[str, ...], hostile: bool) -> st.SearchStrategy[Any]:
    """A node location, a str four times out of five."""
    return st.one_of(*[str_locations(keys, hostile)] * 4, dict_locations(keys, hostile))


@st.composite
def file_locations(draw: st.DrawFn, keys: tuple[str, ...], hostile: bool) -> str:
    """``"node/location/file"``, or a bare file name (a file of the node under the cursor)."""
    file = draw(st.sampled_from([*FILES, *FILES, *FILE_PLACEHOLDERS, *NODES]))
    if draw(st.integers(0, 4)) == 0:
        return file
    node = draw(str_locations(keys, hostile))
    return f"{node}/{file}"


@st.composite
def updates(draw: st.DrawFn) -> dict[str, Any]:
    """Metadata updates: pointers to names (str), other keys any JSON-ish type, ``children``."""
    metadata: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([*POINTER_KEYS, *POINTER_KEYS, "stage", "n", "children"]))
        if key in POINTER_KEYS:
            metadata[key] = draw(st.sampled_from([*NODES, *FILES[:4]]))
        elif key == "n":
            metadata[key] = draw(st.one_of(st.integers(-5, 5), st.none(), st.booleans()))
        elif key == "children":
            metadata[key] = ["x"]
        else:
            metadata[key] = draw(st.sampled_from(["dev", "prod", "été"]))
    return metadata


@st.composite
def ops(draw: st.DrawFn, keys: tuple[str, ...], hostile: bool, outfiles: list[str]) -> Op:
    """One op of a program (`outfiles` numbers the local files `get` downloads to)."""
    kind = draw(
        st.sampled_from(
            ["put"] * 6 + ["find"] * 4 + ["update"] * 4 + ["get"] * 4
            + ["list", "location", "metadata", "node_update", "node_get", "node_list", "reopen"]
        )
    )  # fmt: skip
    where = locations(keys, hostile)
    if kind == "put":
        op: Op = {"op": "put", "location": draw(where)}
        op["file"] = draw(st.sampled_from([*SOURCES, *SOURCES, ABSENT]))
        if draw(st.integers(0, 24)) == 0:
            op["force"] = True
        return op
    if kind in {"find", "node_list"}:
        return {"op": kind, "location": draw(where)}
    if kind == "update":
        return {"op": "update", "metadata": draw(updates())}
    if kind == "node_update":
        return {"op": kind, "location": draw(where), "metadata": draw(updates())}
    if kind == "get":
        op = {"op": "get", "location": draw(file_locations(keys, hostile))}
        if draw(st.integers(0, 4)) == 0:  # a new local file, or one downloaded before
            reuse = bool(outfiles) and draw(st.booleans())
            if not reuse:
                outfiles.append(f"out/o{len(outfiles)}.bin")
            op["outfile"] = draw(st.sampled_from(outfiles)) if reuse else outfiles[-1]
        return op
    if kind == "node_get":
        file = draw(st.sampled_from([*FILES, *FILE_PLACEHOLDERS]))
        return {"op": kind, "location": draw(where), "file": file}
    if kind == "reopen":
        return {"op": "reopen", "keys": None}
    return {"op": kind}


@st.composite
def programs(draw: st.DrawFn, max_ops: int = 20) -> Program:
    """A program: keys, then ops; one program in eight may use names metatree refuses."""
    keys = draw(st.sampled_from([KEYS2, KEYS2, KEYS2, KEYS3]))
    hostile = draw(st.integers(0, 7)) == 0
    outfiles: list[str] = []
    body = draw(st.lists(ops(keys, hostile, outfiles), min_size=3, max_size=max_ops))
    return {"keys": list(keys), "ops": body}


# -- running ----------------------------------------------------------------------------------
class RefWorker:
    """metatreedb 0.2.3 in one subprocess of the reference virtualenv, for many programs.

    Starting an interpreter and importing fsspec costs more than a program; a worker serves
    one program per line (``ref_runner --serve``) and is restarted if it dies.
    """

    def __init__(self, python: Path) -> None:
        self.python = python
        self.cwd = tempfile.mkdtemp(prefix="metatreedb-worker-")
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [str(self.python), "-I", str(RUNNER), "--serve"],
                cwd=self.cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # metatreedb logs lock warnings: never block on them
                text=True,
            )
        return self.process

    def run(self, spec: dict[str, Any]) -> list[Result]:
        """Run one scenario on metatreedb; return its traced results."""
        process = self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(spec) + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the metatreedb worker died ({process.wait()})")
        answer = json.loads(line)
        assert isinstance(answer, list), f"metatreedb could not run the scenario: {answer}"
        results: list[Result] = answer
        return results

    def close(self) -> None:
        """Stop the worker (it ends when its stdin closes) and remove its directory."""
        if self.process is not None:
            self.process.communicate(timeout=30)  # closes stdin (the worker ends) and stdout
            self.process = None
        shutil.rmtree(self.cwd, ignore_errors=True)


@dataclass
class Run:
    """Both sides' roots and traced results of one program."""

    program: Program
    root_ours: str
    root_theirs: str
    ours: list[Result]
    theirs: list[Result]
    before_ours: dict[str, Any]
    """The tree after the setup (the local source files written), before the first op."""
    before_theirs: dict[str, Any]


def run_program(program: Program, worker: RefWorker) -> Run:
    """Run `program` on both sides, each on a new database in a temporary directory."""
    base = Path(os.path.realpath(tempfile.mkdtemp(prefix="metatree-fuzz-")))
    try:
        specs = []
        for side in ("ours", "theirs"):
            (base / side).mkdir()
            root = str(base / side / "db")
            ops = [*SETUP, *program["ops"]]
            specs.append({"root": root, "keys": program["keys"], "ops": ops, "trace": True})
        ours = json.loads(json.dumps(ref_runner.run_scenario(specs[0]), default=repr))
        theirs = worker.run(specs[1])
        skip = len(SETUP)
        return Run(
            program,
            specs[0]["root"],
            specs[1]["root"],
            ours[skip:],
            theirs[skip:],
            norm_tree(ours[skip - 1]["tree"]),
            norm_tree(theirs[skip - 1]["tree"]),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- normalisation ----------------------------------------------------------------------------
def norm_metadata(metadata: Any) -> Any:
    """As `scenarios.norm_metadata`; anything but an object is kept as it is."""
    return scenarios.norm_metadata(metadata) if isinstance(metadata, dict) else metadata


def norm_tree(tree: dict[str, str | None]) -> dict[str, Any]:
    """Each metadata.json parsed and normalised (a 0-byte root file is ``{}``).

    Our file records must describe the bytes beside them (`scenarios.check_records`); a
    record that does not shows as a difference.
    """
    out: dict[str, Any] = {}
    files = {rel: None if text is None else text.encode("latin-1") for rel, text in tree.items()}
    for rel, text in tree.items():
        if text is not None and os.path.basename(rel) == "metadata.json":
            try:
                metadata = json.loads(text.encode("latin-1")) if text else {}
                out[rel] = norm_metadata(metadata)
                if isinstance(metadata, dict):
                    out.update(
                        {f"{rel}!": p for p in scenarios.check_records(metadata, rel, files)}
                    )
            except (ValueError, metatree.errors.CorruptMetadataError):
                out[rel] = text
        else:
            out[rel] = text
    return out


def norm_cursor(url: str | None, root: str) -> str | None:
    """The cursor's URL with the root replaced by ``<root>``."""
    prefix = "file://" + root
    if url is not None and url.startswith(prefix):
        return "<root>" + url[len(prefix) :]
    return url


def norm_value(kind: str, value: Any, root: str) -> Any:
    """Locations below ``<root>``, metadata normalised, lists sorted; put's value as it is."""
    if kind in {"find", "location"}:
        return norm_cursor(value, root)
    if kind == "metadata":
        return norm_metadata(value)
    if kind in {"list", "node_list"} and isinstance(value, list):
        return sorted(n for n in value if n not in {"metadata.json", ".lock", ".metatree"})
    return value


@dataclass
class Step:
    """One op of a run, both sides normalised, and what an intended difference may look at."""

    index: int
    op: Op
    keys: tuple[str, ...]
    mine: Result
    ref: Result
    mine_value: Any
    ref_value: Any
    mine_cursor: str | None
    ref_cursor: str | None
    mine_tree: dict[str, Any]
    ref_tree: dict[str, Any]
    mine_before: dict[str, Any]
    ref_before: dict[str, Any]

    def outcome_agrees(self) -> bool:
        """Same value, or both failing (ours typed), or None in metatreedb and an error here."""
        mine, ref = self.mine, self.ref
        if not ref["ok"]:
            return not mine["ok"] and mine["error"] in TYPED_ERRORS
        if self.op["op"] in {"get", "node_get"} and ref["value"] is None:
            return mine["error"] in {"NotFoundError", *PATH_ERRORS}  # get_missing_raises
        return bool(mine["ok"]) and self.mine_value == self.ref_value

    def agrees(self) -> bool:
        """Whether outcome, cursor and tree all agree."""
        return (
            self.outcome_agrees()
            and self.mine_cursor == self.ref_cursor
            and self.mine_tree == self.ref_tree
        )


# -- intended differences ---------------------------------------------------------------------
def _names(op: Op) -> list[Any]:
    """Every name an op spells (location segments, dict values, file names, outfile)."""
    names: list[Any] = []
    location = op.get("location")
    if isinstance(location, str):
        names += location.strip("/").split("/")
    elif isinstance(location, dict):
        for value in location.values():
            names.append(next(iter(value.values()), "") if isinstance(value, dict) else value)
    return names + [op[k] for k in ("file",) if k in op and op["op"] == "node_get"]


def _refused(step: Step) -> Verdict:
    """Our refusal of a location metatreedb walks: it may succeed, write before failing, or
    fail further on with its cursor on the node it walked to (``put("/m")`` of a stored
    file). We refuse before walking, our cursor on the root (where find, put and get with a
    node part reset it); it must not have stayed anywhere else."""
    if step.mine["error"] not in PATH_ERRORS:
        return None
    if step.ref["ok"] or step.ref_tree != step.ref_before:
        return "stop"
    return "stop" if step.mine_cursor == "<root>" and step.op["op"] != "find" else None


def _strict_names(step: Step) -> Verdict:
    unsafe = [n for n in _names(step.op) if not (isinstance(n, str) and SAFE.fullmatch(n))]
    return _refused(step) if unsafe else None


def _leading_slash(step: Step) -> Verdict:
    location = step.op.get("location")
    return _refused(step) if isinstance(location, str) and location.startswith("/") else None


def _dict_levels(step: Step) -> Verdict:
    location = step.op.get("location")
    if isinstance(location, dict) and list(location) != list(step.keys[: len(location)]):
        return _refused(step)  # an unknown or a skipped level
    return None


def _empty_location(step: Step) -> Verdict:
    if step.op.get("location") != "" or not step.mine["ok"]:
        return None
    if step.mine_cursor == step.ref_cursor:
        return "same" if step.mine_tree == step.ref_tree else "stop"
    return None


def _only_index_growth(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether `after` is `before` plus new nodes (directories, metadata.json) and children."""
    for rel, value in after.items():
        old = before.get(rel, "<absent>")
        if old == value:
            continue
        if os.path.basename(rel) != "metadata.json":
            if value is None and old == "<absent>":
                continue  # a new directory
            return False
        if not isinstance(value, dict):
            return False
        old_meta = {} if old == "<absent>" else old
        if not isinstance(old_meta, dict):
            return False
        rest = {k: v for k, v in value.items() if k != "children"}
        old_rest = {k: v for k, v in old_meta.items() if k != "children"}
        if rest != old_rest or not set(old_meta.get("children", [])) <= set(
            value.get("children", [])
        ):
            return False
    return set(before) <= set(after)


def _failed_put(step: Step) -> Verdict:
    if step.op["op"] != "put" or step.mine["ok"] or step.ref["ok"]:
        return None
    if step.mine_cursor != step.ref_cursor or step.mine_tree != step.mine_before:
        return None
    return "stop" if _only_index_growth(step.ref_before, step.ref_tree) else None


def _force(step: Step) -> Verdict:
    if step.op["op"] != "put" or not step.op.get("force") or step.mine_cursor != step.ref_cursor:
        return None
    return "stop" if step.mine["ok"] and not step.ref["ok"] else None


def _metadata_json_files(step: Step) -> Verdict:
    op = step.op
    if step.mine_cursor != step.ref_cursor:
        return None
    if op["op"] in {"get", "node_get"}:
        file = op["file"] if op["op"] == "node_get" else op["location"].rsplit("/", 1)[-1]
        hidden = file.startswith("metadata.json") and file != "metadata.json"
        if file.startswith("<"):  # a <key> naming it: its content is unique among the sources
            hidden = step.mine_value == SOURCES["src/metadata.json.bak"]
        if hidden and step.mine["ok"] and step.ref["ok"] and step.ref["value"] is None:
            return "same" if step.mine_tree == step.ref_tree else "stop"
        return None
    if op["op"] in {"list", "node_list"} and step.mine["ok"] and step.ref["ok"]:
        shown = [n for n in step.mine_value if not n.startswith("metadata.json")]
        if shown == step.ref_value and step.mine_tree == step.ref_tree:
            return "same"
    return None


@dataclass(frozen=True)
class Difference:
    """An intended difference: its name (in test_differential.INTENDED_DIFFERENCES), the
    reason, and the check that recognises it in a `Step`."""

    name: str
    reason: str
    check: Callable[[Step], Verdict] = field(repr=False)


INTENDED_DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "strict_names",
        "names metatree refuses (empty, '..', reserved, '<' or '>' inside, glob characters, "
        "':', controls, bidi overrides, a BOM, outer spaces) raise PathError before any I/O; "
        "metatreedb may accept them, so the trees part there.",
        _strict_names,
    ),
    Difference(
        "leading_slash_refused",
        "a location starting with '/' is a PathError; metatreedb strips the '/'.",
        _leading_slash,
    ),
    Difference(
        "dict_levels_refused",
        "a dict location with an unknown level or skipping a level is a PathError; "
        "metatreedb ignores the unknown one and creates the skipped-to level under the root.",
        _dict_levels,
    ),
    Difference(
        "empty_location_is_root",
        "'' is the root; metatreedb raises in find and lists '' as a child of the root in put.",
        _empty_location,
    ),
    Difference(
        "failed_put_writes_nothing",
        "a failed put writes nothing; metatreedb creates the nodes on the way (and adds a file "
        "used as a node name to the index) before it fails.",
        _failed_put,
    ),
    Difference(
        "force_replaces",
        "put(force=True) replaces the stored file; metatreedb ignores force and raises.",
        _force,
    ),
    Difference(
        "metadata_json_files_visible",
        "files named metadata.json* (other than metadata.json) are listed and read; "
        "metatreedb hides them from list() and get() returns None.",
        _metadata_json_files,
    ),
)
"""The differences the fuzzer accepts, tried in order on an op where the two sides differ.

Built into the comparison itself (always on): metadata values as ``str``, children as sets,
``list()`` without system entries and sorted, a 0-byte root metadata.json read as ``{}``
(put's value is compared as it is: True on both sides), typed errors where metatreedb raises anything, and an error
where metatreedb's ``get`` returns None (see `Step.outcome_agrees`).
"""


# -- comparing --------------------------------------------------------------------------------
@dataclass
class Verdicts:
    """What comparing one run found."""

    problems: list[str] = field(default_factory=list)
    stopped: tuple[int, str] | None = None
    """The op where an intended difference made the trees part, and its name."""
    applied: list[str] = field(default_factory=list)


def compare_program(run: Run) -> Verdicts:
    """Compare a run op by op; stop at the first divergence or tree-parting difference."""
    found = Verdicts()
    keys = tuple(run.program["keys"])
    mine_before, ref_before = run.before_ours, run.before_theirs
    for index, (op, mine, ref) in enumerate(
        zip(run.program["ops"], run.ours, run.theirs, strict=True)
    ):
        step = Step(
            index,
            op,
            keys,
            mine,
            ref,
            norm_value(op["op"], mine["value"], run.root_ours),
            norm_value(op["op"], ref["value"], run.root_theirs),
            norm_cursor(mine["cursor"], run.root_ours),
            norm_cursor(ref["cursor"], run.root_theirs),
            norm_tree(mine["tree"]),
            norm_tree(ref["tree"]),
            mine_before,
            ref_before,
        )
        mine_before, ref_before = step.mine_tree, step.ref_tree
        if not mine["ok"] and step.mine_tree != step.mine_before:
            found.problems.append(f"op {index} {op}: failed ({mine['error']}) but wrote")
            return found
        if step.agrees():
            continue
        verdict = next(
            ((d.name, v) for d in INTENDED_DIFFERENCES if (v := d.check(step)) is not None),
            None,
        )
        if verdict is None:
            found.problems.append(describe(step))
            return found
        found.applied.append(verdict[0])
        if verdict[1] == "stop":
            found.stopped = (index, verdict[0])
            return found
    return found


def describe(step: Step) -> str:
    """A divergence, readable."""
    lines = [f"op {step.index} {step.op}:"]
    if not step.outcome_agrees():
        lines.append(
            f"  outcome: ours {step.mine['error'] or 'ok'} {step.mine_value!r}, "
            f"metatreedb {step.ref['error'] or 'ok'} {step.ref_value!r}"
        )
    if step.mine_cursor != step.ref_cursor:
        lines.append(f"  cursor: ours {step.mine_cursor}, metatreedb {step.ref_cursor}")
    if step.mine_tree != step.ref_tree:
        only_mine = {k: v for k, v in step.mine_tree.items() if step.ref_tree.get(k, 0) != v}
        only_ref = {k: v for k, v in step.ref_tree.items() if step.mine_tree.get(k, 0) != v}
        lines.append(f"  tree: ours has {only_mine}, metatreedb has {only_ref}")
    return "\n".join(lines)
