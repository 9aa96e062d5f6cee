"""Every code snippet of the metatreedb README (shared/seeds/001_*.txt) runs as written.

The seed is the README flattened to text, which lost the indentation of loop bodies; the
snippets below restore it and change nothing else: same paths (/tmp/my-model-repository),
same hosts and ports (WebHDFS on localhost:9870, S3 on localhost:5000), same imports
(``from metatree import Metatree`` and ``from metatreedb import Metatree``). They run in one
subprocess, in order, sharing one namespace, as a reader pasting them into Python would.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from metatree._records import records_of, user_metadata
from metatree.testing.servers import MotoS3Server
from metatree.testing.webhdfs import WebHDFSServer

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = "/tmp/my-model-repository"

LOCAL_SNIPPETS = [
    """
from metatree import Metatree
metatree = Metatree(
    "/tmp/my-model-repository",
    (
        "model",
        "version",
    ),
)
""",
    """
import uuid
import pickle
from pathlib import Path
for i in range(1, 4):
    awful_uuid = uuid.uuid4()
    trained = Path("/tmp/my-model-repository/trained.pkl")
    with open(trained, "wb") as f:
        pickle.dump(awful_uuid, f)
    metatree.put(f"my-awful-model/v{i}", trained)
""",
    """
metatree.find("my-awful-model")
metatree.update(active="v2")
for i in range(1, 4):
    metatree.find(f"my-awful-model/v{i}").update(model_file="trained.pkl")
""",
    """
metatree.find("my-awful-model/<active>")
print(metatree.location)
# This returns `/tmp/my-model-repository/my-awful-model/v2
""",
    """
file = metatree.get("my-awful-model/<active>/<model_file>")
print(file)
# The given path translates to `my-awful-model/v2/trained.pkl`,
# and it returns generator object
""",
]

WEBHDFS_SNIPPET = """
from metatreedb import Metatree
metatree = Metatree(
    "webhdfs:///tmp/my-model-repository",
    ("model", "version"),
    host="localhost",
    port=9870,
    user="hadoop",
)
"""

S3_SNIPPET = """
from metatreedb import Metatree
metatree = Metatree(
    "s3://your-awesome-bucket/tmp/my-model-repository",
    ("model", "version"),
    endpoint_url="http://localhost:5000",
    key="testing",
    secret="testing",
)
"""

# appended after the snippets: report what they did, for the assertions below
REPORT = """
import json as _json, pickle as _pickle, uuid as _uuid
_loaded = _pickle.loads(b"".join(metatree.get("my-awful-model/<active>/<model_file>")))
print("REPORT " + _json.dumps({"loaded_uuid": isinstance(_loaded, _uuid.UUID),
      "keys": list(metatree.keys)}))
"""


def run_snippets(snippets: list[str]) -> subprocess.CompletedProcess[str]:
    code = "\n".join(textwrap.dedent(s) for s in snippets)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
        check=False,
    )


@pytest.fixture
def fixed_repository() -> Iterator[Path]:
    """The seed writes to /tmp/my-model-repository: move whatever is there aside meanwhile."""
    path = Path(REPO)
    aside = Path(f"{REPO}.aside-{uuid.uuid4().hex}")
    if path.exists():
        path.rename(aside)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if aside.exists():
            aside.rename(path)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_local_snippets(fixed_repository: Path) -> None:
    result = run_snippets([*LOCAL_SNIPPETS, REPORT])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"file://{REPO}/my-awful-model/v2"
    assert lines[1].startswith("<generator object")
    report = json.loads(lines[-1].removeprefix("REPORT "))
    assert report == {"loaded_uuid": True, "keys": ["model", "version"]}
    # the files and metadata the README shows
    model = fixed_repository / "my-awful-model"
    assert json.loads((model / "metadata.json").read_bytes()) == {
        "children": ["v1", "v2", "v3"],
        "active": "v2",
    }
    for i in range(1, 4):
        version = model / f"v{i}"
        assert sorted(os.listdir(version)) == ["metadata.json", "trained.pkl"]
        stored = json.loads((version / "metadata.json").read_bytes())
        assert list(records_of(stored, str(version))) == ["trained.pkl"]  # the file's record
        assert user_metadata(stored) == {"model_file": "trained.pkl"}
    assert json.loads((fixed_repository / "metadata.json").read_bytes()) == {
        "children": ["my-awful-model"]
    }


@pytest.mark.webhdfs
def test_webhdfs_snippet(tmp_path: Path) -> None:
    if not port_free(9870):
        pytest.skip("port 9870 (the README's WebHDFS port) is in use on this machine")
    with WebHDFSServer(str(tmp_path), port=9870) as server:
        result = run_snippets([WEBHDFS_SNIPPET, "print(metatree.root, metatree.keys)"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [
            "webhdfs:///tmp/my-model-repository",
            "('model',",
            "'version')",
        ]
        renamed_to = {r.params.get("destination") for r in server.requests if r.op == "RENAME"}
        assert "/tmp/my-model-repository/.metatree" in renamed_to


@pytest.mark.s3
def test_s3_snippet() -> None:
    if not port_free(5000):
        pytest.skip("port 5000 (the README's S3 port) is in use on this machine")
    with MotoS3Server(port=5000) as server:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="your-awesome-bucket")
        result = run_snippets([S3_SNIPPET, "print(metatree.root)"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "s3://your-awesome-bucket/tmp/my-model-repository"
        listed = client.list_objects_v2(Bucket="your-awesome-bucket")["Contents"]
        keys = sorted(o["Key"] for o in listed)
        assert keys == [
            "tmp/my-model-repository/.metatree",
            "tmp/my-model-repository/metadata.json",
        ]
        client.close()
