"""``-o KEY=VALUE``: refuse a storage option the filesystem would silently ignore.

fsspec passes unknown keyword arguments down to `AbstractFileSystem`, which drops them: a
typo (``-o endpoint_ur=...``) would connect to the default endpoint instead of failing. The
command line checks each name against what the filesystem class accepts (the named
parameters of every ``__init__`` in its MRO, down to `AbstractFileSystem`'s own, which are
`DirCache`'s and the instance-cache switches) plus `Metatree`'s own options, and refuses an
unknown one with exit 2, naming the close matches. Some classes hand their ``**kwargs`` to
something else than `AbstractFileSystem`: s3fs to aiobotocore's ``AioSession`` (``profile``),
whose named parameters are then accepted too (`_FORWARDED`). Conservative: when the class
cannot be judged (a chained URL, an unknown protocol, a signature or source that does not
inspect, a class that is not an `AbstractFileSystem`, an ``__init__`` that uses its
``**kwargs`` for anything but ``super().__init__``), every option passes, as before. The library itself keeps
fsspec's behaviour: only the command line checks.
"""

from __future__ import annotations

from typing import Any, Final

import click

__all__ = ["accepted_options", "check_options"]

_ABSTRACT_EXTRA: Final = ("skip_instance_cache", "asynchronous", "loop")
"""What `AbstractFileSystem` and its metaclass read besides `DirCache`'s parameters."""

_FORWARDED: Final = {"s3fs.core.S3FileSystem": ("aiobotocore.session", "AioSession")}
"""Classes whose ``__init__`` keeps its ``**kwargs`` for a class of another library: that
class's ``__init__`` parameters are options too (s3fs: ``AioSession(**self.kwargs)``)."""

_METATREE_OWN: Final = ("locking_enabled", "lock_timeout", "lock_ttl")
"""`Metatree`'s keyword options that ``-o`` may set (``fs``, ``keys`` and ``create`` not)."""


def check_options(root: str, options: dict[str, Any]) -> None:
    """Raise a usage error (exit 2) for an option `root`'s filesystem cannot take."""
    if not options:
        return
    accepted = accepted_options(root)
    if accepted is None:
        return
    import difflib  # here: ``--help`` and commands without -o never pay for it

    for name in options:
        if name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise click.BadParameter(
                f"unknown storage option {name!r} for {_protocol(root)}://{hint}",
                param_hint="-o",
            )


def accepted_options(root: str) -> set[str] | None:
    """Return the option names `root`'s filesystem accepts, or None when it cannot be judged."""
    if "::" in root:  # a chained URL: each link takes its own nested options
        return None
    import fsspec
    from fsspec.dircache import DirCache
    from fsspec.spec import AbstractFileSystem

    try:
        cls = fsspec.get_filesystem_class(_protocol(root))
    except (ValueError, ImportError):  # opening the root will say what is wrong
        return None
    if not (isinstance(cls, type) and issubclass(cls, AbstractFileSystem)):
        return None
    names: set[str] = {*_METATREE_OWN, *_ABSTRACT_EXTRA}
    names.update(getattr(cls, "_strip_tokenize_options", ()))
    for klass in cls.__mro__:
        if klass is AbstractFileSystem:
            named = _named(DirCache.__init__)
            if named is None:
                return None
            return names | named
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        named = _named(init)
        if named is None:
            return None
        names |= named
        target = _FORWARDED.get(f"{klass.__module__}.{klass.__qualname__}")
        if target is not None:
            forwarded = _forwarded_to(*target)
            if forwarded is None:
                return None
            names |= forwarded
        elif _keeps_kwargs(init):
            return None  # they go somewhere we do not know: any name may be right
    return None  # AbstractFileSystem not reached: not judged


def _forwarded_to(module: str, name: str) -> set[str] | None:
    """Return the named parameters of ``module.name.__init__`` (None: cannot be judged)."""
    import importlib

    try:
        target = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return _named(target.__init__)


def _keeps_kwargs(init: Any) -> bool:
    """Whether `init` uses its ``**kwargs`` other than as ``super().__init__(**kwargs)``.

    Such an ``__init__`` passes them on elsewhere (a session, a client): a name none of
    the signatures list may still be taken. True too when its source cannot be read.
    """
    import ast
    import inspect
    import textwrap

    var = [p.name for p in inspect.signature(init).parameters.values() if p.kind is p.VAR_KEYWORD]
    if not var:
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return True
    passed_up = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "__init__"
            and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "super"
        ):
            passed_up |= {id(k.value) for k in node.keywords if k.arg is None}
    return any(
        isinstance(node, ast.Name) and node.id == var[0] and id(node) not in passed_up
        for node in ast.walk(tree)
    )


def _named(init: Any) -> set[str] | None:
    """Return the keyword-passable parameters of `init` (None: its signature does not inspect)."""
    import inspect

    try:
        parameters = inspect.signature(init).parameters.values()
    except (TypeError, ValueError):
        return None
    return {
        p.name
        for p in parameters
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _protocol(root: str) -> str:
    """Return the protocol `as_storage` opens `root` with (a plain path is local disk)."""
    if "://" not in root:
        return "file"
    return root.split("://", 1)[0]
