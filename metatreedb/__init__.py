"""Compatibility name: ``from metatreedb import Metatree`` as in metatreedb's documentation.

metatreedb 0.2.3 installed its code as the ``metatree`` package, so its own README's
``from metatreedb import Metatree`` never worked; with this package, both imports do.
"""

from __future__ import annotations

from metatree import Metatree, Node

__all__ = ["Metatree", "Node"]
