from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from metatree import Storage, as_storage
from metatree.testing import BackendTests
from metatree.testing._hardening_lock import LockHardeningTests
from metatree.testing._locks import LockTests
from metatree.testing._models_locks import ModelStoreLockTests
from metatree.testing.servers import s3_options

if TYPE_CHECKING:
    from metatree.testing.servers import SeaweedS3Server


class _Storage:
    """Where every test of this module stores: SeaweedFS's S3."""

    @pytest.fixture
    def storage(self, seaweed_server: SeaweedS3Server, seaweed_bucket: str) -> Storage:
        return as_storage(
            f"s3://{seaweed_bucket}/{uuid.uuid4().hex}/db",
            **s3_options(seaweed_server.endpoint_url),
        )


@pytest.mark.seaweedfs
class TestSeaweedFS(_Storage, LockTests, LockHardeningTests, ModelStoreLockTests):
    """The lock tests (and the lock hardening tests) on a real S3 server whose conditional
    writes are atomic.

    SeaweedFS answers contended conditional writes slowly, so the sizes are smaller than on
    local disk while the writers still overlap; the benchmark runs the full sizes.
    """

    updates_per_writer = 20
    puts_per_writer = 10
    torn_write_trials = 40
    bulk_puts = 200
    uploads_per_writer = 2  # one named id and one uuid4 each; 3 on local disk
    switches_per_writer = 2
    alias_kill_trials = 4


@pytest.mark.seaweedfs
class TestBackend(_Storage, BackendTests):
    """The primitives on SeaweedFS, whose S3 conditional writes are atomic: the races run here.

    SeaweedFS answers contended conditional writes slowly: three rounds per race.
    """

    race_rounds = 3
    failed_put_size = 9 * 2**20  # past the first 8 MiB part: the multipart upload is aborted
