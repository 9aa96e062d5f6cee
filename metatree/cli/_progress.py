"""Progress on stderr: a bar for put and get (an fsspec callback), a node counter for walks.

Drawn only when stderr is a terminal and ``-q`` was not given: a script capturing stderr, or
a log, must not fill with carriage returns. tqdm is not a dependency of metatree, so the bar
is a few lines here (fsspec's `TqdmCallback` would need it). The counter ("scanned 12 345
nodes") is the ``progress`` callback of `Metatree.search`, `catalog`, `export_catalog`,
`verify` and `fsck`; ``tree`` counts its own reads.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from typing import TYPE_CHECKING, Any

from metatree.cli._output import stderr_is_terminal

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fsspec.callbacks import Callback

__all__ = ["NodeCounter", "node_counter", "progress"]

_WIDTH = 30
_INTERVAL = 0.1
"""Seconds between redraws: a 4 KiB chunk each would redraw thousands of times a second."""


def progress(label: str, *, quiet: bool) -> Callback:
    """Return the callback for one transfer: a bar on a terminal, else fsspec's no-op callback."""
    from fsspec.callbacks import DEFAULT_CALLBACK  # fsspec only once a command transfers

    if quiet or not stderr_is_terminal():
        return DEFAULT_CALLBACK
    return _bar_class()(label)


@functools.cache
def _bar_class() -> type[Callback]:
    """Define the bar (a subclass of fsspec's `Callback`, so imported with fsspec)."""
    from fsspec.callbacks import Callback

    class _Bar(Callback):  # type: ignore[misc]  # fsspec ships no type hints
        """``label [#####.....] 12.0/40.0 MiB`` on stderr, redrawn at most every `_INTERVAL`."""

        def __init__(self, label: str) -> None:
            super().__init__()
            self.label = label
            self.drawn = 0.0

        def call(self, *args: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            done = self.size is not None and self.value >= self.size
            if not done and now - self.drawn < _INTERVAL:
                return
            self.drawn = now
            size = self.size or 0
            filled = int(_WIDTH * self.value / size) if size else 0
            bar = "#" * filled + "." * (_WIDTH - filled)
            mib = 1024 * 1024
            sys.stderr.write(f"\r{self.label} [{bar}] {self.value / mib:.1f}/{size / mib:.1f} MiB")
            if done:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return _Bar


class NodeCounter:
    """``scanned 12 345 nodes`` on stderr, redrawn at most every `_INTERVAL`, finished by `close`.

    Called with the number of nodes read so far (a walk's ``progress`` callback), or `step`
    by one node at a time.
    """

    def __init__(self) -> None:
        self.count = 0
        self.drawn = 0.0
        self.shown = False

    def __call__(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if now - self.drawn >= _INTERVAL:
            self.drawn = now
            self._draw()

    def step(self) -> None:
        """Count one more node."""
        self(self.count + 1)

    def close(self) -> None:
        """Draw the final count and end the line (nothing when nothing was counted)."""
        if self.count:
            self._draw()
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self) -> None:
        self.shown = True
        number = f"{self.count:,}".replace(",", " ")
        sys.stderr.write(f"\rscanned {number} node{'' if self.count == 1 else 's'}")
        sys.stderr.flush()


@contextlib.contextmanager
def node_counter(*, quiet: bool) -> Iterator[NodeCounter | None]:
    """Yield a counter for one walk on a terminal (None otherwise: the walk pays nothing)."""
    if quiet or not stderr_is_terminal():
        yield None
        return
    counter = NodeCounter()
    try:
        yield counter
    finally:
        counter.close()
