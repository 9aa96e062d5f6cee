"""What metatree adds to s3fs's storage options when it opens an ``s3://`` root itself."""

from __future__ import annotations

import pytest

from metatree import as_storage

pytest.importorskip("s3fs")

OFFLINE = {"anon": True, "endpoint_url": "http://127.0.0.1:9"}  # s3fs connects lazily


def test_the_connection_pool_holds_a_catalogs_reads_in_flight() -> None:
    storage = as_storage("s3://bucket/pool-default", **OFFLINE)
    assert storage.fs.config_kwargs == {"max_pool_connections": 64}
    assert storage.backend.read_concurrency <= 64


def test_a_pool_the_caller_chose_is_kept() -> None:
    chosen = {"max_pool_connections": 5, "retries": {"max_attempts": 2}}
    storage = as_storage("s3://bucket/pool-chosen", config_kwargs=chosen, **OFFLINE)
    assert storage.fs.config_kwargs == chosen
