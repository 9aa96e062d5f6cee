"""Portability: nothing POSIX-only at import, and the local lock's file (issue 10).

Windows cannot be run here. The closest we get is a child interpreter in which what Windows
lacks is taken away before metatree is imported: the POSIX-only modules (``fcntl``, ``pwd``,
``grp``, ``resource``, ``termios``, and ``ctypes``, optional in CPython) cannot be imported
*by metatree's own modules*, and ``os.register_at_fork``, ``os.fork``, ``os.getuid``, the
``O_NOFOLLOW``/``O_NONBLOCK``/``O_DIRECTORY``/``O_CLOEXEC`` flags, the Linux-only
``os.copy_file_range`` and ``os.preadv``, and signals such as ``SIGKILL`` are deleted.
filelock itself may still use ``fcntl``: on Windows it uses ``msvcrt``/``LockFileEx``
instead, and that choice is its business, not ours. Every module of the package is imported
there, and a local and a memory tree are used (puts of bytes, files and directories).

The local lock is the OS file lock on ``.metatree.lock``; the tests below check what the lock
file adds over the root directory it replaces: it exists only while held, a lock taken on an
inode the name no longer names is retried, and a holder whose lock file was removed or
replaced commits nothing.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from filelock import lock_descriptor

from metatree import LockLostError, Metatree, StorageError
from metatree._names import OS_LOCK_FILE
from metatree.backends import local
from metatree.backends.local import LocalLock
from metatree.testing._helpers import snapshot

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("model", "version")

WITHOUT_POSIX = textwrap.dedent(
    """
    import builtins, os, signal

    BLOCKED = {"fcntl", "pwd", "grp", "resource", "termios", "ctypes", "posix"}
    OURS = {"metatree", "metatreedb"}
    real_import = builtins.__import__

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        importer = ((globals or {}).get("__name__") or "").partition(".")[0]
        if level == 0 and importer in OURS and name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is POSIX-only")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded
    for name in (
        "register_at_fork", "fork", "forkpty", "getuid", "geteuid", "getgid", "getpgid",
        "killpg", "O_NOFOLLOW", "O_NONBLOCK", "O_DIRECTORY", "O_CLOEXEC", "fchmod", "uname",
        "copy_file_range", "preadv", "pwritev", "sendfile", "posix_fadvise",
    ):
        if hasattr(os, name):
            delattr(os, name)
    for name in ("SIGKILL", "SIGSTOP", "SIGCONT", "SIGALRM", "SIGHUP", "SIGXFSZ", "SIGCHLD"):
        if hasattr(signal, name):
            delattr(signal, name)
    """
)

USE_EVERYTHING = textwrap.dedent(
    """
    import importlib, os, pkgutil, sys
    import metatree, metatreedb

    for module in pkgutil.walk_packages(metatree.__path__, "metatree."):
        importlib.import_module(module.name)

    from metatree import Metatree

    os.makedirs("ckpt")
    with open("ckpt/a.txt", "wb") as out:
        out.write(b"a")
    for n, root in enumerate((sys.argv[1], "memory://portable")):
        tree = Metatree(root, ["model", "version"])
        tree.put("m/v1", b"weights", name="w.bin")
        tree.put("m/v1", "ckpt", recursive=True)
        tree.put("m/v1", "ckpt", force=True, recursive=True)  # replaces a directory
        with tree.transaction():
            tree.put("m/v2", b"more", name="w.bin")
            tree.find("m/v1").update(score=1)
        assert b"".join(tree.get("m/v1/w.bin")) == b"weights", root
        assert b"".join(tree.get("m/v1/w.bin", f"copy{n}.bin")) == b"weights", root
        tree.get("m/v1/ckpt", f"ckpt{n}", recursive=True)
        with open(f"ckpt{n}/a.txt", "rb") as copied:
            assert copied.read() == b"a", root
        assert tree.find("m/v1").metadata == {"score": 1}, root
        assert tree.find("m").list() == ["v1", "v2"], root
        assert tree.lock_status() is None, root
        tree.remove("m/v2", recursive=True)
        print("ok", root)
    """
)


def _without_posix(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", WITHOUT_POSIX + code, str(tmp_path / "db")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_imports_and_works_without_posix_only_modules(tmp_path: Path) -> None:
    done = _without_posix(tmp_path, USE_EVERYTHING)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [f"ok {tmp_path / 'db'}", "ok memory://portable"]


def test_the_simulation_catches_a_posix_only_import(tmp_path: Path) -> None:
    # the guard is real: an import of fcntl from metatree's code fails under it
    planted = "import metatree._paths as p\nexec('import fcntl', vars(p))"
    done = _without_posix(tmp_path, planted)
    assert done.returncode != 0
    assert "fcntl is POSIX-only" in done.stderr


# -- the lock file ------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Metatree:
    tree = Metatree(str(tmp_path / "db"), KEYS, lock_timeout=2)
    tree.put("m/v1", b"x", name="f")
    return tree


def _lock(tree: Metatree) -> LocalLock:
    lock = tree._db.lock
    assert isinstance(lock, LocalLock)
    return lock


def test_lock_file_exists_only_while_held(tree: Metatree, tmp_path: Path) -> None:
    lock_file = tmp_path / "db" / OS_LOCK_FILE
    assert not lock_file.exists()
    with tree.transaction():
        assert lock_file.is_file()
        assert tree.find("m").list() == ["v1"]  # a reserved name: never listed
    assert not lock_file.exists()


@pytest.mark.parametrize("how", ["replaced", "removed"])
def test_holder_whose_lock_file_went_commits_nothing(
    tree: Metatree, tmp_path: Path, how: str
) -> None:
    lock_file = tmp_path / "db" / OS_LOCK_FILE
    with pytest.raises(LockLostError, match="removed or replaced"), tree.transaction():  # noqa: PT012
        tree.find("m/v1").update(first=True)
        if how == "replaced":  # rsync or an editor: a new inode under the same name
            (tmp_path / "new").write_bytes(b"")
            os.replace(tmp_path / "new", lock_file)
        else:
            lock_file.unlink()
        # the new name excludes nobody: another writer gets in (which is why we must fail)
        other = Metatree(str(tmp_path / "db"), lock_timeout=2)
        _lock(other).acquire()
        other.find("m/v1").update(second=True)
    # letting go did not touch what is now the other writer's: its lock file and lease body
    assert other.lock_status() is not None
    assert (tmp_path / "db" / OS_LOCK_FILE).exists()
    _lock(other).release()
    assert tree.find("m/v1").metadata == {"second": True}


def test_lock_on_an_unlinked_inode_is_retried(
    tree: Metatree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, waiter = _lock(tree), _lock(Metatree(str(tmp_path / "db"), lock_timeout=2))
    holder.acquire()
    calls: list[bool] = []

    def release_first(fd: int, **kwargs: Any) -> bool:
        if not calls:  # the holder lets go between the waiter's open and its lock
            holder.release()
        calls.append(lock_descriptor(fd, **kwargs))
        return calls[-1]

    monkeypatch.setattr(local, "lock_descriptor", release_first)
    waiter.acquire()
    try:
        # the first lock was won, on the unlinked inode: not held, so a second attempt
        assert calls == [True, True]
        assert waiter._fd is not None
        assert waiter._still_named(waiter._fd)
    finally:
        waiter.release()


@pytest.mark.parametrize("planted", ["directory", "link", "fifo"])
def test_planted_lock_file_is_a_storage_error(tree: Metatree, tmp_path: Path, planted: str) -> None:
    lock_file = tmp_path / "db" / OS_LOCK_FILE
    before = snapshot(tree.storage)
    if planted == "directory":
        lock_file.mkdir()
    elif planted == "link":
        (tmp_path / "elsewhere").write_bytes(b"")
        lock_file.symlink_to(tmp_path / "elsewhere")
    else:
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this system")
        os.mkfifo(lock_file)
    with pytest.raises(StorageError) as caught:
        tree.find("m/v1").update(late=True)
    if planted == "directory":
        assert f"{OS_LOCK_FILE}': the lock object is a directory" in str(caught.value)
    (lock_file.rmdir if planted == "directory" else lock_file.unlink)()
    assert snapshot(tree.storage) == before  # nothing written, nothing left behind
    assert "late" not in tree.find("m/v1").metadata


def test_lock_status_for_a_reader_who_cannot_write(
    tree: Metatree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_write(path: str, flags: int, *args: Any) -> int:
        if str(path).endswith(OS_LOCK_FILE) and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args)

    holder, reader = _lock(tree), Metatree(str(tmp_path / "db"))
    holder.acquire()
    body = (tmp_path / "db" / ".lock").read_bytes()
    monkeypatch.setattr(os, "open", no_write)
    try:
        info = reader.lock_status()  # held: probed through a read-only descriptor
        assert info is not None
        assert info.owner == holder.owner
    finally:
        monkeypatch.undo()
        holder.release()
    # what a writer killed while holding leaves: both files, and nobody holds the lock
    (tmp_path / "db" / ".lock").write_bytes(body)
    (tmp_path / "db" / OS_LOCK_FILE).write_bytes(b"")
    monkeypatch.setattr(os, "open", no_write)
    assert reader.lock_status() is None


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"), reason="fork")
def test_a_fork_while_the_lock_is_being_taken_leaves_the_child_nothing(
    tree: Metatree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork between locking the file and recording it: the child must not keep the lock.

    The kernel releases the lock when the last descriptor of it closes; a child holding a copy
    kept every writer out after the parent died. The child here only reports whether it holds
    a descriptor of the lock file once the after-fork hooks ran.
    """
    children: list[int] = []
    write = LocalLock._write

    def forking_write(self: LocalLock, body: bytes) -> None:
        if not children:
            pid = os.fork()
            if pid == 0:  # the child: a pool worker that never touches metatree
                held = any(
                    os.readlink(f"/proc/self/fd/{fd}").endswith(OS_LOCK_FILE)
                    for fd in os.listdir("/proc/self/fd")
                    if os.path.exists(f"/proc/self/fd/{fd}")
                )
                os._exit(1 if held else 0)
            children.append(pid)
        write(self, body)

    monkeypatch.setattr(LocalLock, "_write", forking_write)
    tree.find("m/v1").update(n=1)
    _, status = os.waitpid(children[0], 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child holds the lock file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_put_of_a_fifo_is_refused_before_the_lock(tmp_path: Path) -> None:
    from metatree import Metatree
    from metatree.errors import PathError

    tree = Metatree(str(tmp_path / "db"), ("a",))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block until a writer came, holding the DB lock
    with pytest.raises(PathError, match="not a regular file"):
        tree.put("x", str(fifo))
    assert tree.lock_status() is None
    assert tree.list() == []
