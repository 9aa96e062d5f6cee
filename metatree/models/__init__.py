"""The model store: models by domain, with states, aliases and their history (docs/models.md)."""

from __future__ import annotations

from metatree.models._state import Change
from metatree.models._store import ModelStore

__all__ = ["Change", "ModelStore"]
