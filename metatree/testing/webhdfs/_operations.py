"""The WebHDFS operations: one request's parameters in, one `Reply` out.

The namenode answers metadata ops itself and redirects data ops (``CREATE``, ``APPEND``,
``OPEN``) to a datanode URL that carries ``namenoderpcaddress``; the datanode step moves the
bytes. Both live on the same port here, told apart by that parameter as Hadoop's are.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from metatree.testing.webhdfs._protocol import (
    BAD_ARGUMENT,
    FNF,
    IOE,
    OCTETS,
    PREFIX,
    REDIRECTED,
    RemoteError,
    Reply,
    check_op,
    child,
    json_reply,
    normalise,
    param,
)

if TYPE_CHECKING:
    from metatree.testing.webhdfs._namespace import Namespace


@dataclass(frozen=True)
class _Call:
    """One parsed request, as each op's function needs it."""

    op: str
    hpath: str
    params: dict[str, str]
    body: bytes
    user: str
    ip: str
    authority: str  # host:port of this server, for redirect and created-file URLs


def answer(
    ns: Namespace,
    authority: str,
    method: str,
    raw: str,
    params: dict[str, str],
    body: bytes,
    ip: str,
) -> Reply:
    """Serve one request to ``raw`` (the decoded URL path); any failure becomes a `Reply`."""
    if raw != PREFIX and not raw.startswith(PREFIX + "/"):
        return 404, {"Content-Type": "text/plain"}, b"Not Found"
    op = params.get("op", "").upper()
    try:
        check_op(method, op)
        hpath = normalise(raw[len(PREFIX) :])
        user = params.get("doas") or params.get("user.name") or "dr.who"
        call = _Call(op, hpath, params, body, user, ip, authority)
        if "namenoderpcaddress" in params:
            return _create(ns, call) if op == "CREATE" else _datanode(ns, call)
        if op in REDIRECTED:
            return _redirect(ns, call)
        with ns.lock:
            return _namenode(ns, call)
    except RemoteError as e:
        return e.reply()
    except OSError as e:
        return RemoteError(IOE, str(e)).reply()
    except Exception as e:  # noqa: BLE001 - answer a bug with a 500 as Hadoop would
        return RemoteError("RuntimeException", repr(e)).reply()


def _namenode(ns: Namespace, call: _Call) -> Reply:
    """Serve a metadata op; the caller holds the namespace lock."""
    op, hpath, params, user = call.op, call.hpath, call.params, call.user
    st = ns.stat(hpath)  # first, for every op: a file as an ancestor fails them all alike
    if op == "GETHOMEDIRECTORY":
        return json_reply({"Path": f"/user/{user}"})
    if op == "MKDIRS":
        ns.mkdirs(hpath, user)
        return json_reply({"boolean": True})
    if op == "RENAME":
        return _rename(ns, hpath, params)
    if op == "DELETE":
        return json_reply({"boolean": ns.delete(hpath, st, param(params, "recursive", bool))})
    if st is None:
        missing = f"File {hpath} does not exist." if op == "LISTSTATUS" else ""
        raise RemoteError(FNF, missing or f"File does not exist: {hpath}")
    if op == "GETFILESTATUS" or not stat.S_ISDIR(st.st_mode):
        status = ns.status(hpath, st, "")
        key = "FileStatus" if op == "GETFILESTATUS" else "FileStatuses"
        return json_reply({key: status if op == "GETFILESTATUS" else {"FileStatus": [status]}})
    paths = [(child(hpath, n), n) for n in ns.children(hpath)]
    statuses = [ns.status(p, os.stat(ns.local(p)), n) for p, n in paths]
    return json_reply({"FileStatuses": {"FileStatus": statuses}})


def _rename(ns: Namespace, hpath: str, params: dict[str, str]) -> Reply:
    """``rename`` without ``renameoptions`` (answers a boolean), ``rename2`` with them."""
    destination = params.get("destination", "")
    if not destination.startswith("/"):
        msg = f'Invalid parameter value: destination = "{destination}" is not absolute.'
        raise RemoteError(BAD_ARGUMENT, msg)
    dst, options = normalise(destination), params.get("renameoptions", "").upper()
    ns.stat(dst)  # Hadoop resolves (and traverse-checks) both paths first
    if not options:
        return json_reply({"boolean": ns.rename(hpath, dst)})
    if set(options.split(",")) - {"NONE", "OVERWRITE", "TO_TRASH"}:
        msg = f'Invalid value for webhdfs parameter "renameoptions": {options}'
        raise RemoteError(BAD_ARGUMENT, msg)
    ns.rename2(hpath, dst, "OVERWRITE" in options.split(","))
    return 200, dict(OCTETS), b""


def _redirect(ns: Namespace, call: _Call) -> Reply:
    """Answer the namenode step of a data op with a datanode URL, as Hadoop does."""
    op, hpath, params, authority = call.op, call.hpath, call.params, call.authority
    offset = param(params, "offset", int, 0)
    param(params, "length", int)
    if op != "CREATE":  # the namenode looks OPEN/APPEND targets up, but checks no CREATE
        with ns.lock:
            st = ns.stat(hpath)
        if st is None:
            raise RemoteError(FNF, f"File {hpath} not found.")
        size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
        if op == "OPEN" and offset >= size > 0:
            msg = f"Offset={offset} out of the range [0, {size}); OPEN, path={hpath}"
            raise RemoteError(IOE, msg)
    query = {k: v for k, v in params.items() if k != "noredirect"}
    if op == "CREATE":
        query.setdefault("overwrite", "false")
    query["namenoderpcaddress"] = authority
    location = f"http://{authority}{PREFIX}{quote(hpath)}?{urlencode(query)}"
    if param(params, "noredirect", bool):
        return json_reply({"Location": location})
    return 307, {"Location": location, **OCTETS}, b""


def _datanode(ns: Namespace, call: _Call) -> Reply:
    """Serve the datanode step of ``APPEND`` or ``OPEN``: move the bytes."""
    op, hpath, params, ip = call.op, call.hpath, call.params, call.ip
    if op not in REDIRECTED:
        raise RemoteError(BAD_ARGUMENT, f"Invalid operation {op}")
    with ns.lock:
        if op == "APPEND":
            ns.file(hpath, f"Failed to append to non-existent file {hpath} for client {ip}")
            with open(ns.local(hpath), "ab") as f:
                f.write(call.body)
            return 200, {}, b""
        st = ns.file(hpath, f"File does not exist: {hpath}")
        offset, length = param(params, "offset", int, 0), param(params, "length", int, -1)
        if offset > st.st_size:
            raise RemoteError("EOFException", "Cannot seek after EOF")
        with open(ns.local(hpath), "rb") as f:
            f.seek(offset)
            data = f.read(length)
    return 200, dict(OCTETS), data


def _create(ns: Namespace, call: _Call) -> Reply:
    """Stage the body, then check-and-create atomically under the namespace lock."""
    hpath, params, user, ip = call.hpath, call.params, call.user, call.ip
    overwrite = param(params, "overwrite", bool, False)  # the REST default is false
    create_parent = param(params, "createparent", bool, True)
    fd, staged = tempfile.mkstemp(dir=ns.staging)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(call.body)
        with ns.lock:
            ns.create(
                hpath, staged, overwrite=overwrite, create_parent=create_parent, user=user, ip=ip
            )
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
    return 201, {"Location": f"hdfs://{call.authority}{quote(hpath)}"}, b""
