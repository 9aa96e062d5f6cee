"""Binary streams over memory, so that a data store value is never copied to a temporary file.

A `DataStore` value goes from the object to the tree, and back, without a local copy:

- `BufferReader` reads a sequence of buffers that already exist (a ``.npy`` header and the
  array's own memory): the put streams from the value itself.
- `ChunkReader` reads the chunks of a stored file as they arrive (verified against the
  file's record as they pass: `metatree._core.integrity.verified`), so a loader fills its own
  buffers (the array it returns) straight from the download.

Both know their `size` in advance (a put tells its progress, a loader sizes its buffers by
it and refuses a header that claims more than the file holds).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["BufferReader", "ChunkReader", "stream_size"]


class BufferReader(io.RawIOBase):
    """A seekable, read-only stream of the concatenation of `buffers`, copying none of them.

    The buffers must not change while the stream is read (the caller holds them).
    """

    def __init__(self, buffers: Iterable[ReadableBuffer]) -> None:
        super().__init__()
        self._parts = [memoryview(b).cast("B") for b in buffers]
        self.size = sum(len(p) for p in self._parts)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        done, start = 0, 0
        for part in self._parts:  # few parts (a header and a body): a scan is enough
            end = start + len(part)
            at = self._pos + done
            if at < end and done < len(out):
                n = min(end - at, len(out) - done)
                out[done : done + n] = part[at - start : at - start + n]
                done += n
            start = end
        self._pos += done
        return done

    def close(self) -> None:
        for part in self._parts:
            part.release()
        self._parts = []
        super().close()


class ChunkReader(io.RawIOBase):
    """A forward-only stream of `chunks` (a stored file as it downloads), `size` bytes long.

    `size` is what the file's record says; the chunks are checked against the record by
    whoever yields them, at the latest when their end is read (`finish`). After `finish`,
    `tell` is the number of bytes the file held. Closing the stream closes the iterator (and
    the download behind it).
    """

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        super().__init__()
        self._chunks = chunks
        self._chunk = memoryview(b"")
        self._pos = 0
        self.size = size
        self.failed: Exception | None = None
        """What the download raised, if it failed: the cause, whatever a loader made of it."""

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill `buffer`, short only at the end: loaders (pickle) take a short read for one."""
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out):
            if not self._chunk:
                chunk = self._next()
                if chunk is None:
                    break
                self._chunk = memoryview(chunk).cast("B")
                continue
            n = min(len(out) - done, len(self._chunk))
            out[done : done + n] = self._chunk[:n]
            self._chunk = self._chunk[n:]
            done += n
        self._pos += done
        return done

    def _next(self) -> bytes | None:
        """Return the next chunk (None at the end); a failure of the download is kept."""
        try:
            return next(self._chunks, None)
        except Exception as exc:
            self.failed = exc  # a loader may catch it for a format error: the caller may not
            raise

    def readall(self) -> bytes:
        """Return the rest in one copy (the chunks joined, not re-read in small pieces)."""
        parts = [bytes(self._chunk)]
        while (chunk := self._next()) is not None:
            parts.append(chunk)
        self._chunk = memoryview(b"")
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def finish(self) -> bool:
        """Read to the end (where the download is checked); return whether nothing was left."""
        left = len(self._chunk)
        self._chunk = memoryview(b"")
        while (chunk := self._next()) is not None:
            left += len(chunk)
        self._pos += left
        return not left

    def close(self) -> None:
        close: Any = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


def stream_size(source: object) -> int | None:
    """Return the total size of a stream a loader reads: known ahead, or by seeking; else None."""
    if isinstance(source, BufferReader | ChunkReader):
        return source.size
    seekable = getattr(source, "seekable", None)
    if seekable is None or not seekable():
        return None
    stream: Any = source
    here = stream.tell()
    size = int(stream.seek(0, io.SEEK_END))
    stream.seek(here)
    return size
