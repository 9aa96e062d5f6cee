"""The ``metatree`` command: operate a tree from the shell (docs/cli.md).

`metatree.cli.main.main` is the console script; ``python -m metatree`` runs it too. Every
command imports what it needs when it runs, so ``metatree --help`` imports neither s3fs nor
pyarrow.
"""

from __future__ import annotations

__all__: list[str] = []
