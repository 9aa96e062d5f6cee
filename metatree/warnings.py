"""Warnings issued by metatree (their own classes, so that users can filter them)."""

from __future__ import annotations

__all__ = ["MetatreeWarning"]


class MetatreeWarning(UserWarning):
    """Something works, but probably not as the caller meant (e.g. a setting was ignored)."""
