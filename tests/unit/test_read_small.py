"""`read_small`: a small source's bytes and record, known before anything is written."""

from __future__ import annotations

import hashlib
import io
import os
from typing import TYPE_CHECKING

import pytest

from metatree._transfer import SMALL_FILE, Moved, read_small

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("size", [0, 1, 100_000, SMALL_FILE])
def test_a_small_file_or_bytes_is_read_whole_with_its_record(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = (data, Moved(size, hashlib.sha256(data).hexdigest()))
    assert read_small(path) == expected
    assert read_small(str(path)) == expected
    assert read_small(data) == expected


def test_what_is_not_small_now_is_left_to_the_stream(tmp_path: Path) -> None:
    """None: the caller streams it as before, and that reports what is wrong."""
    large = tmp_path / "large"
    large.write_bytes(b"x" * (SMALL_FILE + 1))
    assert read_small(large) is None
    assert read_small(tmp_path / "missing") is None
    assert read_small(tmp_path) is None  # a directory
    assert read_small(io.BytesIO(b"a file object is the caller's")) is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_is_not_read_and_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_small(fifo) is None  # no writer: a blocking open would wait forever
