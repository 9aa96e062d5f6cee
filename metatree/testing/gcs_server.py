"""A GCS JSON API server for the test session: gcp-storage-emulator behind a faithful layer.

gcp-storage-emulator (PyPI) serves the JSON API that gcsfs speaks, but it ignores every
generation precondition (measured: a second upload with ``ifGenerationMatch=0`` answers 200 and
replaces the object; a stale ``ifGenerationMatch`` on an upload or a delete succeeds; a media
GET with ``generation=<old>`` serves the newest bytes). A backend tested on it as it is would
pass every race by accident. `GCSServer` runs the emulator's own router in this process, on
127.0.0.1 and a free port, behind a layer that does what Google documents:

* **Preconditions, atomically.** Every request is served under one lock, and before the
  emulator stores, deletes or reads an object the layer compares the live generation with the
  request's ``ifGenerationMatch`` / ``ifGenerationNotMatch`` (``0``: the object must not exist)
  and answers ``412 conditionNotMet`` on a mismatch. A resumable upload's conditions are the
  ones of the request that started it, checked when its last chunk lands (as on GCS). A read
  or delete with ``generation=<g>`` of an object whose live generation differs answers 404
  (no object versioning: the old generation is gone).
* **What gcsfs and metatree need that the emulator gets wrong:** media GETs carry
  ``x-goog-generation`` / ``x-goog-metageneration`` headers (the emulator sends none, so a
  read could not name its version); object contents are stored under an escaped name (the
  emulator's store collapses ``a/`` onto ``a`` and ``a//b`` onto ``a/b``); deletes are hard
  (the emulator keeps a soft-deleted copy of every object for 7 days, in memory here); a
  ``DELETE`` of a resumable session URI cancels it (499, as GCS; the emulator answers 501);
  requests are served by a thread each (the emulator's server is single threaded: one slow
  client stalled all); and the emulator's state is not re-serialised as JSON after every
  write (O(objects) per request).

It also counts requests (`requests`: method, object path, query), so request-count tests
can assert what crossed the wire.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, Self

__all__ = ["GCSRequest", "GCSServer", "gcs_options", "make_gcs_bucket"]


@dataclass(frozen=True, slots=True)
class GCSRequest:
    """One request the server received."""

    method: str
    path: str
    """The URL path, percent-decoded (``/storage/v1/b/<bucket>/o/<object>``)."""
    query: dict[str, str]


class _PreconditionFailed(Exception):
    """A request's generation precondition does not hold: answered 412."""


class _Context(threading.local):
    """What the request being served asked for (its query) and what it read (a generation)."""

    query: dict[str, str] | None = None
    served: dict[str, Any] | None = None


def _check(query: dict[str, str], live: dict[str, Any] | None) -> None:
    """Raise `_PreconditionFailed` unless `query`'s conditions hold for the object `live`."""
    generation = "0" if live is None else str(live.get("generation"))
    match = query.get("ifGenerationMatch")
    if match is not None and match != generation:
        raise _PreconditionFailed
    not_match = query.get("ifGenerationNotMatch")
    if not_match is not None and not_match == generation:
        raise _PreconditionFailed
    meta = query.get("ifMetagenerationMatch")
    if meta is not None and (live is None or meta != str(live.get("metageneration"))):
        raise _PreconditionFailed


