"""What a domain's metadata says about its models: pointers, states and their history.

The model store keeps everything it knows about a domain in that domain node's metadata.json,
so each change is one atomic write of one object (the commit point of docs/models.md):

- plain keys, which ``find``/``get`` templates and metatreedb read: ``latest`` (the newest
  model), each alias (``production`` -> a model id) and ``latest:<state>`` (the newest
  model in a state);
- the hidden key ``.metatree.models``: which plain keys are aliases, the models of each
  state, the newest history entries and the names of the history segments (older entries,
  moved out as files of the domain node when the inline list grows long).

Everything here is read from storage, so it is input: every field is checked, and a malformed
one is `CorruptMetadataError`, never a silent guess. These functions do no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import unicodedata
import uuid
from typing import TYPE_CHECKING, Any, Final

from metatree._paths import check_location_name, check_name, check_stored_name, is_invisible
from metatree._records import runtime
from metatree.errors import CorruptMetadataError, MetadataError, PathError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "HIDDEN",
    "LATEST",
    "Change",
    "DomainState",
    "author",
    "check_id",
    "check_label",
    "fold",
    "parse_changes",
    "root_states",
    "segment_name",
    "segment_span",
    "state_pointer",
]

HIDDEN: Final = ".metatree.models"
"""The hidden metadata key of the model store (in the root node and in each domain node)."""
LATEST: Final = "latest"
MAX_LABEL: Final = 64
CLOCK_SKEW: Final = datetime.timedelta(minutes=10)
"""How far ahead another writer's clock may run and still be followed (history times)."""
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_DEVICE = re.compile(r"(?i)(con|prn|aux|nul|conin\$|conout\$|(com|lpt)[0-9\u00b9\u00b2\u00b3]) *")
_SEGMENT = re.compile(r"history-([0-9]{10})-([0-9]{10})-[0-9a-f]{12}\.json")
_KINDS: Final = frozenset({"latest", "alias", "state"})
_RESERVED_LABELS: Final = frozenset({LATEST, "children"})


def check_id(value: object, what: str) -> str:
    """Return a domain or model id that is a portable node name (Windows too), else `PathError`.

    On top of the rules of every new name (`check_name`), ids are held to what Windows can
    store: no device names (``CON``, ``nul.txt``, ``COM1``...) and no trailing dot, which
    Windows drops. A model id cannot be ``latest``: `download` reads that as the newest.
    """
    if not isinstance(value, str):
        raise PathError(repr(value), f"a {what} must be a str, not {type(value).__name__}")
    check_name(value, value)
    if _DEVICE.fullmatch(value.split(".", 1)[0]):
        raise PathError(value, f"{value!r} names a device on Windows")
    if value.endswith("."):
        raise PathError(value, "Windows drops a trailing '.' from names")
    if what == "model id" and value.casefold() == LATEST:
        raise PathError(value, f"{LATEST!r} means the newest model, it cannot be an id")
    if _SEGMENT.fullmatch(value.lower()):
        raise PathError(value, "names of this form are the store's history segments")
    return value


def check_ref(value: object, what: str) -> str:
    """Return the id of a domain or model that may exist, else `PathError`.

    Held to the rules of locations (one level, no template or glob syntax), not to those of
    new ids (`check_id`): a domain written by metatreedb 0.2.3, or before a rule for new
    names was added, must stay readable and deletable.
    """
    if not isinstance(value, str):
        raise PathError(repr(value), f"a {what} must be a str, not {type(value).__name__}")
    return check_location_name(value, value)


def check_label(value: object, what: str) -> str:
    """Return an alias or state name: a letter, then letters, digits, ``_`` or ``-``.

    Labels become metadata keys that templates name (``fraud/<production>``), so they are
    held to what reads the same everywhere; ``latest`` and ``children`` are taken.
    """
    if not isinstance(value, str):
        raise MetadataError(repr(value), f"a {what} must be a str, not {type(value).__name__}")
    if not _LABEL.fullmatch(value) or len(value) > MAX_LABEL:
        raise MetadataError(
            value,
            f"a {what} is a letter then letters, digits, '_' or '-' (at most {MAX_LABEL})",
        )
    if value.lower() in _RESERVED_LABELS:
        raise MetadataError(value, f"{value!r} is reserved by the model store")
    return value


