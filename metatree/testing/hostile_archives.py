"""Hostile archives, built in memory: what a ``.tar.gz`` written by an attacker can hold.

Shared by the archive module's unit tests and the conformance suite (which stores each one on
the backend and extracts it through `Metatree.get`). Each builder returns the archive's bytes;
a harmless member comes first, so a refusal must also undo what was extracted before it.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["HOSTILE", "OK", "Member", "bomb", "local_tree", "member", "tar_gz"]

Member = tuple[tarfile.TarInfo, bytes]


def local_tree(root: Path) -> dict[str, bytes | str | None]:
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


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> Member:
    """Return a member named `name` of `kind` holding `data`, with any TarInfo `attrs`."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def tar_gz(*members: Member) -> bytes:
    """Return a ``.tar.gz`` of the members as given (tarfile writes what it is told)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


OK = member("ok.txt", data=b"fine")  # a harmless member first: the refusal must undo it


def bomb() -> bytes:
    """Return 8 MiB of zeros compressed to a few KiB (refused past `extract`'s max_bytes)."""
    return tar_gz(OK, member("zeros", data=bytes(8 * 2**20)))


HOSTILE: dict[str, Callable[[], bytes]] = {
    "absolute": lambda: tar_gz(OK, member("/tmp/escape", data=b"x")),
    "dotdot": lambda: tar_gz(OK, member("../escape", data=b"x")),
    "dotdot-inside": lambda: tar_gz(OK, member("a/../../escape", data=b"x")),
    "backslash": lambda: tar_gz(OK, member("..\\escape", data=b"x")),
    # a NUL ends a ustar name field: only a PAX record can carry one
    "nul": lambda: tar_gz(OK, member("ab", data=b"x", pax_headers={"path": "a\x00b"})),
    "control": lambda: tar_gz(OK, member("a\nb", data=b"x")),
    "symlink-absolute": lambda: tar_gz(OK, member("l", tarfile.SYMTYPE, linkname="/etc")),
    "symlink-out": lambda: tar_gz(OK, member("d/l", tarfile.SYMTYPE, linkname="../../x")),
    # by names "a/b/d/../sentinel/s" is "a/b/sentinel/s"; through d (the root) it is outside
    "symlink-through-link": lambda: tar_gz(
        OK,
        member("a/b/l", tarfile.SYMTYPE, linkname="d/../sentinel/s"),
        member("a/b/d", tarfile.SYMTYPE, linkname="../.."),
    ),
    "hardlink-out": lambda: tar_gz(OK, member("h", tarfile.LNKTYPE, linkname="../sentinel/s")),
    "hardlink-absolute": lambda: tar_gz(OK, member("h", tarfile.LNKTYPE, linkname="/etc/hosts")),
    "hardlink-forward": lambda: tar_gz(
        OK, member("h", tarfile.LNKTYPE, linkname="later"), member("later", data=b"x")
    ),
    "chardev": lambda: tar_gz(OK, member("tty", tarfile.CHRTYPE, devmajor=5, devminor=0)),
    "blockdev": lambda: tar_gz(OK, member("sda", tarfile.BLKTYPE, devmajor=8, devminor=0)),
    "fifo": lambda: tar_gz(OK, member("pipe", tarfile.FIFOTYPE)),
    "long-segment": lambda: tar_gz(OK, member("x" * 256, data=b"x")),
    "long-path": lambda: tar_gz(OK, member("/".join(["d" * 200] * 21), data=b"x")),
    # 1 500 levels under the 4 096-byte path limit: os.makedirs recursed into RecursionError
    "deep-path": lambda: tar_gz(OK, member("/".join(["d"] * 1500), data=b"x")),
    # 10 members implying 9 000 directories: implied directories count as members
    "implied-dirs": lambda: tar_gz(
        OK, *(member(f"{i}/" + "/".join(["d"] * 900) + "/f", data=b"x") for i in range(10))
    ),
    "empty-segment": lambda: tar_gz(OK, member("a//b", data=b"x")),
    "unknown-type": lambda: tar_gz(OK, member("odd", b"9")),
    "duplicate": lambda: tar_gz(OK, member("ok.txt", data=b"again")),
    "file-and-dir": lambda: tar_gz(OK, member("a", data=b"x"), member("a/b", data=b"y")),
    "dir-after-file": lambda: tar_gz(OK, member("a/b", data=b"y"), member("a", data=b"x")),
    "through-symlink": lambda: tar_gz(
        OK, member("a", tarfile.SYMTYPE, linkname="sub"), member("a/x", data=b"x")
    ),
    "reserved": lambda: tar_gz(OK, member(".metatree.lock", data=b"x")),
    "reserved-dir": lambda: tar_gz(OK, member("d/.MetaTree-extract-1/x", data=b"x")),
    "truncated": lambda: tar_gz(OK, member("big", data=os.urandom(50_000)))[:-20_000],
    "truncated-gzip-trailer": lambda: tar_gz(OK)[:-4],
    "not-gzip": lambda: b"this is not a gzip stream at all" * 100,
    "plain-tar": lambda: gzip.decompress(tar_gz(OK)),
    "bomb": bomb,
    # 177 bytes declaring 64 MiB of holes: tarfile would expand them past max_bytes
    "sparse": lambda: tar_gz(
        OK,
        member(
            "holes",
            data=b"x",
            pax_headers={"GNU.sparse.map": "67108863,1", "GNU.sparse.size": "67108864"},
        ),
    ),
    "mtime-nan": lambda: tar_gz(OK, member("t", data=b"x", pax_headers={"mtime": "nan"})),
    "mtime-huge": lambda: tar_gz(OK, member("t", data=b"x", pax_headers={"mtime": "1e300"})),
    "dir-mtime-huge": lambda: tar_gz(
        OK, member("d", tarfile.DIRTYPE, pax_headers={"mtime": "-1e19"})
    ),
}
