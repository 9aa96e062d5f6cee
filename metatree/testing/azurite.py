"""Azurite, Microsoft's Azure Storage emulator, started inside the test session.

Installed from npm (the machine's Node.js) into a cache directory on first use, pinned to
`AZURITE_VERSION`, and run on 127.0.0.1 with a port the system picks. Its conditional writes
are atomic under contention (measured: docs/backends.md, "Azure Blob Storage"): Node runs each
request's condition check and store change with no I/O between them, in memory.

Requests are counted at the server from Azurite's debug log (one line per request), so a count
is what really crossed the wire, the SDK's retries included.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import unquote, urlsplit

__all__ = [
    "ACCOUNT",
    "AZURITE_VERSION",
    "AzureRequest",
    "AzuriteServer",
    "HoldingProxy",
    "azure_options",
    "delete_container",
    "make_container",
]

AZURITE_VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development account and key (public: the emulator's default)."""

_LISTENS = re.compile(rb"listens on http://[\d.]+:(\d+)")
_REQUEST = re.compile(r"RequestMethod=(\S+) RequestURL=(\S+)")


@dataclass(frozen=True, slots=True)
class AzureRequest:
    """One request Azurite received: the method, the blob path (``container/name``), query."""

    method: str
    path: str
    query: str


def cache_dir() -> str:
    """Where Azurite is installed: ``$METATREE_CACHE`` or ``~/.cache/metatree``, by version."""
    base = os.environ.get("METATREE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "metatree"
    )
    return os.path.join(base, f"azurite-{AZURITE_VERSION}")


def binary() -> str | None:
    """Return the installed ``azurite-blob`` script, if any."""
    path = os.path.join(cache_dir(), "node_modules", ".bin", "azurite-blob")
    return path if os.path.exists(path) else None


def install() -> str:
    """Install Azurite with npm into `cache_dir` (once; safe for concurrent test processes)."""
    from filelock import FileLock

    found = binary()
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm (Node.js) is needed to install Azurite")
    os.makedirs(cache_dir(), exist_ok=True)
    with FileLock(os.path.join(cache_dir(), ".install.lock")):
        found = binary()
        if found is not None:
            return found
        subprocess.run(
            [npm, "install", "--prefix", cache_dir(), "--no-audit", "--no-fund",
             "--loglevel=error", f"azurite@{AZURITE_VERSION}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600,
        )  # fmt: skip
    found = binary()
    if found is None:
        raise FileNotFoundError(f"npm installed no azurite-blob into {cache_dir()}")
    return found


def connection_string(endpoint_url: str) -> str:
    """Return the connection string of Azurite's development account at `endpoint_url`."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={endpoint_url}/{ACCOUNT};"
    )


def azure_options(endpoint_url: str) -> dict[str, Any]:
    """Return the adlfs storage options for Azurite at `endpoint_url`."""
    return {"connection_string": connection_string(endpoint_url)}


def make_container(endpoint_url: str, prefix: str = "test") -> str:
    """Create a uniquely named container; return its name."""
    from azure.storage.blob import BlobServiceClient

    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    with BlobServiceClient.from_connection_string(connection_string(endpoint_url)) as client:
        client.create_container(name)
    return name


def delete_container(endpoint_url: str, name: str) -> None:
    """Delete a container and its blobs (quietly: a test's cleanup)."""
    from azure.storage.blob import BlobServiceClient

    with (
        contextlib.suppress(Exception),
        BlobServiceClient.from_connection_string(connection_string(endpoint_url)) as client,
    ):
        client.delete_container(name)


class AzuriteServer:
    """Azurite's Blob service on 127.0.0.1, data in memory; with ``count``, a request log."""

    def __init__(self, data_dir: str, host: str = "127.0.0.1", *, count: bool = False) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = 0
        self.log = os.path.join(data_dir, "requests.log") if count else None
        self._seen = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The Blob endpoint (the account is the first path segment)."""
        return f"http://{self.host}:{self.port}"

    def options(self) -> dict[str, Any]:
        """Return the adlfs storage options for this server."""
        return azure_options(self.endpoint_url)

    def start(self, timeout: float = 60.0) -> Self:
        """Start ``azurite-blob`` (installing it first if needed) and wait for its port."""
        script = install()
        args = [script, "--blobHost", self.host, "--blobPort", "0", "--inMemoryPersistence",
                "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                "--disableProductStyleUrl"]  # fmt: skip
        args += ["--debug", self.log] if self.log else ["--silent"]
        out = os.path.join(self.data_dir, "azurite.out")
        with open(out, "wb") as log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(out, "rb") as log:
                found = _LISTENS.search(log.read())
            if found:
                self.port = int(found.group(1))
                return self
            if self._process.poll() is not None:
                with open(out, "rb") as log:
                    said = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"azurite exited with {self._process.returncode}: {said}")
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"azurite did not listen within {timeout}s")

    def requests(self, settle: float = 0.2) -> list[AzureRequest]:
        """Return the requests received since the last `reset_counters` (needs ``count=True``).

        Azurite writes its log asynchronously: read once the file has stopped growing for
        `settle` seconds.
        """
        if self.log is None:
            raise RuntimeError("this server does not count requests (count=False)")
        size = -1
        while (now := os.path.getsize(self.log)) != size:
            size = now
            time.sleep(settle)
        with open(self.log, "rb") as log:
            log.seek(self._seen)
            text = log.read().decode(errors="replace")
        out = []
        for method, url in _REQUEST.findall(text):
            parts = urlsplit(url)
            path = unquote(parts.path).removeprefix(f"/{ACCOUNT}/")
            out.append(AzureRequest(method, path, parts.query))
        return out

    def reset_counters(self) -> None:
        """Count from now on."""
        if self.log is not None:
            self.requests()  # let the log settle first
            self._seen = os.path.getsize(self.log)

    def stop(self) -> None:
        """Stop the server."""
        from metatree.testing.servers import stop_process

        stop_process(self._process)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HoldingProxy:
    """A TCP proxy in front of a server whose replies can be held: a stalled server.

    Requests pass at once; while `hold` is set, no reply byte reaches the client (as from a
    server that accepted the request and never answers) until `release`.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.held = threading.Event()
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint_url(self) -> str:
        """Return the proxy's URL, for `azure_options`."""
        return f"http://{self.target[0]}:{self.port}"

    def hold(self) -> None:
        """Hold every reply from now on."""
        self.held.set()

    def release(self) -> None:
        """Let the replies through again."""
        self.held.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        try:
            while data := src.recv(65536):
                while reply and self.held.is_set():
                    time.sleep(0.02)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for end in (src, dst):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting, and cut every connection."""
        self.release()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
