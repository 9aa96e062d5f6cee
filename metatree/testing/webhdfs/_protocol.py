"""The WebHDFS wire format: Java exceptions as status and body, parameters, paths, operations.

Everything here is what Hadoop answers or refuses before any file is looked at, so that the
namespace and the operations speak only in HDFS terms.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "/webhdfs/v1"
RESERVED = ".reserved"  # upload staging, inside the root so that os.replace stays atomic
OPS = {
    "GET": {"OPEN", "GETFILESTATUS", "LISTSTATUS", "GETHOMEDIRECTORY"},
    "PUT": {"CREATE", "MKDIRS", "RENAME"},
    "POST": {"APPEND"},
    "DELETE": {"DELETE"},
}
REDIRECTED = {"CREATE", "APPEND", "OPEN"}
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
BY_STATUS = {400: "IllegalArgumentException", 403: "IOException", 404: "FileNotFoundException"}
FNF, FAE, IOE = "FileNotFoundException", "FileAlreadyExistsException", "IOException"
BAD_ARGUMENT = "IllegalArgumentException"
JSON = {"Content-Type": "application/json;charset=utf-8"}
OCTETS = {"Content-Type": "application/octet-stream"}

Reply = tuple[int, dict[str, str], bytes]
"""Status, headers and body of one answer."""


class RemoteError(Exception):
    """A Java exception as WebHDFS reports it: a status and a ``RemoteException`` body."""

    def __init__(self, exception: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        package, default = _JAVA.get(exception, ("java.lang.", 500))
        self.body = {"exception": exception, "javaClassName": package + exception}
        self.body["message"] = message
        self.status = status or default

    def reply(self) -> Reply:
        return json_reply({"RemoteException": self.body}, self.status)


def json_reply(obj: object, status: int = 200) -> Reply:
    return status, dict(JSON), json.dumps(obj).encode()


def parts(hpath: str) -> list[str]:
    return [p for p in hpath.split("/") if p]


def parent(hpath: str) -> str:
    return "/" + "/".join(parts(hpath)[:-1])


def child(hpath: str, name: str) -> str:
    return hpath.rstrip("/") + "/" + name


def normalise(raw: str) -> str:
    """Canonicalise an HDFS path, rejecting what HDFS's isValidName rejects (so never ``..``)."""
    names = parts(raw)
    if any(p in {".", ".."} or ":" in p or "\0" in p for p in names):
        raise RemoteError("InvalidPathException", f"Invalid path name Invalid file name: {raw}")
    if names[:1] == [RESERVED]:
        raise RemoteError("InvalidPathException", f"Invalid path name {raw} is a reserved name")
    return "/" + "/".join(names)


def param(params: dict[str, str], name: str, kind: type[bool | int], default: Any = None) -> Any:
    """Parse a boolean or non-negative long parameter as Hadoop's Param classes do."""
    value = params.get(name, "")
    if not value:
        return default
    if kind is bool and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    if kind is int and value.isascii() and value.isdigit():
        return int(value)
    why = f'Failed to parse "{value}" as {"Boolean" if kind is bool else "a non-negative long"}.'
    raise RemoteError(BAD_ARGUMENT, f'Invalid value for webhdfs parameter "{name}": {why}')


def check_op(method: str, op: str) -> None:
    if op not in OPS.get(method, set()):
        enum = f"org.apache.hadoop.hdfs.web.resources.{method.capitalize()}OpParam.Op"
        msg = f'Invalid value for webhdfs parameter "op": No enum constant {enum}.{op}'
        raise RemoteError(BAD_ARGUMENT, msg)
