"""The whole conformance suite again, with format v2 from the fourth child on.

Issue 16: every behaviour must hold on nodes whose index is a log (docs/format.md, "Format
v2"), on every backend. `METATREE_INDEX_THRESHOLD` sets the default threshold of every tree
opened in the test, writers in subprocesses included (they inherit the environment), so
each test's larger nodes (a model with several versions, the bulk puts, the state machine's
trees) switch to the log exactly as a large production node would.
"""

from __future__ import annotations

import pytest

from metatree._core import index
from tests.backends import test_azure, test_gcs, test_local, test_memory, test_s3, test_webhdfs

THRESHOLD = 1


class _Log:
    """Run every test of the class with a threshold of `THRESHOLD` children."""

    @pytest.fixture(autouse=True)
    def _index_threshold(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(index.THRESHOLD_ENV, str(THRESHOLD))


class TestMemoryV2(_Log, test_memory.TestMemory):
    """Every behaviour on fsspec's memory filesystem, large nodes in format v2."""


class TestLocalV2(_Log, test_local.TestLocal):
    """Local disk, large nodes in format v2: the subset that grows a node past one child.

    Every behaviour runs in v2 on memory; local disk keeps the tests that reach v2 (its
    primitives under the log), as the remote backends do: the rest repeats the first run.
    """


@pytest.mark.s3
class TestS3V2(_Log, test_s3.TestS3):
    """Every behaviour on S3 (moto), large nodes in format v2."""


@pytest.mark.azure
class TestAzureV2(_Log, test_azure.TestAzure):
    """Every behaviour on Azure (Azurite), large nodes in format v2."""


@pytest.mark.gcs
class TestGCSV2(_Log, test_gcs.TestGCS):
    """Every behaviour on GCS (the test server, the opt-in lock), large nodes in format v2."""


@pytest.mark.webhdfs
class TestWebHDFSV2(_Log, test_webhdfs.TestWebHDFS):
    """Every behaviour on WebHDFS, large nodes in format v2."""


def test_v2_subset_names_exist() -> None:
    """Every test the remote v2 runs keep is a test of the suite (none renamed away)."""
    from tests.backends.conftest import SUBSET

    names = {n for n in dir(test_local.TestLocal) if n.startswith("test_")}
    assert sorted(SUBSET - names) == []
    assert len(SUBSET) > 50
