from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import fsspec
import pytest
import requests

from metatree.testing.webhdfs import WebHDFSServer

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.webhdfs


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebHDFSServer]:
    with WebHDFSServer(root_dir=str(tmp_path / "hdfs")) as srv:
        yield srv


@pytest.fixture
def fs(server: WebHDFSServer) -> Iterator[Any]:
    webhdfs = fsspec.filesystem(
        "webhdfs", host="127.0.0.1", port=server.port, user="test", skip_instance_cache=True
    )
    yield webhdfs
    webhdfs.session.close()


def call(
    fs: Any, op: str, path: str = "/", method: str = "GET", **params: Any
) -> requests.Response:
    """Like ``fs._call`` but never raises and never follows redirects, to inspect raw answers."""
    return fs.session.request(  # type: ignore[no-any-return]
        method,
        fs.url + quote(path),
        params={"op": op, "user.name": "test", **params},
        allow_redirects=False,
    )


def create(fs: Any, path: str, data: bytes, **params: Any) -> requests.Response:
    """The two-step CREATE: namenode 307, then the body to the datanode."""
    first = call(fs, "CREATE", path, "PUT", **params)
    assert first.status_code == 307
    assert first.content == b""
    return fs.session.put(first.headers["Location"], data=data)  # type: ignore[no-any-return]


def remote_exception(response: requests.Response) -> str:
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()["RemoteException"]
    assert set(body) == {"exception", "javaClassName", "message"}
    assert body["javaClassName"].endswith("." + body["exception"])
    return str(body["exception"])


# -- through fsspec ---------------------------------------------------------------------------


def test_mkdir_ls_info(fs: Any) -> None:
    fs.mkdir("/a/b/c")
    fs.mkdir("/a/b/c")  # existing directory is fine
    assert fs.ls("/") == ["/a"]
    assert fs.ls("/a/b") == ["/a/b/c"]
    info = fs.info("/a/b")
    assert info["type"] == "directory"
    assert info["size"] == 0
    assert info["childrenNum"] == 1
    assert info["permission"] == "755"
    assert info["owner"] == "test"
    assert fs.isdir("/a/b/c")
    assert not fs.exists("/nope")
    with pytest.raises(FileNotFoundError):
        fs.info("/nope")
    with pytest.raises(FileNotFoundError):
        fs.ls("/nope")


def test_file_status_fields(fs: Any) -> None:
    fs.pipe_file("/d/f.bin", b"hello")
    status = call(fs, "GETFILESTATUS", "/d/f.bin").json()["FileStatus"]
    assert set(status) >= {
        "accessTime",
        "blockSize",
        "group",
        "length",
        "modificationTime",
        "owner",
        "pathSuffix",
        "permission",
        "replication",
        "type",
        "fileId",
        "childrenNum",
    }
    assert status["type"] == "FILE"
    assert status["length"] == 5
    assert status["pathSuffix"] == ""
    assert status["permission"] == "644"
    assert status["owner"] == "test"
    assert abs(status["modificationTime"] - time.time() * 1000) < 60_000
    listing = call(fs, "LISTSTATUS", "/d/f.bin").json()["FileStatuses"]["FileStatus"]
    assert [(s["pathSuffix"], s["length"]) for s in listing] == [("", 5)]


def test_write_and_read(fs: Any) -> None:
    with fs.open("/data/x.txt", "wb") as f:
        f.write(b"0123456789")
    fs.pipe_file("/data/y.txt", b"abc")
    fs.pipe_file("/data/empty", b"")
    assert fs.cat_file("/data/x.txt") == b"0123456789"
    assert fs.cat_file("/data/x.txt", start=2, end=5) == b"234"
    assert fs.cat_file("/data/x.txt", start=7) == b"789"
    assert fs.cat_file("/data/x.txt", start=-3) == b"789"
    assert fs.cat_file("/data/x.txt", start=20) == b""
    assert fs.cat_file("/data/empty") == b""
    assert fs.size("/data/y.txt") == 3
    fs.pipe_file("/data/y.txt", b"replaced")  # fsspec writes with overwrite=true
    assert fs.cat_file("/data/y.txt") == b"replaced"
    detail = fs.ls("/data", detail=True)
    assert [(d["name"], d["type"], d["size"]) for d in detail] == [
        ("/data/empty", "file", 0),
        ("/data/x.txt", "file", 10),
        ("/data/y.txt", "file", 8),
    ]
    big = bytes(range(256)) * 40_000  # > fsspec's 5 MiB block: several APPENDs
    fs.pipe_file("/data/big", big)
    assert fs.cat_file("/data/big") == big
    assert fs.cat_file("/data/big", start=5_000_000, end=5_000_010) == big[5_000_000:5_000_010]


