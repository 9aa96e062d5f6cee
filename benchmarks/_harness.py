"""The benchmark's moving parts: worker processes, implementations, and backends with counters.

Servers (moto's S3, the WebHDFS test server, SeaweedFS) run in this process or as children of
it; clients run in worker processes (``worker.py``), one per implementation, so a request
count taken here between two commands is exactly what one operation sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

WORKER = Path(__file__).with_name("worker.py")
ROOT = WORKER.parent.parent
"""This checkout: the metatree its workers measure unless told otherwise (`Pythons.source`)."""
KEYS = ["a", "b", "c"]
IMPLS = ("metatree", "metatreedb", "floor")


class WorkerError(RuntimeError):
    """A command failed inside a worker (the message holds its traceback)."""


class Worker:
    """One client process speaking the JSON-line protocol of ``worker.py``.

    Workers run isolated (``-I``: no PYTHONPATH, no user site), so `source`, when given, is
    the one directory put first on their ``sys.path``: the checkout whose metatree they
    measure. Without it an editable install in the virtualenv decides, which may be another
    checkout than the one being benchmarked.
    """

    def __init__(self, python: str, cwd: str, log: IO[str], source: str | None = None) -> None:
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        self.proc = subprocess.Popen(
            [python, "-I", str(WORKER), *([source] if source else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=cwd,
            env=env,
            text=True,
        )

    def send(self, cmd: str, **args: Any) -> None:
        """Send a command without waiting for its reply (see `reply`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> Any:
        """Wait for the reply to the oldest command sent."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker exited with {self.proc.wait()} (see the log)")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(answer["error"])
        return answer["ok"]

    def call(self, cmd: str, **args: Any) -> Any:
        """Send a command and wait for its reply."""
        self.send(cmd, **args)
        return self.reply()

    def close(self) -> None:
        """Ask the worker to exit, and make sure it does."""
        with contextlib.suppress(OSError, ValueError):
            self.send("exit")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class Backend:
    """A storage backend the workers reach, with its server's request counter (if any)."""

    name: str
    tmp: str
    server: Any = None
    bucket: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def counted(self) -> bool:
        """Whether requests are counted (at a server: local disk has none)."""
        return self.server is not None and hasattr(self.server, "reset_counters")

    def reset(self) -> None:
        """Forget the requests counted so far."""
        if self.counted:
            self.server.reset_counters()

    def count(self) -> int | None:
        """Requests since the last `reset` (None on local disk)."""
        return len(self.server.requests) if self.counted else None

    def spec(self, impl: str, label: str) -> dict[str, Any]:
        """What a worker needs to open `impl` on a fresh database named `label`."""
        name = f"{impl}-{label}-{uuid.uuid4().hex[:8]}"
        tmp = tempfile.mkdtemp(prefix=f"{name}-", dir=self.tmp)
        if self.name == "local":
            path = os.path.join(self.tmp, "trees", name)
            protocol, root = "file", path
        elif self.name in {"s3", "seaweedfs"}:
            path = f"{self.bucket}/{name}"
            protocol, root = "s3", f"s3://{path}"
        elif self.name == "azure":
            path = f"{self.bucket}/{name}"
            protocol, root = "az", f"az://{path}"
        else:
            path = f"/bench/{name}"
            protocol, root = "webhdfs", f"webhdfs://{path}"
        return {
            "root": root,
            "protocol": protocol,
            "path": path,
            "options": dict(self.options),
            "keys": KEYS,
            "tmp": tmp,
        }


@contextlib.contextmanager
def backend(name: str, tmp: str) -> Any:
    """Start what `name` needs and yield its `Backend`; stop it afterwards."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    folder = tempfile.mkdtemp(prefix=f"{name}-", dir=tmp)
    try:
        if name == "local":
            yield Backend(name, folder)
        elif name == "s3":
            from metatree.testing.servers import MotoS3Server, make_bucket, s3_options

            with MotoS3Server() as server:
                bucket = make_bucket(server.endpoint_url, "bench")
                yield Backend(name, folder, server, bucket, s3_options(server.endpoint_url))
        elif name == "seaweedfs":
            from metatree.testing.servers import SeaweedS3Server, make_bucket, s3_options

            with SeaweedS3Server(folder) as weed:
                bucket = make_bucket(weed.endpoint_url, "bench")
                yield Backend(name, folder, None, bucket, s3_options(weed.endpoint_url))
        elif name == "azure":
            from metatree.testing.azurite import AzuriteServer, make_container

            with AzuriteServer(folder) as azurite:
                container = make_container(azurite.endpoint_url, "bench")
                yield Backend(name, folder, None, container, azurite.options())
        elif name == "webhdfs":
            from metatree.testing.webhdfs import WebHDFSServer

            with WebHDFSServer(os.path.join(folder, "hdfs")) as hdfs:
                yield Backend(
                    name, folder, hdfs, "", {"host": hdfs.host, "port": hdfs.port, "user": "bench"}
                )
        else:
            raise ValueError(f"unknown backend {name!r}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Pythons:
    """The interpreter that runs each implementation's workers, and where ours imports from."""

    ours: str = sys.executable
    reference: str | None = None
    why_no_reference: str = ""
    source: str = str(ROOT)
    """The checkout whose ``metatree`` package our workers import (before/after runs point
    it at an old commit's worktree); metatreedb's workers import their own virtualenv's."""

    def of(self, impl: str) -> str | None:
        """Return the interpreter for `impl`, None when metatreedb is unavailable."""
        return self.reference if impl == "metatreedb" else self.ours

    def source_of(self, impl: str) -> str | None:
        """Return the directory `impl`'s workers put first on ``sys.path`` (None: none)."""
        return None if impl == "metatreedb" else self.source

    @classmethod
    def find(cls, source: str = str(ROOT), reference: bool = True) -> Pythons:
        """Ours is this interpreter; metatreedb's is built (or reused) from PyPI."""
        from metatree.testing.reference import (
            ReferenceUnavailable,
            ensure_reference_venv,
            venv_python,
        )

        if not reference:
            return cls(why_no_reference="left out (--without-metatreedb)", source=source)
        try:
            return cls(reference=str(venv_python(ensure_reference_venv())), source=source)
        except ReferenceUnavailable as exc:
            return cls(why_no_reference=str(exc), source=source)


def median(values: list[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile by linear interpolation between closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
