"""Opening a database: read its config, or create the database in an empty root.

Opening costs one request (the config read) when a database is there; the checks that say
what is wrong with a root that holds none run only on that failure path. Also the probe of
whether local disk ignores case, which the put planner needs (`metatree._core.plan`).
"""

from __future__ import annotations

import errno
import os
import warnings
from typing import TYPE_CHECKING

import orjson

from metatree._metadata import FORMAT_VERSION, Config
from metatree._names import CONFIG_FILE, METADATA_FILE, is_reserved
from metatree.errors import CorruptDatabaseError, DatabaseError, NotFoundError, StorageError
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["open_config", "probe_case_insensitive"]

_EMPTY_METADATA = b"{}"
MAX_CONFIG = 1024 * 1024
"""Bytes a ``.metatree`` may have (a real one is under 1 KiB): a bigger one is not read whole."""


def open_config(
    storage: Storage,
    wanted: tuple[str, ...] | None,
    locking_enabled: bool | None,
    *,
    create: bool,
    stacklevel: int,
) -> Config:
    """Return the stored config, creating the database when `create` and the root is empty.

    `wanted` keys must match the stored ones (None reads them). The stored `locking_enabled`
    wins over the argument, with a warning (at `stacklevel` above this call's caller) when
    they differ, as metatreedb did.
    """
    try:
        config = _parse(_read(storage), storage.url)
    except NotFoundError as exc:
        _check_root(storage, exc)
        if not create or wanted is None:
            reason = "no database here" + ("" if create else " (create=False)")
            raise DatabaseError(storage.url, f"{reason}; pass keys to create one") from None
        config = _create(storage, wanted, True if locking_enabled is None else locking_enabled)
    if wanted is not None and wanted != config.keys:
        raise DatabaseError(
            storage.url,
            f"it was created with keys {list(config.keys)}, not {list(wanted)}; "
            "pass keys=None to use the stored ones",
        )
    if locking_enabled is not None and locking_enabled != config.locking_enabled:
        warnings.warn(
            f"{storage.url} was created with locking_enabled={config.locking_enabled}; "
            "the stored setting is used",
            MetatreeWarning,
            stacklevel=stacklevel + 1,
        )
    return config


def _check_root(storage: Storage, missing: NotFoundError) -> None:
    """Say what is wrong when the config cannot be read; return if the root is just empty.

    Costs requests only on this failure path, so opening a database stays one request.
    """
    if storage.kind("") == "file":
        raise DatabaseError(storage.url, "the root is a file, not a directory") from missing
    if storage.kind(CONFIG_FILE) == "directory":
        raise CorruptDatabaseError(
            storage.url, ".metatree is a directory, not the config"
        ) from missing


def _create(storage: Storage, keys: tuple[str, ...], locking_enabled: bool) -> Config:
    unrelated = sorted(n for n in storage.listdir("") if not is_reserved(n))
    if unrelated:
        shown = ", ".join(unrelated[:5]) + (", ..." if len(unrelated) > 5 else "")
        raise DatabaseError(
            storage.url, f"the root holds unrelated data ({shown}); use an empty directory"
        )
    config = Config(keys, locking_enabled)
    # Both creates are exclusive: a concurrent creator that got there first keeps its
    # root index (which may already list children) and its config, which we then read.
    storage.create_exclusive(METADATA_FILE, _EMPTY_METADATA)
    if not storage.create_exclusive(CONFIG_FILE, config.to_bytes()):
        return _parse(_read(storage), storage.url)
    return config


def _read(storage: Storage) -> bytes:
    """Read the config, bounded (`MAX_CONFIG`); a FIFO or device there is damage (exit 5).

    Local reads open without blocking and refuse what is not a regular file (`ESPIPE`), so
    a planted FIFO never hangs the open: it is reported like any other broken config.
    """
    try:
        data, _ = storage.read_versioned(CONFIG_FILE, MAX_CONFIG)
    except StorageError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.ESPIPE:
            raise CorruptDatabaseError(
                storage.url, ".metatree is not a regular file (a FIFO, socket or device)"
            ) from None
        raise
    if len(data) > MAX_CONFIG:
        raise CorruptDatabaseError(storage.url, f".metatree is over {MAX_CONFIG} bytes")
    return data


def _parse(data: bytes, url: str) -> Config:
    """Parse a config that is there: a fault in it is damage (`CorruptDatabaseError`, exit 5).

    A config of another format version stays a `DatabaseError` (exit 2): it is not damaged,
    it needs another version of metatree.
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raw = None  # from_bytes says what is wrong
    if isinstance(raw, dict) and "format" in raw and type(raw["format"]) is not int:
        # ``true`` equals 1 and ``null`` is no version: neither was written by metatree
        raise CorruptDatabaseError(url, f".metatree has no valid format: {raw['format']!r}")
    try:
        return Config.from_bytes(data, url)
    except DatabaseError as exc:
        if isinstance(raw, dict) and raw.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise  # another version's: not damaged, it needs another metatree
        raise CorruptDatabaseError(url, exc.reason) from None


def probe_case_insensitive(storage: Storage) -> bool:
    """Whether the local filesystem under the root ignores case (macOS, Windows defaults).

    Asks whether the config file is also found under its name in other case: no write, two
    system calls. Only local disk is probed; object stores and HDFS are case-sensitive.
    """
    if not storage.capabilities.same_host_liveness:
        return False
    config = storage.abs(CONFIG_FILE)
    other = os.path.join(os.path.dirname(config), CONFIG_FILE.upper())
    try:
        return os.path.samefile(config, other)
    except OSError:
        return False
