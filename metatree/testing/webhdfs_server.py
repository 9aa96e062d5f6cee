"""An in-process fake of the Hadoop 3 WebHDFS REST API, for tests.

Hadoop cannot be installed where the test suite runs, yet metatree must be exercised against
fsspec's WebHDFS client over real HTTP. This server speaks WebHDFS v1 (namenode and datanode in
one process) from a local directory and reproduces the Hadoop behaviour that matters for
correctness: two-step writes through a 307 redirect, ``overwrite=false`` as an atomic
check-and-create, HDFS ``rename``/``rename2`` semantics, ``RemoteException`` bodies with the
status mapping of Hadoop's ``ExceptionHandler``, and fault injection for retry tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import weakref
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

if TYPE_CHECKING:
    from typing import Self

__all__ = ["RequestRecord", "WebHDFSServer"]

_PREFIX = "/webhdfs/v1"
_RESERVED = ".reserved"  # upload staging, inside the root so that os.replace stays atomic
_OPS = {
    "GET": {"OPEN", "GETFILESTATUS", "LISTSTATUS", "GETHOMEDIRECTORY"},
    "PUT": {"CREATE", "MKDIRS", "RENAME"},
    "POST": {"APPEND"},
    "DELETE": {"DELETE"},
}
_REDIRECTED = {"CREATE", "APPEND", "OPEN"}
# Java class and status (as Hadoop's ExceptionHandler maps it) of each exception we raise.
_JAVA = {
    "FileNotFoundException": ("java.io.", 404),
    "IOException": ("java.io.", 403),
    "EOFException": ("java.io.", 403),
    "FileAlreadyExistsException": ("org.apache.hadoop.fs.", 403),
    "ParentNotDirectoryException": ("org.apache.hadoop.fs.", 403),
    "PathIsNotEmptyDirectoryException": ("org.apache.hadoop.fs.", 403),
    "IllegalArgumentException": ("java.lang.", 400),
    "InvalidPathException": ("org.apache.hadoop.fs.", 400),
}
_BY_STATUS = {400: "IllegalArgumentException", 403: "IOException", 404: "FileNotFoundException"}
_FNF, _FAE, _IOE = "FileNotFoundException", "FileAlreadyExistsException", "IOException"
_JSON = {"Content-Type": "application/json;charset=utf-8"}
_OCTETS = {"Content-Type": "application/octet-stream"}

_Reply = tuple[int, dict[str, str], bytes]


class _RemoteError(Exception):
    """A Java exception as WebHDFS reports it: a status and a ``RemoteException`` body."""

    def __init__(self, exception: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        package, default = _JAVA.get(exception, ("java.lang.", 500))
        self.body = {"exception": exception, "javaClassName": package + exception}
        self.body["message"] = message
        self.status = status or default

    def reply(self) -> _Reply:
        return _json({"RemoteException": self.body}, self.status)


def _json(obj: object, status: int = 200) -> _Reply:
    return status, dict(_JSON), json.dumps(obj).encode()


def _parts(hpath: str) -> list[str]:
    return [p for p in hpath.split("/") if p]


def _parent(hpath: str) -> str:
    return "/" + "/".join(_parts(hpath)[:-1])


def _child(hpath: str, name: str) -> str:
    return hpath.rstrip("/") + "/" + name


def _normalise(raw: str) -> str:
    """Canonicalise an HDFS path, rejecting what HDFS's isValidName rejects (so never ``..``)."""
    parts = _parts(raw)
    if any(p in {".", ".."} or ":" in p or "\0" in p for p in parts):
        raise _RemoteError("InvalidPathException", f"Invalid path name Invalid file name: {raw}")
    if parts[:1] == [_RESERVED]:
        raise _RemoteError("InvalidPathException", f"Invalid path name {raw} is a reserved name")
    return "/" + "/".join(parts)


def _param(params: dict[str, str], name: str, kind: type[bool | int], default: Any = None) -> Any:
    """Parse a boolean or non-negative long parameter as Hadoop's Param classes do."""
    value = params.get(name, "")
    if not value:
        return default
    if kind is bool and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    if kind is int and value.isascii() and value.isdigit():
        return int(value)
    why = f'Failed to parse "{value}" as {"Boolean" if kind is bool else "a non-negative long"}.'
    raise _RemoteError(
        "IllegalArgumentException", f'Invalid value for webhdfs parameter "{name}": {why}'
    )


def _check_op(method: str, op: str) -> None:
    if op not in _OPS.get(method, set()):
        enum = f"org.apache.hadoop.hdfs.web.resources.{method.capitalize()}OpParam.Op"
        msg = f'Invalid value for webhdfs parameter "op": No enum constant {enum}.{op}'
        raise _RemoteError("IllegalArgumentException", msg)


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