def _make_storage(enforce: bool) -> Any:
    """Return the emulator's in-memory `Storage`, with the layer's fixes (and checks)."""
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.storage import Storage

    context = _Context()
    check = _check if enforce else lambda query, live: None

    class FaithfulStorage(Storage):  # type: ignore[misc]
        """The emulator's storage, each access checked against the request's preconditions."""

        context: _Context

        def _write_config_to_file(self) -> None:
            """Nothing to persist in memory (the emulator dumps all its state on each write)."""

        def _object_path(self, bucket_name: str, file_name: str) -> str:
            return f"{bucket_name}/{urllib.parse.quote(file_name, safe='')}"

        def _bucket_soft_delete_retention_seconds(self, bucket_name: str) -> int:
            return 0  # hard deletes: no versioning, nothing kept

        def _live(self, bucket_name: str, file_name: str) -> dict[str, Any] | None:
            found: dict[str, Any] | None = self.objects.get(bucket_name, {}).get(file_name)
            return found

        def create_resumable_upload(self, bucket_name: str, file_name: str, file_obj: Any) -> Any:
            file_id = super().create_resumable_upload(bucket_name, file_name, file_obj)
            self.conditions[file_id] = dict(context.query or {})
            return file_id

        def create_file(
            self,
            bucket_name: str,
            file_name: str,
            content: bytes,
            file_obj: Any,
            file_id: str | None = None,
        ) -> None:
            query = self.conditions.pop(file_id, {}) if file_id else (context.query or {})
            check(query, self._live(bucket_name, file_name))
            super().create_file(bucket_name, file_name, content, file_obj, file_id)

        def delete_file(self, bucket_name: str, file_name: str) -> None:
            query = context.query or {}
            live = self._live(bucket_name, file_name)
            if live is not None and query.get("generation") not in (None, live["generation"]):
                raise NotFound
            if live is not None:
                check(query, live)
            super().delete_file(bucket_name, file_name)

        def get_file_obj(self, bucket_name: str, file_name: str) -> Any:
            obj = super().get_file_obj(bucket_name, file_name)
            query = context.query or {}
            if query.get("generation") not in (None, obj["generation"]):
                raise NotFound
            check(query, obj)
            context.served = obj
            return obj

    storage = FaithfulStorage(use_memory_fs=True)
    storage.context = context
    storage.conditions = {}
    return storage


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GCSServer:
    """gcp-storage-emulator behind the precondition layer, on 127.0.0.1 and a free port."""

    def __init__(self, *, enforce_preconditions: bool = True) -> None:
        """Serve with the layer; ``enforce_preconditions=False`` ignores conditions.

        That is the emulator's own behaviour, for the test that shows the layer is what
        makes the races' single winner.
        """
        self.requests: list[GCSRequest] = []
        self._record = threading.Lock()
        self._serve = threading.Lock()
        self._storage = _make_storage(enforce_preconditions)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        """The server's base URL (gcsfs's ``endpoint_url``)."""
        return f"http://127.0.0.1:{self.port}"

    def reset_requests(self) -> None:
        """Forget the requests counted so far."""
        with self._record:
            self.requests.clear()

    def start(self) -> None:
        """Serve in a daemon thread."""
        from gcp_storage_emulator import server

        for name in ("gcp_storage_emulator", "api.object", "api.bucket"):
            # its "Resource not found" errors are the 404s the suites ask for
            logging.getLogger(name).setLevel(logging.CRITICAL)
        outer = self

        class Handler(server.RequestHandler):  # type: ignore[misc]
            # HTTP/1.0, one connection per request, as the emulator serves: with keep-alive
            # a client reused connections the server was closing ("Server disconnected",
            # then a retry after gcsfs's 1-2 s back-off)

            def _route(self, method: str) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
                outer._note(GCSRequest(method, urllib.parse.unquote(parsed.path), query))
                raw = server._read_raw_data(self) or b""  # whole body before the lock
                with contextlib.suppress(KeyError):
                    del self.headers["Transfer-Encoding"]
                del self.headers["Content-Length"]
                self.headers["Content-Length"] = str(len(raw))
                self.rfile = io.BytesIO(raw)
                if (
                    method == "DELETE"
                    and parsed.path.startswith("/upload/")
                    and "upload_id" in query
                ):
                    self._cancel(query["upload_id"])
                    return
                storage = outer._storage
                with outer._serve:
                    storage.context.query = query
                    storage.context.served = None
                    self._generation: dict[str, Any] | None = None
                    self._media = method == "GET" and (
                        query.get("alt") == "media" or parsed.path.startswith("/download/")
                    )
                    try:
                        server.Router(self).handle(method)
                    except _PreconditionFailed:
                        self._fail(
                            HTTPStatus.PRECONDITION_FAILED,
                            "conditionNotMet",
                            "At least one of the pre-conditions you specified did not hold.",
                        )
                    except ConnectionError:  # the client went away (a cancelled request)
                        self.close_connection = True
                    except Exception:  # noqa: BLE001 - an emulator crash (an empty media
                        # upload): answered 500 rather than a closed connection
                        self._fail(
                            HTTPStatus.INTERNAL_SERVER_ERROR, "backendError", "emulator crash"
                        )
                    finally:
                        storage.context.query = None

            def _cancel(self, upload_id: str) -> None:
                with outer._serve:
                    outer._storage.resumable.pop(upload_id, None)
                    outer._storage.conditions.pop(upload_id, None)
                self.send_response(499, "Client Closed Request")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _fail(self, status: HTTPStatus, reason: str, message: str) -> None:
                body = json.dumps(
                    {
                        "error": {
                            "code": status.value,
                            "message": message,
                            "errors": [{"domain": "global", "reason": reason}],
                        }
                    }
                ).encode()
                self.send_response(status.value, status.phrase)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def end_headers(self) -> None:
                served = outer._storage.context.served
                if getattr(self, "_media", False) and served is not None:
                    self.send_header("x-goog-generation", str(served["generation"]))
                    self.send_header("x-goog-metageneration", str(served["metageneration"]))
                super().end_headers()

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def do_PATCH(self) -> None:
                self._route("PATCH")

        self.port = _free_port()
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), partial(Handler, self._storage))
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="gcs-server", daemon=True)
        self._thread.start()

    def _note(self, request: GCSRequest) -> None:
        with self._record:
            self.requests.append(request)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gcs_options(endpoint_url: str) -> dict[str, Any]:
    """Return gcsfs storage options for a test server (anonymous, no credentials looked up)."""
    return {"endpoint_url": endpoint_url, "token": "anon", "project": "metatree-test"}


def make_gcs_bucket(endpoint_url: str, prefix: str = "metatree") -> str:
    """Create a fresh bucket on the server at `endpoint_url` and return its name."""
    import uuid

    import requests

    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    reply = requests.post(
        f"{endpoint_url}/storage/v1/b",
        params={"project": "metatree-test"},
        json={"name": name},
        timeout=30,
    )
    reply.raise_for_status()
    return name
