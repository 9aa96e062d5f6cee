"""Every command in process through click's runner, on memory:// (one process only) and local.

The runner keeps stdout and stderr apart, so each check also proves that data went to stdout
and messages to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from metatree import Metatree
from metatree.cli.main import cli


@pytest.fixture(params=["memory", "local"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh root: memory:// (in process only), and local disk for the same checks."""
    if request.param == "local":
        return str(tmp_path / "db")
    return f"memory://cli-{uuid.uuid4().hex}/db"


def run(root: str, *args: str, code: int = 0, printed: bool = False) -> Result:
    result = CliRunner().invoke(cli, ["-r", root, *args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    if code and not printed:
        assert result.stdout == ""
        assert result.stderr.strip()
    return result


def data(root: str, *args: str) -> Any:
    return json.loads(run(root, *args, "--json").stdout)


@pytest.fixture
def tree(root: str, tmp_path: Path) -> Metatree:
    run(root, "init", "model", "version")
    (tmp_path / "w.bin").write_bytes(b"weights")
    run(root, "put", "m/v1", str(tmp_path / "w.bin"))
    run(root, "update", "m", "active=v1", "n=3", "tags=[1,2]")
    run(root, "update", "m/v1", "acc=0.9", "note=7", "--string")
    return Metatree(root)


def test_read_commands(root: str, tree: Metatree, tmp_path: Path) -> None:
    assert data(root, "ls") == {"location": tree.root, "children": ["m"], "files": []}
    assert run(root, "ls", "m/v1").stdout == "w.bin\n"
    assert data(root, "find", "m/<active>")["path"] == "m/v1"
    assert run(root, "find", "m/<active>").stdout.strip() == tree.url("m/v1")
    drawn = data(root, "tree", "--metadata")
    assert drawn["children"][0]["metadata"] == {"active": "v1", "n": 3, "tags": [1, 2]}
    assert drawn["children"][0]["children"][0]["metadata"] == {"acc": "0.9", "note": "7"}
    assert data(root, "tree", "--depth", "1")["children"][0]["children"] == []
    drawn_tree = run(root, "tree")
    assert drawn_tree.stdout.splitlines()[1:] == ["└── m", "    └── v1"]
    assert drawn_tree.stderr == ""  # no terminal: no node counter
    out = tmp_path / "out"
    out.mkdir()
    got = data(root, "get", "m/<active>/w.bin", str(out))
    assert got["path"] == str(out / "w.bin")
    assert (out / "w.bin").read_bytes() == b"weights"
    run(root, "update", "m/v1", "file=w.bin")
    (tmp_path / "by-template").mkdir()
    got = data(root, "get", "m/<active>/<file>", str(tmp_path / "by-template"))
    assert got["path"] == str(tmp_path / "by-template" / "w.bin")  # the stored name
    report = data(root, "verify")
    assert report["clean"] is True
    assert report["ok"] == ["m/v1/w.bin"]
    assert data(root, "lock", "status") == {"locked": False, "holder": None}
    assert data(root, "lock", "break") == {"removed": False}
    doctor = data(root, "doctor")
    backend = type(tree.storage.backend)
    assert doctor["backend"] == f"{backend.__module__}.{backend.__qualname__}"
    assert doctor["capabilities"] == dataclasses.asdict(tree.storage.capabilities)
    assert doctor["keys"] == ["model", "version"]


def test_search_and_export(root: str, tree: Metatree, tmp_path: Path) -> None:
    run(root, "update", "m", "n=5")
    assert data(root, "search", "-w", "n=ge:4")["paths"] == ["m"]
    assert data(root, "search", "-w", "n=lt:4")["paths"] == []
    run(root, "search", "-w", "acc=0.9", code=2)  # a number against a string column
    assert data(root, "search", "-w", 'acc="0.9"')["paths"] == ["m/v1"]
    searched = run(root, "search", "-w", "active=v1")
    assert (searched.stdout, searched.stderr) == ("m\n", "")  # no terminal: no counter
    assert data(root, "search", "--under", "m/*")["paths"] == ["m/v1"]
    # free expressions: a plain AND (the dict form) and an or (an Arrow expression)
    assert data(root, "search", "-w", "n >= 4 and active == 'v1'")["paths"] == ["m"]
    assert data(root, "search", "-w", "n > 9 or acc == '0.9'")["paths"] == ["m/v1"]
    assert data(root, "search", "-w", "not (n > 9) and n is not None")["paths"] == ["m"]
    assert "attribute access" in run(root, "search", "-w", "().__class__", code=2).stderr
    out = tmp_path / "catalog"
    assert data(root, "catalog", "export", str(out), "--partition-by", "model")["url"]
    assert any(out.rglob("*.parquet"))


def test_writes(root: str, tree: Metatree, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    run(root, "put", "m/v1", str(src), code=4)  # already there
    src.write_bytes(b"new")
    put = data(root, "put", "m/v1", str(src), "--force")
    assert put["url"] == tree.url("m/v1/w.bin")
    assert b"".join(tree.get("m/v1/w.bin")) == b"new"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    assert data(root, "put", "m/v2", str(tmp_path / "d"), "--archive")["name"] == "d.tar.gz"
    assert data(root, "put", "m/v3", str(tmp_path / "d"))["name"] == "d"
    assert tree.find("m/v3").list() == ["d"]
    run(root, "rm", "m/v2/d.tar.gz")
    assert tree.find("m/v2").list() == []
    run(root, "rm", "m", code=2)  # a node with content needs -r
    assert run(root, "-q", "rm", "m", "-r").stderr == ""
    assert tree.find("").children == []


def test_exit_codes(root: str, tree: Metatree, tmp_path: Path) -> None:
    run(root, "ls", "nope", code=3)
    run(root, "get", "m/v1/nope", str(tmp_path / "x"), code=3)
    run(root, "ls", "a/b/c", code=2)  # more levels than keys
    run(root, "update", "m", "children=[]", code=2)  # reserved key
    run(root, "update", "m", "novalue", code=2)
    run(root, "search", "-w", "n=is_null:x", code=2)
    run(root, "search", "-w", "n=starts_with:x", code=2)  # QueryError: a number column
    run(root, "tree", "--depth", "-1", code=2)
    run(root, "init", "a", code=4)  # a database is there
    run(f"memory://cli-{uuid.uuid4().hex}", "ls", code=2)  # no database: DatabaseError
    assert CliRunner().invoke(cli, ["ls"]).exit_code == 2  # no --root
    tree.storage.fs.pipe(f"{tree.storage.root}/m/metadata.json", b"{not json")
    run(root, "ls", "m", code=5)
    assert "CorruptMetadataError" in run(root, "tree", code=5).stderr


def test_verify_finds_damage(root: str, tree: Metatree) -> None:
    tree.storage.fs.pipe(f"{tree.storage.root}/m/v1/w.bin", b"changed")
    result = run(root, "verify", "--json", code=5, printed=True)  # the report, then exit 5
    assert json.loads(result.stdout)["mismatched"] == ["m/v1/w.bin"]
    assert "1 damaged" in result.stderr
    assert run(root, "verify", code=5, printed=True).stdout == "mismatched m/v1/w.bin\n"


def test_fsck_and_gc(root: str, tree: Metatree) -> None:
    assert data(root, "fsck")["clean"] is True
    tree.storage.fs.makedirs(f"{tree.storage.root}/m/stray", exist_ok=True)
    tree.storage.fs.pipe(f"{tree.storage.root}/m/stray/metadata.json", b"{}")  # an orphan node
    found = run(root, "fsck", "--json", code=5, printed=True)  # the report, then exit 5
    (finding,) = json.loads(found.stdout)["findings"]
    assert set(finding) == {"kind", "location", "detail", "fix"}
    assert finding["location"].endswith("m/stray")
    repaired = data(root, "fsck", "--repair")
    assert repaired["clean"] is True
    assert [f["kind"] for f in repaired["repaired"]] == [finding["kind"]]
    listed = data(root, "gc")  # a dry run: the quarantined orphan is listed, not removed
    assert listed["dry_run"] is True
    assert {item["kind"] for item in listed["items"]} == {"quarantine"}  # its files, manifest
    assert data(root, "gc", "--no-dry-run")["items"] == listed["items"]
    assert data(root, "gc")["items"] == []


def test_reindex(root: str, tree: Metatree, tmp_path: Path) -> None:
    run(root, "put", "m/v2", str(tmp_path / "w.bin"))
    assert data(root, "reindex", "m", "--format", "2") == {
        "location": "m",
        "format": 2,
        "children": 2,
    }
    assert ".metatree.index" in tree.storage.read_bytes("m/metadata.json").decode()
    assert run(root, "reindex", "m", "--format", "1").stdout == "2\n"
    assert json.loads(tree.storage.read_bytes("m/metadata.json"))["children"] == ["v1", "v2"]
    assert ".metatree.index" not in tree.storage.read_bytes("m/metadata.json").decode()
    run(root, "reindex", "m", "--format", "3", code=2)
    run(root, "reindex", "m/v1", "--format", "1", code=2)  # a leaf has no index
    run(root, "reindex", "nope", "--format", "1", code=3)


@pytest.mark.parametrize("name", [".lock", ".metatree.lock"])
def test_fsck_reports_then_moves_a_link_at_a_lock_name(tmp_path: Path, name: str) -> None:
    """A link planted at a lock name before the tree opens: reported (exit 5), then moved."""
    root = str(tmp_path / "db")
    run(root, "init", "model")
    (tmp_path / "key").write_bytes(b"private")
    lock = tmp_path / "db" / name
    lock.unlink(missing_ok=True)
    lock.symlink_to(tmp_path / "key")
    found = json.loads(run(root, "fsck", "--json", code=5, printed=True).stdout)["findings"]
    assert [(f["kind"], f["location"]) for f in found] == [("link", name)]
    assert [f["kind"] for f in data(root, "fsck", "--repair")["repaired"]] == ["link"]
    assert not lock.is_symlink()
    assert (tmp_path / "key").read_bytes() == b"private"


def test_models(root: str, tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"model")
    src = str(tmp_path / "m.bin")
    run(root, "models", "list", code=2)  # nothing at root: no store is made by reading
    record = data(root, "models", "upload", "fraud", src, "--id", "v1", "--meta", "acc=0.9")
    assert record["model"]["model_id"] == "v1"
    assert run(root, "models", "upload", "fraud", src, "--id", "v2").stdout == "v2\n"
    assert data(root, "models", "list") == {"domains": ["fraud"]}
    assert data(root, "models", "list", "fraud")["models"] == ["v2", "v1"]
    assert data(root, "models", "alias", "set", "fraud", "production", "v1")["model_id"] == "v1"
    run(root, "models", "promote", "fraud", "v1", "reviewed", code=3)  # no such state yet
    assert data(root, "models", "promote", "fraud", "v1", "reviewed", "--create")["in_state"]
    assert data(root, "models", "list", "fraud", "--state", "reviewed")["models"] == ["v1"]
    run(root, "models", "promote", "fraud", "v1", "reviewed", "--remove")
    assert data(root, "models", "list", "fraud", "--state", "reviewed")["models"] == []
    run(root, "models", "alias", "set", "fraud", "production", "v2", "--expected", "v2", code=4)
    changes = data(root, "models", "history", "fraud", "--alias", "production")["changes"]
    assert [(c["old"], c["new"]) for c in changes] == [(None, "v1")]
    out = tmp_path / "out"
    got = data(root, "models", "download", "fraud", "--alias", "production", "--to", str(out))
    assert got["model_id"] == "v1"
    assert Path(got["path"]).read_bytes() == b"model"
    run(root, "models", "download", "fraud", "v9", "--to", str(out), code=3)
    run(root, "models", "download", "fraud", "v1", "--alias", "production", code=2)


def test_a_held_lock(root: str, tree: Metatree) -> None:
    with tree.transaction():  # holds the DB lock until the block ends
        status = data(root, "lock", "status")
        assert status["locked"] is True
        assert status["holder"]["pid"] == os.getpid()
        failed = run(root, "-o", "lock_timeout=0.1", "update", "m", "x=1", code=4)
        assert "LockTimeout" in failed.stderr
    assert "x" not in tree.find("m").metadata


def test_attack_round_findings(
    root: str, tree: Metatree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stored names cannot forge output lines: control characters are shown escaped
    tree.storage.fs.pipe(f"{tree.storage.root}/m/v1/evil\nname\x1b[1m", b"x")
    assert run(root, "ls", "m/v1").stdout.splitlines() == ["evil\\x0aname\\x1b[1m", "w.bin"]
    # NaN and Infinity are not JSON: they stay text; spaces around a value keep it text
    run(root, "update", "m/v1", "a=NaN", "b=Infinity", "c= 1 ")
    assert {k: tree.find("m/v1").metadata[k] for k in "abc"} == {
        "a": "NaN",
        "b": "Infinity",
        "c": " 1 ",
    }
    # a download never lands inside the database (local disk)
    if not root.startswith("memory://"):
        run(root, "get", "m/v1/w.bin", f"{root}/m/x.bin", code=2)
    # an interrupt exits 130, a closed stdout 141: a script can tell both from a failure
    for raised, code in ((KeyboardInterrupt, 130), (BrokenPipeError, 141)):

        def failing(*args: object, error: type[BaseException] = raised) -> None:
            raise error

        monkeypatch.setattr("metatree.cli._nodes.emit", failing)
        result = run(root, "ls", code=code, printed=True)
        assert result.stdout == ""
        assert result.stderr.strip() == ("Interrupted." if code == 130 else "")


def test_doctor_describes_a_broken_tree(root: str, tree: Metatree) -> None:
    tree.storage.fs.pipe(f"{tree.storage.root}/.metatree", b"{bad")
    result = run(root, "doctor", "--json", code=5, printed=True)  # damage, not usage
    report = json.loads(result.stdout)
    assert report["versions"]["metatree"]
    assert "CorruptDatabaseError" in report["error"]
    assert "CorruptDatabaseError" in run(root, "ls", code=5).stderr
    assert "CorruptDatabaseError" in run(root, "init", "a", code=5).stderr
