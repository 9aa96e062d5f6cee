from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from metatree import Storage, as_storage
from metatree.testing import BackendTests
from metatree.testing._stateful import StatefulTests
from metatree.testing.conformance import BackendConformance
from metatree.testing.servers import s3_options

if TYPE_CHECKING:
    from metatree.testing.servers import MotoS3Server


class _Storage:
    """Where every test of this module stores: moto's S3."""

    @pytest.fixture
    def storage(self, s3_bucket: str, moto_server: MotoS3Server) -> Storage:
        return as_storage(
            f"s3://{s3_bucket}/{uuid.uuid4().hex}/db",
            **s3_options(moto_server.endpoint_url),
        )


@pytest.mark.s3
class TestS3(_Storage, BackendConformance):
    # every step is a few HTTP requests: fewer programs, same length
    state_machine_settings = settings(StatefulTests.state_machine_settings, max_examples=4)
    # moto's If-None-Match is not atomic under contention: the lock tests run on SeaweedFS
    concurrency_safe = False
    bulk_puts = 200  # the lock is taken once whatever the size; 1000 runs on local disk


@pytest.mark.s3
class TestBackend(_Storage, BackendTests):
    """The primitives on moto's S3 (the races run on SeaweedFS: see `concurrency_safe`)."""

    # moto 5 checks If-None-Match and If-Match, then stores, with no lock between (its server
    # is threaded): not atomic by construction, though 45 of 45 races of 8 processes had one
    # winner. The races run on SeaweedFS (test_seaweedfs.py).
    concurrency_safe = False
    failed_put_size = 9 * 2**20  # past the first 8 MiB part: the multipart upload is aborted
