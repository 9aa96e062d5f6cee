"""`WebHDFSServer`: lifecycle, request recording and the fault-injection API of the fake."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from metatree.testing.servers import Waves
from metatree.testing.webhdfs._faults import Fault, Faults
from metatree.testing.webhdfs._handler import HTTPServer
from metatree.testing.webhdfs._namespace import Namespace
from metatree.testing.webhdfs._operations import answer
from metatree.testing.webhdfs._protocol import BY_STATUS, PREFIX, RemoteError

if TYPE_CHECKING:
    from typing import Self

    from metatree.testing.webhdfs._handler import Handler


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request as the server saw it, so tests can assert on the client's traffic.

    Attributes
    ----------
    method : str
        HTTP method.
    op : str
        Upper-cased ``op`` parameter, ``""`` when absent.
    path : str
        Decoded URL path after ``/webhdfs/v1``.
    params : dict[str, str]
        Query parameters, names lower-cased as Hadoop's ParamFilter does.
    status : int or None
        Status answered; ``None`` when fault injection dropped the connection instead.
    datanode : bool
        Whether this was the datanode step of a redirected operation.
    """

    method: str
    op: str
    path: str
    params: dict[str, str]
    status: int | None
    datanode: bool
    wave: int = 0
    """Its place in the chain of dependent round trips (`count_waves`), 0 when not counted."""


class WebHDFSServer:
    """A WebHDFS namenode and datanode on one local port, backed by a local directory.

    Parameters
    ----------
    root_dir : str, optional
        Directory holding the HDFS namespace ``/``; when omitted, a private temporary directory
        removed by `stop`. Its ``.reserved`` subdirectory (hidden from clients) stages uploads.
    host : str
        Interface to bind; also the host written in redirect ``Location`` headers.
    port : int
        Port to bind; 0 picks a free one, readable from `port` once started.
    """

    def __init__(self, root_dir: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root_dir = os.path.abspath(root_dir or tempfile.mkdtemp(prefix="webhdfs-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root_dir, ignore_errors=True)
        if root_dir is not None:
            self._cleanup.detach()
        self.host, self.port = host, port
        self.requests: list[RequestRecord] = []
        self.waves: Waves | None = None
        self.delay = 0.0
        """Seconds each request waits before it is answered (`set_delay`)."""
        self._ns = Namespace(self.root_dir)
        self._faults = Faults()
        self._lock = threading.Lock()  # guards requests and connections
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind and serve from a daemon thread, so that a test can talk to it synchronously."""
        if self._httpd is not None:
            raise RuntimeError("WebHDFSServer is already started")
        self._stopping = False
        self._httpd = HTTPServer((self.host, self.port), self._serve, self._track)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and clean up; idle keep-alive connections are cut, else joining hangs."""
        httpd, self._httpd = self._httpd, None
        self.release()
        if httpd is not None and self._thread is not None:
            httpd.shutdown()
            with self._lock:
                self._stopping, connections = True, list(self._connections)
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            httpd.server_close()  # joins the handler threads
            self._thread.join()
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def count_waves(self, quiet: float | None = 0.1) -> None:
        """Count waves: number each request's (`RequestRecord.wave`, see `Waves`); None stops.

        Every answer then waits until `quiet` seconds pass without a new request.
        """
        self.waves = None if quiet is None else Waves(quiet)

    def set_delay(self, seconds: float) -> None:
        """Make each request wait `seconds` before it is answered (0, the default: none).

        Requests in flight together wait together, as a network's round trips overlap:
        benchmarks/latency.py measures waves with it.
        """
        self.delay = seconds

    def reset_counters(self) -> None:
        """Forget the recorded requests (pending faults are kept)."""
        with self._lock:
            self.requests.clear()

    def fail_next(
        self,
        n: int = 1,
        *,
        op: str | None = None,
        status: int = 500,
        drop: bool = False,
        after: bool = False,
        datanode: bool | None = None,
    ) -> None:
        """Make the next ``n`` matching requests fail, to test how clients cope.

        Parameters
        ----------
        n : int
            Number of matching requests to fail.
        op : str, optional
            Only requests with this ``op`` match (both namenode and datanode steps).
        status : int
            Status to answer, with a ``RemoteException`` body; the request is not performed.
        drop : bool
            Close the connection without answering instead.
        after : bool
            With ``drop``, perform the request first: a lost reply the client cannot tell apart.
        datanode : bool, optional
            Only match the namenode (False) or the datanode (True) step of redirected ops.
        """
        self._faults.add(Fault(n, op and op.upper(), datanode, status, drop, after))

    def clear_faults(self) -> None:
        """Drop the faults not yet injected."""
        self._faults.clear()

    def stall(self, op: str | None = None) -> None:
        """Leave matching requests (``op``, or all) unanswered until `release` or `stop`.

        A server that accepts a request and never answers: what a client's timeout is for.
        """
        self._faults.stall(op and op.upper())

    def release(self) -> None:
        """Answer the stalled requests and stop stalling."""
        self._faults.release()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if not add:
                self._connections.discard(conn)
            elif self._stopping:
                conn.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(conn)

    def _serve(self, handler: Handler) -> None:
        split = urlsplit(handler.path)
        params = {k.lower(): v for k, v in parse_qsl(split.query, keep_blank_values=True)}
        op, raw = params.get("op", "").upper(), unquote(split.path)
        datanode = "namenoderpcaddress" in params  # how Hadoop's datanode URLs are told apart
        try:
            body = handler.read_body()  # drained even when failing, so keep-alive stays in sync
        except ValueError:  # malformed framing: give up on this connection
            handler.close_connection = True
            return
        waves = self.waves
        wave = 0 if waves is None else waves.arrive()
        self._faults.wait_if_stalled(op)
        if self.delay:
            time.sleep(self.delay)
        if waves is not None:
            waves.hold(wave)
        fault = self._faults.take(op, datanode)
        if fault is None or (fault.drop and fault.after):
            authority, ip = f"{self.host}:{self.port}", handler.client_address[0]
            reply = answer(self._ns, authority, handler.command, raw, params, body, ip)
        else:
            exception = BY_STATUS.get(fault.status, "RuntimeException")
            reply = RemoteError(exception, "Injected fault", fault.status).reply()
        dropped = fault is not None and fault.drop
        status = None if dropped else reply[0]
        record = RequestRecord(
            handler.command, op, raw[len(PREFIX) :] or "/", params, status, datanode, wave
        )
        with self._lock:
            self.requests.append(record)  # before answering: whoever saw the reply sees it

        if dropped:
            handler.close_connection = True
        else:
            handler.send_reply(reply)