def test_rm_and_mv(fs: Any, server: WebHDFSServer) -> None:
    fs.pipe_file("/t/a/1", b"1")
    fs.pipe_file("/t/a/2", b"2")
    fs.mv("/t/a", "/t/b")
    assert fs.ls("/t") == ["/t/b"]
    assert fs.cat_file("/t/b/2") == b"2"
    fs.rm("/t/b/1")
    assert fs.ls("/t/b") == ["/t/b/2"]
    with pytest.raises(RuntimeError, match="non empty"):
        fs.rm("/t")
    fs.rm("/t", recursive=True)
    assert not fs.exists("/t")
    assert fs.ls("/") == []
    assert os.listdir(server.root_dir) == [".reserved"]  # staging area, hidden from clients


# -- raw protocol -----------------------------------------------------------------------------


def test_create_redirects_without_checking(fs: Any) -> None:
    fs.pipe_file("/f", b"x")
    first = call(fs, "CREATE", "/f", "PUT")
    assert first.status_code == 307
    location = first.headers["Location"]
    assert location.startswith(f"{fs.url}/f?")
    assert "overwrite=false" in location
    assert "user.name=test" in location
    second = fs.session.put(location, data=b"new")
    assert second.status_code == 403  # overwrite defaults to false
    assert remote_exception(second) == "FileAlreadyExistsException"
    assert fs.cat_file("/f") == b"x"
    third = create(fs, "/f", b"new", overwrite="true")
    assert third.status_code == 201
    assert third.content == b""
    assert fs.cat_file("/f") == b"new"
    # noredirect answers the datanode URL as JSON
    answer = call(fs, "CREATE", "/g", "PUT", noredirect="true")
    assert answer.status_code == 200
    assert "namenoderpcaddress" in answer.json()["Location"]


def test_create_through_followed_redirect(fs: Any) -> None:
    response = fs._call("CREATE", "put", "/deep/new/file", data=b"payload")
    assert response.status_code == 201
    assert fs.cat_file("/deep/new/file") == b"payload"
    assert fs.isdir("/deep/new")


def test_chunked_bodies(fs: Any) -> None:
    first = call(fs, "CREATE", "/streamed", "PUT")
    second = fs.session.put(first.headers["Location"], data=iter([b"ab", b"", b"cd" * 5000]))
    assert second.request.headers["Transfer-Encoding"] == "chunked"
    assert second.status_code == 201
    appended = call(fs, "APPEND", "/streamed", "POST")
    assert fs.session.post(appended.headers["Location"], data=iter([b"!"])).status_code == 200
    assert fs.cat_file("/streamed") == b"ab" + b"cd" * 5000 + b"!"  # same keep-alive link


def test_create_errors(fs: Any) -> None:
    fs.mkdir("/dir")
    fs.pipe_file("/file", b"x")
    over_dir = create(fs, "/dir", b"y", overwrite="true")
    assert over_dir.status_code == 403
    assert remote_exception(over_dir) == "FileAlreadyExistsException"
    under_file = create(fs, "/file/child", b"y")
    assert under_file.status_code == 403
    assert remote_exception(under_file) == "ParentNotDirectoryException"
    no_parent = create(fs, "/missing/child", b"y", createparent="false")
    assert no_parent.status_code == 404
    assert remote_exception(no_parent) == "FileNotFoundException"


def test_create_race_has_one_winner(fs: Any, server: WebHDFSServer) -> None:
    locations = []
    for _ in range(16):
        first = call(fs, "CREATE", "/race", "PUT", overwrite="false")
        assert first.status_code == 307
        locations.append(first.headers["Location"])
    barrier = threading.Barrier(16)
    results: dict[int, requests.Response] = {}

    def put(i: int) -> None:
        with requests.Session() as session:
            barrier.wait()
            results[i] = session.put(locations[i], data=f"body-{i}".encode() * 1000)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r.status_code == 201]
    assert len(winners) == 1
    losers = [r for r in results.values() if r.status_code != 201]
    assert len(losers) == 15
    assert all(r.status_code == 403 for r in losers)
    assert {remote_exception(r) for r in losers} == {"FileAlreadyExistsException"}
    assert fs.cat_file("/race") == f"body-{winners[0]}".encode() * 1000
    assert list((Path(server.root_dir) / ".reserved").iterdir()) == []  # no staged leftovers


def test_empty_file_visible_between_create_and_append(fs: Any) -> None:
    assert create(fs, "/log", b"").status_code == 201
    assert fs.info("/log")["size"] == 0
    first = call(fs, "APPEND", "/log", "POST")
    assert first.status_code == 307
    assert fs.session.post(first.headers["Location"], data=b"abc").status_code == 200
    assert fs.cat_file("/log") == b"abc"
    missing = call(fs, "APPEND", "/nope", "POST")
    assert missing.status_code == 404
    assert remote_exception(missing) == "FileNotFoundException"


