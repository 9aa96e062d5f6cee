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
from metatree._archive import ArchiveReader, extract, scan_archive
from metatree.errors import ArchiveError, IntegrityError, NotFoundError, PathError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

Member = tuple[tarfile.TarInfo, bytes]
INFO = {"python": "3.11.7", "versions": {"metatree": "0.1"}}


def _archive_bytes(directory: Path, **scan: object) -> bytes:
    reader = ArchiveReader(scan_archive(str(directory), **scan), INFO)  # type: ignore[arg-type]
    return reader.read()


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _tree(root: Path) -> dict[str, bytes | str | None]:
    """Every path below `root` (files: content, links: target, dirs: None), for comparisons."""
    out: dict[str, bytes | str | None] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = None
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


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
def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _tar_gz(*members: Member) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


OK = _member("ok.txt", data=b"fine")  # a harmless member first: the refusal must undo it


def _bomb() -> bytes:
    return _tar_gz(OK, _member("zeros", data=bytes(8 * 2**20)))


HOSTILE: dict[str, Callable[[], bytes]] = {
    "absolute": lambda: _tar_gz(OK, _member("/tmp/escape", data=b"x")),
    "dotdot": lambda: _tar_gz(OK, _member("../escape", data=b"x")),
    "dotdot-inside": lambda: _tar_gz(OK, _member("a/../../escape", data=b"x")),
    "backslash": lambda: _tar_gz(OK, _member("..\\escape", data=b"x")),
    # a NUL ends a ustar name field: only a PAX record can carry one
    "nul": lambda: _tar_gz(OK, _member("ab", data=b"x", pax_headers={"path": "a\x00b"})),
    "control": lambda: _tar_gz(OK, _member("a\nb", data=b"x")),
    "symlink-absolute": lambda: _tar_gz(OK, _member("l", tarfile.SYMTYPE, linkname="/etc")),
    "symlink-out": lambda: _tar_gz(OK, _member("d/l", tarfile.SYMTYPE, linkname="../../x")),
    # by names "a/b/d/../sentinel/s" is "a/b/sentinel/s"; through d (the root) it is outside
    "symlink-through-link": lambda: _tar_gz(
        OK,
        _member("a/b/l", tarfile.SYMTYPE, linkname="d/../sentinel/s"),
        _member("a/b/d", tarfile.SYMTYPE, linkname="../.."),
    ),
    "hardlink-out": lambda: _tar_gz(OK, _member("h", tarfile.LNKTYPE, linkname="../sentinel/s")),
    "hardlink-absolute": lambda: _tar_gz(OK, _member("h", tarfile.LNKTYPE, linkname="/etc/hosts")),
    "hardlink-forward": lambda: _tar_gz(
        OK, _member("h", tarfile.LNKTYPE, linkname="later"), _member("later", data=b"x")
    ),
    "chardev": lambda: _tar_gz(OK, _member("tty", tarfile.CHRTYPE, devmajor=5, devminor=0)),
    "blockdev": lambda: _tar_gz(OK, _member("sda", tarfile.BLKTYPE, devmajor=8, devminor=0)),
    "fifo": lambda: _tar_gz(OK, _member("pipe", tarfile.FIFOTYPE)),
    "long-segment": lambda: _tar_gz(OK, _member("x" * 256, data=b"x")),
    "long-path": lambda: _tar_gz(OK, _member("/".join(["d" * 200] * 21), data=b"x")),
    "empty-segment": lambda: _tar_gz(OK, _member("a//b", data=b"x")),
    "unknown-type": lambda: _tar_gz(OK, _member("odd", b"9")),
    "duplicate": lambda: _tar_gz(OK, _member("ok.txt", data=b"again")),
    "file-and-dir": lambda: _tar_gz(OK, _member("a", data=b"x"), _member("a/b", data=b"y")),
    "dir-after-file": lambda: _tar_gz(OK, _member("a/b", data=b"y"), _member("a", data=b"x")),
    "through-symlink": lambda: _tar_gz(
        OK, _member("a", tarfile.SYMTYPE, linkname="sub"), _member("a/x", data=b"x")
    ),
    "reserved": lambda: _tar_gz(OK, _member(".metatree.lock", data=b"x")),
    "reserved-dir": lambda: _tar_gz(OK, _member("d/.MetaTree-extract-1/x", data=b"x")),
    "truncated": lambda: _tar_gz(OK, _member("big", data=os.urandom(50_000)))[:-20_000],
    "truncated-gzip-trailer": lambda: _tar_gz(OK)[:-4],
    "not-gzip": lambda: b"this is not a gzip stream at all" * 100,
    "plain-tar": lambda: gzip.decompress(_tar_gz(OK)),
    "bomb": _bomb,
}


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


def test_bomb_within_the_limit_extracts(tmp_path: Path) -> None:
    names = extract(_chunks(_bomb()), str(tmp_path / "t"), max_bytes=16 * 2**20)
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