@dataclass
class _Fault:
    remaining: int
    op: str | None
    datanode: bool | None
    status: int
    drop: bool
    after: bool


class _Namespace:
    """HDFS namespace semantics over a local directory; callers hold ``lock`` around each op."""

    def __init__(self, root: str) -> None:
        self.root, self.staging = root, os.path.join(root, _RESERVED)
        os.makedirs(self.staging, exist_ok=True)
        self.lock = threading.Lock()  # the FSNamesystem lock: makes check-then-act ops atomic
        self.owners: dict[int, str] = {}  # inode -> user who created it

    def local(self, hpath: str) -> str:
        return os.path.join(self.root, *_parts(hpath))

    def stat(self, hpath: str) -> os.stat_result | None:
        """Stat ``hpath``, failing like Hadoop's checkTraverse when an ancestor is a file."""
        current = ""
        for part in _parts(hpath)[:-1]:
            current += "/" + part
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISDIR(os.stat(self.local(current)).st_mode):
                    msg = f"{current} (is not a directory)"
                    raise _RemoteError("ParentNotDirectoryException", msg)
        try:
            return os.stat(self.local(hpath))
        except FileNotFoundError:
            return None

    def file(self, hpath: str, missing: str) -> os.stat_result:
        st = self.stat(hpath)
        if st is None:
            raise _RemoteError(_FNF, missing)
        if stat.S_ISDIR(st.st_mode):
            raise _RemoteError(_FNF, f"Path is not a file: {hpath}")
        return st

    def children(self, hpath: str) -> list[str]:
        names = [n for n in os.listdir(self.local(hpath)) if hpath != "/" or n != _RESERVED]
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
        for part in _parts(hpath):
            current += "/" + part
            try:
                os.mkdir(self.local(current))
            except FileExistsError:
                if not os.path.isdir(self.local(current)):
                    raise _RemoteError(_FAE, f"Path is not a directory: {hpath}") from None
            else:
                self.owners[os.stat(self.local(current)).st_ino] = user

    def rename(self, src: str, dst: str) -> bool:
        """Apply ClientProtocol.rename: failures are False; an existing dir receives ``src``."""
        dst_st = self.stat(dst)
        if dst_st is not None and stat.S_ISDIR(dst_st.st_mode) and src != "/":
            dst = _child(dst, _parts(src)[-1])
        if src == "/" or self.stat(src) is None:
            return False
        if dst == src:
            return True
        if dst.startswith(src + "/") or os.path.lexists(self.local(dst)):
            return False
        if self.stat(_parent(dst)) is None:
            return False
        os.rename(self.local(src), self.local(dst))
        return True

    def rename2(self, src: str, dst: str, overwrite: bool) -> None:
        """Apply ClientProtocol.rename2, raising Hadoop's exceptions in Hadoop's order."""
        src_st = self.stat(src)
        if src_st is None:
            raise _RemoteError(_FNF, f"rename source {src} is not found.")
        if src == "/":
            raise _RemoteError(_IOE, "rename source cannot be the root")
        if dst == src:
            raise _RemoteError(_FAE, f"The source {src} and destination {dst} are the same")
        if dst.startswith(src + "/"):
            msg = f"Rename destination {dst} is a directory or file under source {src}"
            raise _RemoteError(_IOE, msg)
        if dst == "/":
            raise _RemoteError(_IOE, "rename destination cannot be the root")
        dst_st = self.stat(dst)
        if dst_st is not None:
            if stat.S_ISDIR(dst_st.st_mode) != stat.S_ISDIR(src_st.st_mode):
                msg = f"Source {src} Destination {dst} both should be either file or directory"
                raise _RemoteError(_IOE, msg)
            if not overwrite:
                raise _RemoteError(_FAE, f"rename destination {dst} already exists")
            if stat.S_ISDIR(dst_st.st_mode) and self.children(dst):
                raise _RemoteError(_IOE, f"rename destination directory is not empty: {dst}")
        if self.stat(_parent(dst)) is None:
            raise _RemoteError(_FNF, f"rename destination parent {dst} not found.")
        os.replace(self.local(src), self.local(dst))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 makes bursts of concurrent clients get resets

    def __init__(self, address: tuple[str, int], fake: WebHDFSServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients hanging up mid-request are routine in fault-injection tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Jetty/Netty servers do
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid a 40 ms stall
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing, so that test output stays clean."""

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_PUT = do_POST = do_DELETE = do_GET

    def read_body(self) -> bytes:
        """Read the whole body, also chunked (streamed uploads): leftovers would desync the link."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline(65537).split(b";")[0].strip(), 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline(65537) not in {b"\r\n", b"\n", b""}:
            pass  # trailers
        return b"".join(chunks)

    def send_reply(self, reply: _Reply) -> None:
        status, headers, body = reply
        try:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


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
        self._ns = _Namespace(self.root_dir)
        self._lock = threading.Lock()  # guards requests, faults and connections
        self._faults: list[_Fault] = []
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self._stall_ops: set[str | None] = set()
        self._unstall = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind and serve from a daemon thread, so that a test can talk to it synchronously."""
        if self._httpd is not None:
            raise RuntimeError("WebHDFSServer is already started")
        self._stopping = False
        self._httpd = _HTTPServer((self.host, self.port), self)
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
        with self._lock:
            self._faults.append(_Fault(n, op and op.upper(), datanode, status, drop, after))

    def clear_faults(self) -> None:
        """Drop the faults not yet injected."""
        with self._lock:
            self._faults.clear()

    def stall(self, op: str | None = None) -> None:
        """Leave matching requests (``op``, or all) unanswered until `release` or `stop`.

        A server that accepts a request and never answers: what a client's timeout is for.
        """
        with self._lock:
            self._unstall.clear()
            self._stall_ops.add(op and op.upper())

    def release(self) -> None:
        """Answer the stalled requests and stop stalling."""
        with self._lock:
            self._stall_ops.clear()
            self._unstall.set()

    def _stalled(self, op: str) -> bool:
        with self._lock:
            return bool(self._stall_ops & {None, op})

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if not add:
                self._connections.discard(conn)
            elif self._stopping:
                conn.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(conn)

    def _take_fault(self, op: str, datanode: bool) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op in {None, op} and fault.datanode in {None, datanode}:
                    fault.remaining -= 1
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    return fault
        return None

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        params = {k.lower(): v for k, v in parse_qsl(split.query, keep_blank_values=True)}
        op, raw = params.get("op", "").upper(), unquote(split.path)
        datanode = "namenoderpcaddress" in params  # how Hadoop's datanode URLs are told apart
        try:
            body = handler.read_body()  # drained even when failing, so keep-alive stays in sync
        except ValueError:  # malformed framing: give up on this connection
            handler.close_connection = True
            return
        if self._stalled(op):
            self._unstall.wait(120)
        fault = self._take_fault(op, datanode)
        if fault is None or (fault.drop and fault.after):
            reply = self._reply(handler.command, raw, params, body, handler.client_address[0])
        else:
            exception = _BY_STATUS.get(fault.status, "RuntimeException")
            reply = _RemoteError(exception, "Injected fault", fault.status).reply()
        dropped = fault is not None and fault.drop
        status = None if dropped else reply[0]
        record = RequestRecord(
            handler.command, op, raw[len(_PREFIX) :] or "/", params, status, datanode
        )
        with self._lock:
            self.requests.append(record)  # before answering: whoever saw the reply sees it
        if dropped:
            handler.close_connection = True
        else:
            handler.send_reply(reply)

    def _reply(self, method: str, raw: str, params: dict[str, str], body: bytes, ip: str) -> _Reply:
        if raw != _PREFIX and not raw.startswith(_PREFIX + "/"):
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        op = params.get("op", "").upper()
        try:
            _check_op(method, op)
            hpath = _normalise(raw[len(_PREFIX) :])
            user = params.get("doas") or params.get("user.name") or "dr.who"
            if "namenoderpcaddress" in params:
                return self._datanode(op, hpath, params, body, user, ip)
            if op in _REDIRECTED:
                return self._redirect(op, hpath, params)
            with self._ns.lock:
                return self._namenode(op, hpath, params, user)
        except _RemoteError as e:
            return e.reply()
        except OSError as e:
            return _RemoteError(_IOE, str(e)).reply()
        except Exception as e:  # noqa: BLE001 - answer a bug with a 500 as Hadoop would
            return _RemoteError("RuntimeException", repr(e)).reply()

    def _namenode(self, op: str, hpath: str, params: dict[str, str], user: str) -> _Reply:
        """Serve a metadata op; the caller holds the namespace lock."""
        ns, st = self._ns, self._ns.stat(hpath)
        if op == "GETHOMEDIRECTORY":
            return _json({"Path": f"/user/{user}"})
        if op == "MKDIRS":
            ns.mkdirs(hpath, user)
            return _json({"boolean": True})
        if op == "RENAME":
            destination = params.get("destination", "")
            if not destination.startswith("/"):
                msg = f'Invalid parameter value: destination = "{destination}" is not absolute.'
                raise _RemoteError("IllegalArgumentException", msg)
            dst, options = _normalise(destination), params.get("renameoptions", "").upper()
            ns.stat(dst)  # Hadoop resolves (and traverse-checks) both paths first
            if not options:
                return _json({"boolean": ns.rename(hpath, dst)})
            if set(options.split(",")) - {"NONE", "OVERWRITE", "TO_TRASH"}:
                msg = f'Invalid value for webhdfs parameter "renameoptions": {options}'
                raise _RemoteError("IllegalArgumentException", msg)
            ns.rename2(hpath, dst, "OVERWRITE" in options.split(","))
            return 200, dict(_OCTETS), b""
        if op == "DELETE":
            return _json({"boolean": self._delete(hpath, st, _param(params, "recursive", bool))})
        if st is None:
            missing = f"File {hpath} does not exist." if op == "LISTSTATUS" else ""
            raise _RemoteError(_FNF, missing or f"File does not exist: {hpath}")
        if op == "GETFILESTATUS" or not stat.S_ISDIR(st.st_mode):
            status = ns.status(hpath, st, "")
            key = "FileStatus" if op == "GETFILESTATUS" else "FileStatuses"
            return _json({key: status if op == "GETFILESTATUS" else {"FileStatus": [status]}})
        paths = [(_child(hpath, n), n) for n in ns.children(hpath)]
        statuses = [ns.status(p, os.stat(ns.local(p)), n) for p, n in paths]
        return _json({"FileStatuses": {"FileStatus": statuses}})

    def _redirect(self, op: str, hpath: str, params: dict[str, str]) -> _Reply:
        """Answer the namenode step of a data op with a datanode URL, as Hadoop does."""
        offset = _param(params, "offset", int, 0)
        _param(params, "length", int)
        if op != "CREATE":  # the namenode looks OPEN/APPEND targets up, but checks no CREATE
            with self._ns.lock:
                st = self._ns.stat(hpath)
            if st is None:
                raise _RemoteError(_FNF, f"File {hpath} not found.")
            size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
            if op == "OPEN" and offset >= size > 0:
                msg = f"Offset={offset} out of the range [0, {size}); OPEN, path={hpath}"
                raise _RemoteError(_IOE, msg)
        query = {k: v for k, v in params.items() if k != "noredirect"}
        if op == "CREATE":
            query.setdefault("overwrite", "false")
        query["namenoderpcaddress"] = f"{self.host}:{self.port}"
        location = f"http://{self.host}:{self.port}{_PREFIX}{quote(hpath)}?{urlencode(query)}"
        if _param(params, "noredirect", bool):
            return _json({"Location": location})
        return 307, {"Location": location, **_OCTETS}, b""

    def _datanode(
        self, op: str, hpath: str, params: dict[str, str], body: bytes, user: str, ip: str
    ) -> _Reply:
        """Serve the datanode step of a redirected op: move the bytes."""
        ns = self._ns
        if op == "CREATE":
            return self._create(hpath, params, body, user, ip)
        if op not in _REDIRECTED:
            raise _RemoteError("IllegalArgumentException", f"Invalid operation {op}")
        with ns.lock:
            if op == "APPEND":
                ns.file(hpath, f"Failed to append to non-existent file {hpath} for client {ip}")
                with open(ns.local(hpath), "ab") as f:
                    f.write(body)
                return 200, {}, b""
            st = ns.file(hpath, f"File does not exist: {hpath}")
            offset, length = _param(params, "offset", int, 0), _param(params, "length", int, -1)
            if offset > st.st_size:
                raise _RemoteError("EOFException", "Cannot seek after EOF")
            with open(ns.local(hpath), "rb") as f:
                f.seek(offset)
                data = f.read(length)
        return 200, dict(_OCTETS), data

    def _create(
        self, hpath: str, params: dict[str, str], body: bytes, user: str, ip: str
    ) -> _Reply:
        """Stage the body, then check-and-create atomically under the namespace lock."""
        ns = self._ns
        overwrite = _param(params, "overwrite", bool, False)  # the REST default is false
        create_parent = _param(params, "createparent", bool, True)
        fd, staged = tempfile.mkstemp(dir=ns.staging)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            with ns.lock:
                st = ns.stat(hpath)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    raise _RemoteError(_FAE, f"{hpath} already exists as a directory")
                if st is not None and not overwrite:
                    raise _RemoteError(_FAE, f"{hpath} for client {ip} already exists")
                if create_parent:
                    ns.mkdirs(_parent(hpath), user)
                elif ns.stat(_parent(hpath)) is None:
                    raise _RemoteError(_FNF, f"Parent directory doesn't exist: {_parent(hpath)}")
                os.replace(staged, ns.local(hpath))
                ns.owners[os.stat(ns.local(hpath)).st_ino] = user
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
        return 201, {"Location": f"hdfs://{self.host}:{self.port}{quote(hpath)}"}, b""

    def _delete(self, hpath: str, st: os.stat_result | None, recursive: bool | None) -> bool:
        if st is None:
            return False
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(self._ns.local(hpath))
            return True
        if not recursive and self._ns.children(hpath):
            raise _RemoteError("PathIsNotEmptyDirectoryException", f"{hpath} is non empty")
        if hpath == "/":
            return False  # FSDirDeleteOp refuses to delete the root
        shutil.rmtree(self._ns.local(hpath))
        return True