def segment_name(first: int, last: int) -> str:
    """Return a new file name for the history segment holding entries `first` to `last`.

    A random part makes each name new: a segment left unnamed by a crash, or a user's file,
    is never overwritten, and no model id can be one (`check_id` refuses the pattern).
    """
    return f"history-{first:010d}-{last:010d}-{uuid.uuid4().hex[:12]}.json"


def segment_span(name: str, where: str) -> tuple[int, int]:
    """Return the entries a stored segment name says it holds, checking the name."""
    match = _SEGMENT.fullmatch(name)
    if match is None:
        raise _corrupt(where, f"segment name {name[:80]!r} is not a history segment")
    first, last = int(match[1]), int(match[2])
    if last < first:
        raise _corrupt(where, f"segment {name!r} ends before it starts")
    return first, last


def state_pointer(state: str) -> str:
    """Return the plain key naming the newest model in `state` (``latest:production``)."""
    return f"{LATEST}:{state}"


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One change of a domain's pointers or states, as the history keeps it.

    ``kind`` is ``"latest"`` (``name`` is ``latest`` or ``latest:<state>``), ``"alias"`` or
    ``"state"`` (a model entered the state: ``old`` None, ``new`` the model; or left it:
    ``old`` the model, ``new`` None).
    """

    seq: int
    """The change's number in its domain (0, 1, 2, ...: a gap would be a lost entry)."""
    at: datetime.datetime
    """When the change was committed (UTC)."""
    by: str
    """Who made it: ``user@host``."""
    kind: str
    name: str
    old: str | None
    new: str | None

    def as_dict(self) -> dict[str, Any]:
        """Return the change as JSON values (``at`` in ISO 8601), as it is stored."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(timespec="microseconds"),
            "by": self.by,
            "kind": self.kind,
            "name": self.name,
            "old": self.old,
            "new": self.new,
        }


def parse_changes(value: object, where: str, first: int) -> list[Change]:
    """Parse stored history entries, numbered from `first` without gaps."""
    if not isinstance(value, list):
        raise _corrupt(where, "history is not a list")
    return [_change(entry, where, first + i) for i, entry in enumerate(value)]


def _change(entry: object, where: str, seq: int) -> Change:
    if not isinstance(entry, dict) or set(entry) != {
        "seq",
        "at",
        "by",
        "kind",
        "name",
        "old",
        "new",
    }:
        raise _corrupt(where, f"history entry {seq} is not an entry")
    if entry["seq"] != seq or type(entry["seq"]) is not int:
        raise _corrupt(where, f"history entry {seq} is numbered {entry['seq']!r}")
    at = entry["at"]
    try:
        when = datetime.datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        when = None
    if when is None or when.utcoffset() != datetime.timedelta(0):
        raise _corrupt(where, f"history entry {seq} has no UTC time")
    if not isinstance(entry["kind"], str) or entry["kind"] not in _KINDS:
        raise _corrupt(where, f"history entry {seq} has kind {str(entry['kind'])[:80]!r}")
    if not isinstance(entry["by"], str) or len(entry["by"]) > 1024:
        raise _corrupt(where, f"history entry {seq} has no author")
    if not isinstance(entry["name"], str) or len(entry["name"]) > 2 * MAX_LABEL:
        raise _corrupt(where, f"history entry {seq} names {entry['name']!r}")
    for side in ("old", "new"):
        if entry[side] is not None:
            _stored_id(entry[side], where, f"history entry {seq}: {side}")
    return Change(seq, when, entry["by"], entry["kind"], entry["name"], entry["old"], entry["new"])


def _corrupt(where: str, reason: str) -> CorruptMetadataError:
    return CorruptMetadataError(where, f"model store: {reason}")


class DomainState:
    """A domain's model-store view, parsed and checked from its metadata, changed in memory.

    `commit_into` writes the changes back into the metadata dict (plain pointers and the
    hidden key), to be stored in one write; `pending` are the history entries that write adds.

    Aliases and state members naming a model the index no longer lists (removed by hand) are
    dropped when the state is read, as a delete would drop them (with their history entries,
    written by the next change): a new model that reuses the id starts with none of them.
    """

    def __init__(
        self,
        metadata: dict[str, Any],
        where: str,
        version: object = None,
        path: tuple[str, ...] = (),
    ) -> None:
        self.where = where
        self.path = path
        self.metadata = metadata
        self.version = version
        """The stored version of `metadata` (for reads of the domain's files against it)."""
        hidden = metadata.get(HIDDEN, {})
        if not isinstance(hidden, dict):
            raise _corrupt(where, f"{HIDDEN} is not an object")
        unknown = set(hidden) - {"models", "aliases", "states", "history", "segments", "seq"}
        if unknown:
            raise _corrupt(where, f"unknown fields {sorted(unknown)}")
        # the models in upload order: the store's own list, not the index, whose order a
        # metatreedb 0.2.3 writer scrambles (it rewrites it through a set) and which also
        # lists nodes put by hand; a model the index lost (removed by hand) is gone
        indexed = set(metadata.get("children", []))
        listed = _unique(hidden.get("models", []), where, "models")
        self.models: list[str] = [m for m in listed if m in indexed]
        self.aliases: dict[str, str] = {}
        self.alias_keys = set(_strings(hidden.get("aliases", []), where, "aliases"))
        """The plain keys that hold aliases (others are the user's, never overwritten)."""
        for alias in sorted(self.alias_keys):
            target = _pointer(metadata, _stored_label(alias, where), where)
            if target is None:
                raise _corrupt(where, f"alias {alias!r} has no key")
            self.aliases[alias] = target
        self.states: dict[str, list[str]] = {}
        states = hidden.get("states", {})
        if not isinstance(states, dict):
            raise _corrupt(where, "states is not an object")
        for state, members in states.items():
            self.states[_stored_label(state, where)] = _unique(members, where, f"state {state}")
        self.segments = _strings(hidden.get("segments", []), where, "segments")
        seq = hidden.get("seq", 0)
        if type(seq) is not int or seq < 0:
            raise _corrupt(where, f"seq is {seq!r}")
        inline = hidden.get("history", [])
        self.history = parse_changes(
            inline, where, seq - len(inline) if isinstance(inline, list) else 0
        )
        if seq < len(self.history):
            raise _corrupt(where, f"seq {seq} is below the {len(self.history)} entries kept")
        self.seq = seq
        _check_segments(self.segments, seq - len(self.history), where)
        self.latest = _pointer(metadata, LATEST, where)
        self.pointers = {
            state_pointer(s): _pointer(metadata, state_pointer(s), where) for s in self.states
        }
        self.pending: list[Change] = []
        self._by = author()
        self._at = datetime.datetime.now(datetime.UTC)  # replaced by the commit's time
        live = set(self.models)
        named = {*self.aliases.values(), *(m for ms in self.states.values() for m in ms)}
        for ghost in sorted(named - live):
            self.forget(ghost)

    # -- changes ---------------------------------------------------------------------------
    def record(self, kind: str, name: str, old: str | None, new: str | None) -> None:
        """Add a history entry for a change (nothing when nothing changed)."""
        if old == new:
            return
        self.pending.append(Change(self.seq, self._at, self._by, kind, name, old, new))
        self.seq += 1

    def newest(self, among: set[str] | None = None) -> str | None:
        """Return the newest model (the last uploaded), or the newest of `among`."""
        for model in reversed(self.models):
            if among is None or model in among:
                return model
        return None

    def point(self) -> None:
        """Move ``latest`` and each ``latest:<state>`` to the newest model they may name."""
        newest = self.newest()
        self.record("latest", LATEST, self.latest, newest)
        self.latest = newest
        for state, members in list(self.states.items()):
            key = state_pointer(state)
            old = self.pointers.get(key)
            new = self.newest(set(members))
            self.record("latest", key, old, new)
            self.pointers[key] = new
            if not members:  # an empty state leaves no trace but its history
                del self.states[state]

    def forget(self, model: str) -> None:
        """Drop `model` from the index view, every alias and every state (it is deleted)."""
        self.models = [m for m in self.models if m != model]
        for alias, target in list(self.aliases.items()):
            if target == model:
                self.record("alias", alias, model, None)
                del self.aliases[alias]
        for state, members in self.states.items():
            if model in members:
                self.record("state", state, model, None)
                members.remove(model)

    def commit_into(self, metadata: dict[str, Any], inline: int) -> list[Change]:
        """Write the state into `metadata`; return the history entries moved out of line.

        The change's entries get the commit's time. When more than `inline` entries would
        stay in the metadata, all but the newest fifth
        move to a new segment, named in ``segments`` here: the caller stores the segment
        (`segment_name`) before this metadata is written, so the write that drops the
        entries from line is the one that names where they went. A crash between the two
        leaves an unnamed segment file and the history unchanged.
        """
        self.point()  # latest follows the models whatever the change (a ghost was dropped)
        # one time for the change, taken now, not before the last entry when the writer of
        # that one ran ahead by less than CLOCK_SKEW (times stay in order for get_alias(at=));
        # a last entry further ahead is a broken clock or a plant: it must not drag every
        # later time into its future
        stamp = datetime.datetime.now(datetime.UTC)
        if self.history and stamp < self.history[-1].at <= stamp + CLOCK_SKEW:
            stamp = self.history[-1].at
        self.pending = [dataclasses.replace(c, at=stamp) for c in self.pending]
        history = [*self.history, *self.pending]
        moved: list[Change] = []
        if len(history) > inline:
            moved = history[: len(history) - inline // 5]
            self.segments = [*self.segments, segment_name(moved[0].seq, moved[-1].seq)]
        kept = history[len(moved) :]
        for key in [LATEST, *self.pointers]:  # a user's own "latest:x" key stays
            metadata.pop(key, None)
        for alias in self._stored_aliases(metadata):
            metadata.pop(alias, None)
        if self.latest is not None:
            metadata[LATEST] = self.latest
        metadata.update({k: m for k, m in self.pointers.items() if m is not None})
        metadata.update(self.aliases)
        metadata[HIDDEN] = {
            "models": self.models,
            "aliases": sorted(self.aliases),
            "states": {s: list(m) for s, m in sorted(self.states.items())},
            "history": [c.as_dict() for c in kept],
            "segments": self.segments,
            "seq": self.seq,
        }
        return moved

    def _stored_aliases(self, metadata: Mapping[str, Any]) -> list[str]:
        hidden = metadata.get(HIDDEN, {})
        return list(hidden.get("aliases", [])) if isinstance(hidden, dict) else []


def _check_segments(segments: list[str], end: int, where: str) -> None:
    """Check that the segments hold entries 0 to `end` - 1, in order, without gaps."""
    expected = 0
    for segment in segments:
        first, last = segment_span(segment, where)
        if first != expected:
            raise _corrupt(where, f"history segment {segment!r} does not follow its predecessor")
        expected = last + 1
    if expected != end:
        raise _corrupt(where, f"the history segments end at {expected}, not {end}")


def author() -> str:
    """Return who this process writes as: ``user@host``."""
    facts = runtime()
    return f"{facts['user']}@{facts['host']}"


def fold(name: str) -> str:
    """Fold a name as case-insensitive disks and compatibility look-alikes do (NFKC, casefold).

    Domain and model ids that fold alike are one id: a full-width or differently cased copy
    would be a second model on Linux and the same directory on Windows or macOS; characters
    that show as nothing are left out (an id stored with one looks like one without).
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if not is_invisible(c))


def root_states(metadata: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Return the states created in the store (the root's hidden key), checked."""
    hidden = metadata.get(HIDDEN, {})
    states = hidden.get("states", {}) if isinstance(hidden, dict) else None
    if not isinstance(states, dict) or set(hidden) - {"states"}:
        raise _corrupt(where, "the states are malformed")
    for state in states:
        _stored_label(state, where)
    return dict(states)


def _strings(value: object, where: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _corrupt(where, f"{what} is not a list of names")
    return list(value)


def _unique(value: object, where: str, what: str) -> list[str]:
    """Return a stored list of names that the store never writes with a name twice."""
    names = _strings(value, where, what)
    if len(set(names)) != len(names):
        raise _corrupt(where, f"{what} names a model twice")
    return names


def _stored_label(value: str, where: str) -> str:
    try:
        return check_label(value, "label")
    except MetadataError:
        raise _corrupt(where, f"stored label {value[:80]!r} is not a label") from None


def _pointer(metadata: Mapping[str, Any], key: str, where: str) -> str | None:
    """Return the model id a plain pointer key holds (None: no key), checked to be a name."""
    if key not in metadata:
        return None
    return _stored_id(metadata[key], where, repr(key))


def _stored_id(value: object, where: str, what: str) -> str:
    """Check a model id read from storage: a stored name (one level, not reserved).

    Stored ids get the rules of stored names, not the stricter ones of new names, so that a
    rule added for new names later does not make an existing store corrupt.
    """
    try:
        return check_stored_name(value, where)
    except PathError:
        raise _corrupt(where, f"{what} names {str(value)[:80]!r}, not a model id") from None
