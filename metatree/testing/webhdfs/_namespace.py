"""HDFS namespace semantics (FSNamesystem) over a local directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from typing import Any

from metatree.testing.webhdfs._protocol import (
    FAE,
    FNF,
    IOE,
    RESERVED,
    RemoteError,
    child,
    parent,
    parts,
)


class Namespace:
    """HDFS namespace semantics over a local directory; callers hold ``lock`` around each op."""

    def __init__(self, root: str) -> None:
        self.root, self.staging = root, os.path.join(root, RESERVED)
        os.makedirs(self.staging, exist_ok=True)
        self.lock = threading.Lock()  # the FSNamesystem lock: makes check-then-act ops atomic
        self.owners: dict[int, str] = {}  # inode -> user who created it

    def local(self, hpath: str) -> str:
        return os.path.join(self.root, *parts(hpath))

    def stat(self, hpath: str) -> os.stat_result | None:
        """Stat ``hpath``, failing like Hadoop's checkTraverse when an ancestor is a file."""
        current = ""
        for part in parts(hpath)[:-1]:
            current += "/" + part
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISDIR(os.stat(self.local(current)).st_mode):
                    msg = f"{current} (is not a directory)"
                    raise RemoteError("ParentNotDirectoryException", msg)
        try:
            return os.stat(self.local(hpath))
        except FileNotFoundError:
            return None

    def file(self, hpath: str, missing: str) -> os.stat_result:
        st = self.stat(hpath)
        if st is None:
            raise RemoteError(FNF, missing)
        if stat.S_ISDIR(st.st_mode):
            raise RemoteError(FNF, f"Path is not a file: {hpath}")
        return st

    def children(self, hpath: str) -> list[str]:
        names = [n for n in os.listdir(self.local(hpath)) if hpath != "/" or n != RESERVED]
        return sorted(names, key=lambda n: n.encode())  # HDFS orders names by their bytes

    def status(self, hpath: str, st: os.stat_result, suffix: str) -> dict[str, Any]:
        is_dir = stat.S_ISDIR(st.st_mode)
        return {
            "accessTime": 0 if is_dir else st.st_atime_ns // 1_000_000,
            "blockSize": 0 if is_dir else 134217728,
            "childrenNum": len(self.children(hpath)) if is_dir else 0,
            "fileId": st.st_ino,
            "group": "supergroup",
            "length": 0 if is_dir else st.st_size,
            "modificationTime": st.st_mtime_ns // 1_000_000,
            "owner": self.owners.get(st.st_ino, "hdfs"),
            "pathSuffix": suffix,
            "permission": "755" if is_dir else "644",
            "replication": 0 if is_dir else 3,
            "storagePolicy": 0,
            "type": "DIRECTORY" if is_dir else "FILE",
        }

    def mkdirs(self, hpath: str, user: str) -> None:
        current = ""
        for part in parts(hpath):
            current += "/" + part
            try:
                os.mkdir(self.local(current))
            except FileExistsError:
                if not os.path.isdir(self.local(current)):
                    raise RemoteError(FAE, f"Path is not a directory: {hpath}") from None
            else:
                self.owners[os.stat(self.local(current)).st_ino] = user

    def create(
        self, hpath: str, staged: str, *, overwrite: bool, create_parent: bool, user: str, ip: str
    ) -> None:
        """Check-and-create: move the staged upload to ``hpath`` as HDFS's create() allows."""
        st = self.stat(hpath)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise RemoteError(FAE, f"{hpath} already exists as a directory")
        if st is not None and not overwrite:
            raise RemoteError(FAE, f"{hpath} for client {ip} already exists")
        if create_parent:
            self.mkdirs(parent(hpath), user)
        elif self.stat(parent(hpath)) is None:
            raise RemoteError(FNF, f"Parent directory doesn't exist: {parent(hpath)}")
        os.replace(staged, self.local(hpath))
        self.owners[os.stat(self.local(hpath)).st_ino] = user

    def delete(self, hpath: str, st: os.stat_result | None, recursive: bool | None) -> bool:
        """Apply ClientProtocol.delete to ``hpath``, whose stat the caller already took."""
        if st is None:
            return False
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(self.local(hpath))
            return True
        if not recursive and self.children(hpath):
            raise RemoteError("PathIsNotEmptyDirectoryException", f"{hpath} is non empty")
        if hpath == "/":
            return False  # FSDirDeleteOp refuses to delete the root
        shutil.rmtree(self.local(hpath))
        return True

    def rename(self, src: str, dst: str) -> bool:
        """Apply ClientProtocol.rename: failures are False; an existing dir receives ``src``."""
        dst_st = self.stat(dst)
        if dst_st is not None and stat.S_ISDIR(dst_st.st_mode) and src != "/":
            dst = child(dst, parts(src)[-1])
        if src == "/" or self.stat(src) is None:
            return False
        if dst == src:
            return True
        if dst.startswith(src + "/") or os.path.lexists(self.local(dst)):
            return False
        if self.stat(parent(dst)) is None:
            return False
        os.rename(self.local(src), self.local(dst))
        return True

    def rename2(self, src: str, dst: str, overwrite: bool) -> None:
        """Apply ClientProtocol.rename2, raising Hadoop's exceptions in Hadoop's order."""
        src_st = self.stat(src)
        if src_st is None:
            raise RemoteError(FNF, f"rename source {src} is not found.")
        if src == "/":
            raise RemoteError(IOE, "rename source cannot be the root")
        if dst == src:
            raise RemoteError(FAE, f"The source {src} and destination {dst} are the same")
        if dst.startswith(src + "/"):
            msg = f"Rename destination {dst} is a directory or file under source {src}"
            raise RemoteError(IOE, msg)
        if dst == "/":
            raise RemoteError(IOE, "rename destination cannot be the root")
        dst_st = self.stat(dst)
        if dst_st is not None:
            if stat.S_ISDIR(dst_st.st_mode) != stat.S_ISDIR(src_st.st_mode):
                msg = f"Source {src} Destination {dst} both should be either file or directory"
                raise RemoteError(IOE, msg)
            if not overwrite:
                raise RemoteError(FAE, f"rename destination {dst} already exists")
            if stat.S_ISDIR(dst_st.st_mode) and self.children(dst):
                raise RemoteError(IOE, f"rename destination directory is not empty: {dst}")
        if self.stat(parent(dst)) is None:
            raise RemoteError(FNF, f"rename destination parent {dst} not found.")
        os.replace(self.local(src), self.local(dst))
