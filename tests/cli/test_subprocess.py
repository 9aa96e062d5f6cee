"""The real command (``python -m metatree``) in subprocesses, on local disk, S3 and WebHDFS.

Each subprocess costs a start-up (about 0.25 s), so each backend runs one short session of
commands that covers the path through its backend: create, put, list, resolve, download, the
lock, doctor, and a typed failure. Every command's stdout is parsed (data only) and its stderr
checked apart. The commands themselves are tested in depth in process (test_memory.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from metatree.testing.servers import make_bucket

if TYPE_CHECKING:
    from pathlib import Path

    from metatree.testing.servers import MotoS3Server
    from metatree.testing.webhdfs import WebHDFSServer


def command(
    args: list[str], cwd: Path, *, code: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "metatree", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return done


def session(root: str, options: list[str], cwd: Path, backend: str, *, full: bool = False) -> None:
    """One backend's session; `options` are its ``-o`` storage options.

    Remote backends skip update and ls (an s3fs start-up is about 0.7 s); `full` runs them.
    """
    base = ["-r", root, *options]

    def data(*args: str) -> Any:
        done = command([*base, *args, "--json"], cwd)
        return json.loads(done.stdout)

    (cwd / "w.bin").write_bytes(b"weights" * 1000)
    assert data("init", "model", "version")["keys"] == ["model", "version"]
    put = data("put", "m/v1", "w.bin")
    assert put["url"].endswith("/m/v1/w.bin")
    if full:
        assert data("update", "m", "active=v1")["updated"] == {"active": "v1"}
        assert data("ls", "m/<active>")["files"] == ["w.bin"]
    got = command([*base, "get", "m/v1/w.bin", "copy.bin"], cwd)
    assert got.stdout == f"{cwd / 'copy.bin'}\n"  # the local path, nothing else
    assert got.stderr == ""  # no terminal: no progress bar
    assert (cwd / "copy.bin").read_bytes() == b"weights" * 1000
    doctor = data("doctor")
    assert doctor["lock"] == {"locked": False, "holder": None}
    assert doctor["backend"] == f"metatree.backends.{backend}"
    failed = command([*base, "ls", "m/v9"], cwd, code=3)
    assert failed.stdout == ""
    assert "NotFoundError" in failed.stderr


def test_local(tmp_path: Path) -> None:
    root = str(tmp_path / "db")
    session(root, [], tmp_path, "local.LocalBackend", full=True)
    # METATREE_URL instead of --root; a usage error (exit 2) without a database
    env = {"METATREE_URL": root}
    assert command(["ls"], tmp_path, env=env).stdout == "m/\n"
    assert "METATREE_URL" in command(["ls"], tmp_path, code=2, env={"METATREE_URL": ""}).stderr


@pytest.mark.s3
def test_s3(moto_server: MotoS3Server, tmp_path: Path) -> None:
    root = f"s3://{make_bucket(moto_server.endpoint_url)}/db"
    options = ["-o", f"endpoint_url={moto_server.endpoint_url}", "-o", "key=testing"]
    session(root, [*options, "-o", "secret=testing"], tmp_path, "s3.S3Backend")


@pytest.mark.webhdfs
def test_webhdfs(webhdfs_server: WebHDFSServer, tmp_path: Path) -> None:
    root = f"webhdfs:///tmp/{uuid.uuid4().hex}/db"
    options = ["-o", f"host={webhdfs_server.host}", "-o", f"port={webhdfs_server.port}"]
    session(root, [*options, "-o", "user=test"], tmp_path, "webhdfs.WebHDFSBackend")
