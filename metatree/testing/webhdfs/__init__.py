"""An in-process fake of the Hadoop 3 WebHDFS REST API, for tests.

Hadoop cannot be installed where the test suite runs, yet metatree must be exercised against
fsspec's WebHDFS client over real HTTP. This server speaks WebHDFS v1 (namenode and datanode in
one process) from a local directory and reproduces the Hadoop behaviour that matters for
correctness: two-step writes through a 307 redirect, ``overwrite=false`` as an atomic
check-and-create, HDFS ``rename``/``rename2`` semantics, ``RemoteException`` bodies with the
status mapping of Hadoop's ``ExceptionHandler``, and fault injection for retry tests.

One concern a module:

- ``_server``: `WebHDFSServer` (start/stop, recorded `RequestRecord` s, fault-injection API);
- ``_handler``: the HTTP layer (keep-alive, chunked bodies), which interprets nothing;
- ``_operations``: each op's parameters to a reply, the namenode redirect and datanode step;
- ``_namespace``: HDFS namespace semantics (create, rename, rename2, delete) on a directory;
- ``_protocol``: the wire format (Java exceptions, parameter parsing, path rules);
- ``_faults``: injected failures, dropped connections and stalls.
"""

from __future__ import annotations

from metatree.testing.webhdfs._server import RequestRecord, WebHDFSServer

__all__ = ["RequestRecord", "WebHDFSServer"]
