"""Archives: deterministic streamed ``.tar.gz`` of a directory, and safe extraction of hostile ones."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from metatree import _archive
from metatree._archive import ArchiveReader, scan_archive
from metatree._extract import extract
from metatree.errors import ArchiveError, IntegrityError, NotFoundError, PathError, StorageError
from metatree.testing.hostile_archives import HOSTILE, OK, Member, bomb
from metatree.testing.hostile_archives import local_tree as _tree
from metatree.testing.hostile_archives import member as _member
from metatree.testing.hostile_archives import tar_gz as _tar_gz

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INFO = {"python": "3.11.7", "versions": {"metatree": "0.1"}}


def _archive_bytes(directory: Path, **scan: object) -> bytes:
    reader = ArchiveReader(scan_archive(str(directory), **scan), INFO)  # type: ignore[arg-type]
    return reader.read()


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _make_source(root: Path) -> Path:
    src = root / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "sub" / "naïve ü 模型.bin").write_bytes(b"unicode")
    (src / "sub" / "deep" / "r.bin").write_bytes(os.urandom(70_000))
    (src / "run.sh").write_bytes(b"#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / ("long" * 40)).write_bytes(b"a PAX name")  # 160 characters: over ustar's 100
    return src


# -- the format --------------------------------------------------------------------------
def test_same_directory_gives_the_same_bytes(tmp_path: Path) -> None:
    src = _make_source(tmp_path)
    first, second = _archive_bytes(src), _archive_bytes(src)
    assert first == second
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)  # copy2 keeps mtimes and modes: same content, other inodes
    assert _archive_bytes(copy) == first
    assert first[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # mtime 0, OS 255


def test_headers_are_normalized(tmp_path: Path) -> None:
    src = _make_source(tmp_path)
    os.utime(src / "a.txt", (1_600_000_000.7, 1_600_000_000.7))
    data = _archive_bytes(src)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members)
        by_name = {m.name: m for m in members}
        assert by_name["a.txt"].mtime == 1_600_000_000
        assert by_name["run.sh"].mode == 0o755
        assert by_name["empty"].isdir()
        assert "long" * 40 in by_name
        info = tar.extractfile("python-info.json")
        assert info is not None
        assert json.loads(info.read()) == INFO
    assert len(gzip.decompress(data)) % tarfile.RECORDSIZE == 0


def test_users_python_info_is_kept(tmp_path: Path) -> None:
    src = _make_source(tmp_path)
    (src / "python-info.json").write_text('{"mine": true}')
    with tarfile.open(fileobj=io.BytesIO(_archive_bytes(src)), mode="r:gz") as tar:
        assert [m.name for m in tar.getmembers()].count("python-info.json") == 1
        info = tar.extractfile("python-info.json")
        assert info is not None
        assert info.read() == b'{"mine": true}'


def test_reader_is_a_streaming_file(tmp_path: Path) -> None:
    src = _make_source(tmp_path)
    whole = _archive_bytes(src)
    reader = ArchiveReader(scan_archive(str(src)), INFO)
    assert reader.readable()
    assert reader.size is None
    assert reader.read(0) == b""
    buf = bytearray(777)
    parts = []
    while n := reader.readinto(buf):
        parts.append(bytes(buf[:n]))
    assert b"".join(parts) == whole
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


@pytest.mark.parametrize(("change", "data"), [("grow", b"more"), ("shrink", b"")])
def test_a_file_changing_size_is_refused(tmp_path: Path, change: str, data: bytes) -> None:
    src = _make_source(tmp_path)
    entries = scan_archive(str(src))
    victim = src / "sub" / "deep" / "r.bin"
    if change == "grow":
        with open(victim, "ab") as f:
            f.write(data)
    else:
        victim.write_bytes(b"short")
    with pytest.raises(StorageError, match=r"r\.bin.*changed size"):
        ArchiveReader(entries, INFO).read()


def test_a_file_vanishing_is_refused(tmp_path: Path) -> None:
    src = _make_source(tmp_path)
    entries = scan_archive(str(src))
    (src / "a.txt").unlink()
    with pytest.raises(StorageError, match=r"a\.txt"):
        ArchiveReader(entries, INFO).read()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"level": 10}, "level"),
        ({"level": True}, "level"),
        ({"python_info": {"x": {1, 2}}}, "JSON"),
    ],
)
def test_reader_bad_input(tmp_path: Path, kwargs: dict[str, object], expected: str) -> None:
    entries = scan_archive(str(_make_source(tmp_path)))
    info = kwargs.pop("python_info", INFO)
    with pytest.raises(PathError, match=expected):
        ArchiveReader(entries, info, **kwargs)  # type: ignore[arg-type]


# -- round trip ----------------------------------------------------------------------------
def test_round_trip(tmp_path: Path) -> None:
    src = _make_source(tmp_path)
    (src / "sub" / "link").symlink_to("../a.txt")  # followed: stored as the file it names
    out = tmp_path / "out"
    names = extract(_chunks(_archive_bytes(src)), str(out))
    assert {"empty", "python-info.json", "sub/deep/r.bin"} <= set(names)
    got = _tree(out)
    assert json.loads(got.pop("python-info.json") or b"") == INFO
    expected = _tree(src)
    expected["sub/link"] = b"alpha\n"
    assert got == expected
    assert (out / "run.sh").stat().st_mode & 0o777 == 0o755
    assert int((out / "a.txt").stat().st_mtime) == int((src / "a.txt").stat().st_mtime)


def test_large_file_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(src / "model.bin", "wb") as f:
        f.writelines(block for _ in range(100))
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        reader = ArchiveReader(scan_archive(str(src)), INFO, level=1)
        extract(iter(lambda: reader.read(2**20), b""), str(out))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20
    assert (out / "model.bin").stat().st_size == 100 * 2**20
    with open(out / "model.bin", "rb") as f:
        assert f.read(2**20) == block


# -- include, exclude, hidden -----------------------------------------------------------
EVERYTHING = {"a.py", "b.txt", "sub", "sub/c.py", "sub/d.txt", "logs", "logs/x.log", "data"}
EVERYTHING |= {"data/raw", "data/raw/e.csv", "emptydir"}  # not hidden ones


@pytest.fixture
def filtered(tmp_path: Path) -> Path:
    src = tmp_path / "f"
    for rel in [
        "a.py",
        "b.txt",
        "sub/c.py",
        "sub/d.txt",
        "logs/x.log",
        ".git/config",
        "sub/.env",
        "data/raw/e.csv",
    ]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    (src / "emptydir").mkdir()
    return src


@pytest.mark.parametrize(
    ("scan", "expected"),
    [
        ({}, EVERYTHING),
        ({"include": ["*.py"]}, {"a.py", "sub", "sub/c.py"}),
        ({"include": ["sub/*.py"]}, {"sub", "sub/c.py"}),
        ({"include": ["data"]}, {"data", "data/raw", "data/raw/e.csv"}),
        ({"exclude": ["logs", "*.txt", "data", "emptydir"]}, {"a.py", "sub", "sub/c.py"}),
        ({"include": ["*.py", "*.txt"], "exclude": ["sub"]}, {"a.py", "b.txt"}),
        ({"include": ["*.py"], "exclude": ["a.py"]}, {"sub", "sub/c.py"}),
        ({"include": ["*.py", ".env"], "hidden": True}, {"a.py", "sub", "sub/c.py", "sub/.env"}),
        ({"include": ["*config*"], "hidden": True}, {".git", ".git/config"}),
        ({"include": ("emptydir",)}, {"emptydir"}),
    ],
)
def test_filters(filtered: Path, scan: dict[str, object], expected: set[str]) -> None:
    entries = scan_archive(str(filtered), **scan)  # type: ignore[arg-type]
    assert [e.name for e in entries] == sorted(expected)
    assert {e.name for e in entries if e.is_dir} == {n for n in expected if (filtered / n).is_dir()}


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scan", "expected"),
    [
        ({"include": "*.py"}, "include must be a list"),
        ({"exclude": "logs"}, "exclude must be a list"),
        ({"include": [""]}, "include must be"),
        ({"include": [1]}, "include must be"),
        ({"hidden": "yes"}, "hidden must be a bool"),
        ({"include": ["*.nothing"]}, "nothing to archive"),
        ({"exclude": ["*"]}, "nothing to archive"),
    ],
)
def test_scan_bad_parameters(filtered: Path, scan: dict[str, object], expected: str) -> None:
    with pytest.raises(PathError, match=expected):
        scan_archive(str(filtered), **scan)  # type: ignore[arg-type]


def test_scan_bad_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotFoundError):
        scan_archive(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PathError, match="only a directory"):
        scan_archive(str(tmp_path / "file"))
    with pytest.raises(PathError, match="local path"):
        scan_archive(b"/tmp")  # type: ignore[arg-type]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PathError, match="nothing to archive"):
        scan_archive(str(empty))

    def tree(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "ok.txt").write_text("ok")
        return path

    fifo = tree("fifo")
    os.mkfifo(fifo / "pipe")
    with pytest.raises(PathError, match="fifo"):
        scan_archive(str(fifo))
    assert [e.name for e in scan_archive(str(fifo), exclude=["pipe"])] == ["ok.txt"]
    loop = tree("loop")
    (loop / "sub").mkdir()
    (loop / "sub" / "up").symlink_to("..")
    with pytest.raises(PathError, match="loops"):
        scan_archive(str(loop))
    broken = tree("broken")
    (broken / "dangling").symlink_to("nowhere")
    with pytest.raises(PathError, match="broken symbolic link"):
        scan_archive(str(broken))
    assert [e.name for e in scan_archive(str(broken), include=["*.txt"])] == ["ok.txt"]
    control = tree("control")
    (control / "bad\nname").write_text("x")
    with pytest.raises(PathError, match="control"):
        scan_archive(str(control))
    latin1 = tree("latin1")
    with open(os.path.join(os.fsencode(latin1), b"caf\xe9"), "wb") as f:  # not UTF-8
        f.write(b"x")
    with pytest.raises(PathError, match="UTF-8"):
        scan_archive(str(latin1))
    reserved = tree("reserved")
    (reserved / ".metatree-x").write_text("x")
    assert [e.name for e in scan_archive(str(reserved))] == ["ok.txt"]  # hidden: skipped
    with pytest.raises(PathError, match="reserved"):
        scan_archive(str(reserved), hidden=True)
    unreadable = tree("unreadable")
    real_open = open

    def deny(path: str, *args: object, **kwargs: object) -> object:
        if str(path).endswith("ok.txt"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(_archive, "open", deny, raising=False)
    with pytest.raises(PathError, match="Permission denied"):
        scan_archive(str(unreadable))


def test_extract_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        extract(iter([b""]), str(tmp_path / "no" / "such"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PathError, match="not a directory"):
        extract(iter([b""]), str(tmp_path / "file"))
    with pytest.raises(PathError, match="max_bytes"):
        extract(iter([b""]), str(tmp_path / "t"), max_bytes=0)
    assert sorted(os.listdir(tmp_path)) == ["file"]


# -- hostile archives ------------------------------------------------------------------------
@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """A target holding one file, and a sentinel directory beside it."""
    target, sentinel = tmp_path / "target", tmp_path / "sentinel"
    target.mkdir()
    (target / "existing.txt").write_text("mine")
    sentinel.mkdir()
    (sentinel / "s").write_text("sentinel")
    return target, sentinel


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_is_refused(tmp_path: Path, places: tuple[Path, Path], kind: str) -> None:
    target, _ = places
    data = HOSTILE[kind]()
    before = _tree(tmp_path)
    with pytest.raises(ArchiveError):
        extract(_chunks(data, 4096), str(target), max_bytes=2**20)
    assert _tree(tmp_path) == before  # nothing new in the target, the sentinel untouched
    assert not (tmp_path.parent / "escape").exists()


def test_hostile_archive_into_a_new_target_leaves_no_target(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError):
        extract(_chunks(HOSTILE["dotdot"]()), str(tmp_path / "new"))
    assert os.listdir(tmp_path) == []


def test_too_many_members_is_refused(tmp_path: Path) -> None:
    data = _tar_gz(OK, _member("b", data=b"x"), _member("c", data=b"y"))
    with pytest.raises(ArchiveError, match="max_members=2"):
        extract(_chunks(data), str(tmp_path / "t"), max_members=2)
    assert os.listdir(tmp_path) == []
    assert extract(_chunks(data), str(tmp_path / "t"), max_members=3) == ["b", "c", "ok.txt"]


def test_bomb_within_the_limit_extracts(tmp_path: Path) -> None:
    names = extract(_chunks(bomb()), str(tmp_path / "t"), max_bytes=16 * 2**20)
    assert names == ["ok.txt", "zeros"]


def test_safe_links_and_dot_names_extract(tmp_path: Path) -> None:
    data = _tar_gz(
        _member("./", tarfile.DIRTYPE),
        _member("./lib/libx.so.1", data=b"elf"),
        _member("lib/libx.so", tarfile.SYMTYPE, linkname="libx.so.1"),
        _member("bin/tool", tarfile.SYMTYPE, linkname="../lib/./libx.so"),
        _member("hard", tarfile.LNKTYPE, linkname="lib/libx.so.1"),
        _member("suid", data=b"x", mode=0o4755),
        _member("lib", tarfile.DIRTYPE, mode=0o700),
    )
    target = tmp_path / "t"
    assert extract(_chunks(data), str(target)) == [
        "bin/tool",
        "hard",
        "lib",
        "lib/libx.so",
        "lib/libx.so.1",
        "suid",
    ]
    assert (target / "bin" / "tool").read_bytes() == b"elf"
    assert os.readlink(target / "bin" / "tool") == "../lib/./libx.so"
    assert (target / "hard").stat().st_ino == (target / "lib" / "libx.so.1").stat().st_ino
    assert (target / "suid").stat().st_mode & 0o7777 == 0o755  # setuid dropped, rest kept


# -- the iterator, conflicts -------------------------------------------------------------------
def _then_fail(data: bytes) -> Iterator[bytes]:
    yield from _chunks(data)
    raise IntegrityError("db/archive.tar.gz", "a" * 64, "b" * 64)


def test_integrity_error_at_the_end_leaves_target_unchanged(
    tmp_path: Path, places: tuple[Path, Path]
) -> None:
    target, _ = places
    before = _tree(tmp_path)
    with pytest.raises(IntegrityError):
        extract(_then_fail(_archive_bytes(_make_source(tmp_path / "s"))), str(target))
    shutil.rmtree(tmp_path / "s")
    assert _tree(tmp_path) == before


def test_integrity_error_wins_over_a_broken_archive(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError):
        extract(_then_fail(HOSTILE["truncated"]()), str(tmp_path / "t"))
    assert os.listdir(tmp_path) == []


def test_iterator_is_consumed_to_its_end(tmp_path: Path) -> None:
    seen: list[int] = []

    def counted() -> Iterator[bytes]:
        for i, chunk in enumerate(_chunks(_tar_gz(OK), 10)):
            seen.append(i)
            yield chunk

    extract(counted(), str(tmp_path / "t"))
    assert len(seen) == len(list(_chunks(_tar_gz(OK), 10)))


def test_conflict_moves_nothing_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "t"
    (target / "d").mkdir(parents=True)
    (target / "a.txt").write_text("old")
    (target / "d" / "keep").write_text("keep")
    data = _tar_gz(
        _member("a.txt", data=b"new"), _member("b.txt", data=b"b"), _member("d/c", data=b"c")
    )
    before = _tree(tmp_path)
    with pytest.raises(ArchiveError, match=r"a\.txt"):
        extract(_chunks(data), str(target))
    assert _tree(tmp_path) == before
    extract(_chunks(data), str(target), overwrite=True)
    assert _tree(target) == {
        "a.txt": b"new",
        "b.txt": b"b",
        "d": None,
        "d/keep": b"keep",
        "d/c": b"c",
    }


@pytest.mark.parametrize(
    ("existing", "member"),
    [("dir", _member("x", data=b"file")), ("file", _member("x/y", data=b"file"))],
)
def test_overwrite_never_swaps_files_and_directories(
    tmp_path: Path, existing: str, member: Member
) -> None:
    target = tmp_path / "t"
    target.mkdir()
    if existing == "dir":
        (target / "x").mkdir()
        (target / "x" / "inside").write_text("keep")
    else:
        (target / "x").write_text("keep")
    before = _tree(tmp_path)
    with pytest.raises(ArchiveError, match="exist already"):
        extract(_chunks(_tar_gz(member)), str(target), overwrite=True)
    assert _tree(tmp_path) == before


def test_existing_link_to_a_directory_is_not_merged_into(tmp_path: Path) -> None:
    target, outside = tmp_path / "t", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "d").symlink_to(outside)
    with pytest.raises(ArchiveError, match="exist already"):
        extract(_chunks(_tar_gz(_member("d/x", data=b"x"))), str(target), overwrite=True)
    assert os.listdir(outside) == []


def test_archive_sha256_is_stable(tmp_path: Path) -> None:
    src = _make_source(tmp_path)
    digests = {hashlib.sha256(_archive_bytes(src)).hexdigest() for _ in range(3)}
    assert len(digests) == 1