def test_open(fs: Any) -> None:
    fs.pipe_file("/o", b"0123456789")
    whole = fs._call("OPEN", path="/o")
    assert whole.content == b"0123456789"
    assert whole.headers["Content-Type"] == "application/octet-stream"
    assert fs._call("OPEN", path="/o", offset=3, length=4).content == b"3456"
    assert fs._call("OPEN", path="/o", offset=8, length=100).content == b"89"
    out_of_range = call(fs, "OPEN", "/o", offset=10)
    assert out_of_range.status_code == 403
    assert remote_exception(out_of_range) == "IOException"
    negative = call(fs, "OPEN", "/o", offset=-1)
    assert negative.status_code == 400
    assert remote_exception(negative) == "IllegalArgumentException"
    missing = call(fs, "OPEN", "/nope")
    assert missing.status_code == 404
    fs.mkdir("/dir")
    on_dir = call(fs, "OPEN", "/dir")
    assert on_dir.status_code == 307  # the namenode only checks existence
    from_datanode = fs.session.get(on_dir.headers["Location"])
    assert from_datanode.status_code == 404
    assert "Path is not a file" in from_datanode.json()["RemoteException"]["message"]


def test_mkdirs_errors(fs: Any) -> None:
    fs.pipe_file("/file", b"x")
    over_file = call(fs, "MKDIRS", "/file", "PUT")
    assert over_file.status_code == 403
    assert remote_exception(over_file) == "FileAlreadyExistsException"
    under_file = call(fs, "MKDIRS", "/file/sub/dir", "PUT")
    assert under_file.status_code == 403
    assert remote_exception(under_file) == "ParentNotDirectoryException"
    assert call(fs, "MKDIRS", "/ok/1", "PUT").json() == {"boolean": True}


def test_rename_plain(fs: Any) -> None:
    fs.pipe_file("/src", b"s")
    fs.pipe_file("/dst", b"d")
    fs.mkdir("/dir")

    def rename(src: str, dst: str) -> Any:
        response = fs._call("RENAME", "put", src, destination=dst)
        assert response.status_code == 200
        return response.json()

    assert rename("/src", "/dst") == {"boolean": False}  # existing file
    assert rename("/nope", "/x") == {"boolean": False}  # missing source
    assert rename("/src", "/no/parent") == {"boolean": False}
    assert rename("/dir", "/dir/sub") == {"boolean": False}  # into itself
    assert rename("/src", "/src") == {"boolean": True}
    assert fs.cat_file("/dst") == b"d"
    assert rename("/src", "/dir") == {"boolean": True}  # into the directory
    assert fs.ls("/dir") == ["/dir/src"]
    assert rename("/dst", "/dir/renamed") == {"boolean": True}
    assert fs.cat_file("/dir/renamed") == b"d"
    fs.mkdir("/other")
    assert rename("/dir", "/other") == {"boolean": True}
    assert fs.ls("/other/dir") == ["/other/dir/renamed", "/other/dir/src"]
    relative = call(fs, "RENAME", "/other", "PUT", destination="x")
    assert relative.status_code == 400


def test_rename_with_options(fs: Any) -> None:
    fs.pipe_file("/a", b"a")
    fs.pipe_file("/b", b"b")
    fs.mkdir("/full/x")
    fs.mkdir("/empty")

    def rename2(src: str, dst: str, options: str) -> requests.Response:
        return call(fs, "RENAME", src, "PUT", destination=dst, renameoptions=options)

    refused = rename2("/a", "/b", "NONE")
    assert refused.status_code == 403
    assert remote_exception(refused) == "FileAlreadyExistsException"
    replaced = rename2("/a", "/b", "OVERWRITE")
    assert replaced.status_code == 200
    assert replaced.content == b""
    assert not fs.exists("/a")
    assert fs.cat_file("/b") == b"a"
    assert rename2("/missing", "/c", "OVERWRITE").status_code == 404
    assert rename2("/b", "/no/parent", "OVERWRITE").status_code == 404
    not_empty = rename2("/empty", "/full", "OVERWRITE")
    assert not_empty.status_code == 403
    assert remote_exception(not_empty) == "IOException"
    assert rename2("/full", "/empty", "OVERWRITE").status_code == 200
    assert fs.ls("/empty") == ["/empty/x"]
    assert rename2("/b", "/empty", "OVERWRITE").status_code == 403  # file over directory
    assert rename2("/b", "/c", "NONE").status_code == 200
    assert fs.cat_file("/c") == b"a"


