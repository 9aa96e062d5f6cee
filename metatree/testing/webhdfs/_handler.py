"""The HTTP layer: a threading server and a keep-alive handler that hand each request on."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from metatree.testing.webhdfs._protocol import Reply


class HTTPServer(ThreadingHTTPServer):
    """Serve with `Handler`, passing each request to `serve` and each connection to `track`."""

    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 makes bursts of concurrent clients get resets

    def __init__(
        self,
        address: tuple[str, int],
        serve: Callable[[Handler], None],
        track: Callable[[socket.socket, bool], None],
    ) -> None:
        self.serve, self.track = serve, track
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients hanging up mid-request are routine in fault-injection tests."""


class Handler(BaseHTTPRequestHandler):
    """One connection: reads whole requests and writes whole replies, never interpreting them."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real Jetty/Netty servers do
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid a 40 ms stall
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing, so that test output stays clean."""

    def do_GET(self) -> None:
        self.server.serve(self)

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

    def send_reply(self, reply: Reply) -> None:
        status, headers, body = reply
        try:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True
