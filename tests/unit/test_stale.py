"""How fsck reads a storage's modification time of the lock object (metatree._stale)."""

from __future__ import annotations

import datetime

import pytest

from metatree._stale import _seconds

_WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("details", "seconds"),
    [
        ({"LastModified": _WHEN}, _WHEN.timestamp()),  # s3fs
        ({"mtime": _WHEN.timestamp(), "created": 1.0}, _WHEN.timestamp()),  # local disk
        ({"modificationTime": int(_WHEN.timestamp() * 1000)}, _WHEN.timestamp()),  # WebHDFS, ms
        ({"created": _WHEN}, _WHEN.timestamp()),  # fsspec's memory filesystem
        ({"LastModified": "", "size": 3}, None),  # nothing usable: the holder's clock decides
        ({"mtime": True}, None),
    ],
)
def test_modification_time_is_read_in_seconds(
    details: dict[str, object], seconds: float | None
) -> None:
    assert _seconds(details) == seconds