def test_delete(fs: Any) -> None:
    fs.pipe_file("/d/f", b"x")
    not_empty = call(fs, "DELETE", "/d", "DELETE")
    assert not_empty.status_code == 403
    assert remote_exception(not_empty) == "PathIsNotEmptyDirectoryException"
    assert call(fs, "DELETE", "/missing", "DELETE").json() == {"boolean": False}
    assert call(fs, "DELETE", "/", "DELETE", recursive="true").json() == {"boolean": False}
    assert fs.exists("/d/f")
    assert call(fs, "DELETE", "/d/f", "DELETE").json() == {"boolean": True}
    assert call(fs, "DELETE", "/d", "DELETE", recursive="false").json() == {"boolean": True}
    assert not fs.exists("/d")


def test_errors_and_misc(fs: Any) -> None:
    missing = call(fs, "GETFILESTATUS", "/nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "RemoteException": {
            "exception": "FileNotFoundException",
            "javaClassName": "java.io.FileNotFoundException",
            "message": "File does not exist: /nope",
        }
    }
    unknown = call(fs, "FROBNICATE")
    assert unknown.status_code == 400
    assert remote_exception(unknown) == "IllegalArgumentException"
    with pytest.raises(ValueError, match="FROBNICATE"):
        fs._call("FROBNICATE")
    wrong_method = call(fs, "MKDIRS", "/x", "GET")
    assert wrong_method.status_code == 400
    assert fs.home_directory() == "/user/test"
    assert call(fs, "GETHOMEDIRECTORY", doas="alice").json() == {"Path": "/user/alice"}
    assert call(fs, "GETFILESTATUS", "/", delegation="tok").status_code == 200
    bad_bool = call(fs, "DELETE", "/x", "DELETE", recursive="maybe")
    assert bad_bool.status_code == 400


def test_paths_cannot_escape(fs: Any, server: WebHDFSServer, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s")
    for raw in ["/webhdfs/v1/../secret", "/webhdfs/v1/a/%2E%2E/%2E%2E/secret"]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port)  # sends ".." verbatim
        try:
            conn.request("GET", raw + "?op=GETFILESTATUS")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 400
        assert b'"InvalidPathException"' in body
    escape = call(fs, "RENAME", "/", "PUT", destination="/../../escaped")
    assert escape.status_code == 400
    assert remote_exception(escape) == "InvalidPathException"
    reserved = call(fs, "MKDIRS", "/.reserved/x", "PUT")
    assert reserved.status_code == 400
    assert not (tmp_path / "escaped").exists()


# -- fault injection and records --------------------------------------------------------------


def test_fail_next_status(fs: Any, server: WebHDFSServer) -> None:
    fs.mkdir("/d")
    server.fail_next(op="GETFILESTATUS", status=500)
    with pytest.raises(RuntimeError, match="Injected fault"):
        fs.info("/d")
    assert fs.info("/d")["type"] == "directory"
    server.fail_next(2, status=503)
    with pytest.raises(requests.HTTPError):
        fs.ls("/d")
    with pytest.raises(requests.HTTPError):
        fs.ls("/d")
    assert fs.ls("/d") == []
    server.fail_next(op="CREATE", datanode=True, status=403)
    with pytest.raises(requests.HTTPError):
        fs.pipe_file("/d/f", b"x")
    assert not fs.exists("/d/f")


def test_fail_next_drop(fs: Any, server: WebHDFSServer) -> None:
    fs.mkdir("/d")
    server.fail_next(drop=True)
    with pytest.raises(requests.ConnectionError):
        fs.info("/d")
    assert fs.info("/d")["type"] == "directory"
    server.fail_next(op="MKDIRS", drop=True, after=True)  # a lost reply: the op happened
    with pytest.raises(requests.ConnectionError):
        fs.mkdir("/e")
    assert fs.isdir("/e")
    assert [r.status for r in server.requests if r.op == "MKDIRS"] == [200, None]


def test_request_records(fs: Any, server: WebHDFSServer) -> None:
    fs.mkdir("/d")
    server.reset_counters()
    assert server.requests == []
    fs.pipe_file("/d/f", b"abc")
    ops = [(r.method, r.op, r.datanode, r.status) for r in server.requests]
    assert ops == [
        ("PUT", "CREATE", False, 307),
        ("PUT", "CREATE", True, 201),
        ("POST", "APPEND", False, 307),
        ("POST", "APPEND", True, 200),
    ]
    assert all(r.path == "/d/f" for r in server.requests)
    assert server.requests[0].params["user.name"] == "test"
    call(fs, "GETFILESTATUS", "/missing")
    assert server.requests[-1].status == 404


def test_stop_with_idle_keepalive_connection() -> None:
    server = WebHDFSServer().start()
    root = server.root_dir
    session = requests.Session()
    try:
        url = f"http://127.0.0.1:{server.port}/webhdfs/v1/?op=GETFILESTATUS"
        assert session.get(url).status_code == 200
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
    finally:
        session.close()
    assert not os.path.exists(root)
