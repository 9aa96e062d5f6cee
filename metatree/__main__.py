"""``python -m metatree``: the console script, for environments without it on the PATH."""

from __future__ import annotations

from metatree.cli.main import main

if __name__ == "__main__":
    main()
