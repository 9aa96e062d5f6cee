"""The model store's domain state: parsing stored data strictly, and the changes it writes.

`DomainState` does no I/O, so its rules are tested here directly; the conformance suite
(metatree/testing/_models.py) runs the store itself on every backend.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from metatree.errors import CorruptMetadataError, MetadataError, PathError
from metatree.models._state import (
    HIDDEN,
    DomainState,
    check_id,
    check_label,
    segment_name,
    segment_span,
)

WHERE = "memory:///store/fraud"


def _domain(*models: str, **more: Any) -> dict[str, Any]:
    """A domain whose index and model list hold `models` (`HIDDEN` in `more` is merged)."""
    planted = more.pop(HIDDEN, {})
    hidden = {"models": list(models), **planted} if isinstance(planted, dict) else planted
    return {"children": list(models), **more, HIDDEN: hidden}


def _entry(seq: int, **more: Any) -> dict[str, Any]:
    entry = {
        "seq": seq,
        "at": "2026-03-03T10:00:00.000000+00:00",
        "by": "u@h",
        "kind": "alias",
        "name": "production",
        "old": None,
        "new": "v1",
    }
    entry.update(more)
    return entry


def _state_after(metadata: dict[str, Any], inline: int = 500) -> dict[str, Any]:
    """Commit a fresh state of `metadata` into a copy and return it."""
    state = DomainState(metadata, WHERE)
    state.point()
    out = dict(metadata)
    state.commit_into(out, inline)
    return out


class TestIds:
    @pytest.mark.parametrize("value", ["v1", "2026-03-03", "a.b", "conx", "x" * 200])
    def test_portable_ids_pass(self, value: str) -> None:
        assert check_id(value, "model id") == value

    @pytest.mark.parametrize(
        "value",
        [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a:b",
            "<x>",
            "CON",
            "nul.txt",
            "com1",
            "LPT9.bin",
            "a.",
            " a",
        ],
    )
    def test_unportable_ids_are_path_errors(self, value: str) -> None:
        with pytest.raises(PathError):
            check_id(value, "model id")

    def test_latest_is_no_model_id_but_may_be_a_domain(self) -> None:
        with pytest.raises(PathError, match="newest"):
            check_id("Latest", "model id")
        assert check_id("latest", "domain") == "latest"

    def test_non_str_is_a_path_error(self) -> None:
        with pytest.raises(PathError, match="must be a str"):
            check_id(3, "domain")


class TestLabels:
    @pytest.mark.parametrize("value", ["production", "Champion", "a", "stage_2-b", "x" * 64])
    def test_labels_pass(self, value: str) -> None:
        assert check_label(value, "alias") == value

    @pytest.mark.parametrize(
        "value", ["", "1x", "_x", "a:b", "a.b", "a b", "latest", "LATEST", "children", "x" * 65]
    )
    def test_bad_labels_are_metadata_errors(self, value: str) -> None:
        with pytest.raises(MetadataError):
            check_label(value, "alias")

    def test_non_str_label(self) -> None:
        with pytest.raises(MetadataError):
            check_label(None, "state")


class TestParse:
    def test_a_fresh_domain_has_no_state(self) -> None:
        state = DomainState(_domain("v1"), WHERE)
        assert (state.latest, state.aliases, state.states, state.history, state.seq) == (
            None,
            {},
            {},
            [],
            0,
        )

    @pytest.mark.parametrize(
        "hidden",
        [
            [],
            "x",
            {"unknown": 1},
            {"aliases": "production"},
            {"aliases": [3]},
            {"aliases": ["1bad"]},
            {"states": []},
            {"states": {"production": "v1"}},
            {"states": {"a:b": []}},
            {"seq": -1},
            {"seq": True},
            {"seq": 1.0},
            {"history": {}},
            {"history": [_entry(0)], "seq": 0},
            {"history": [_entry(1)], "seq": 1},
            {"history": [_entry(0, kind="other")], "seq": 1},
            {"history": [_entry(0, at="yesterday")], "seq": 1},
            {"history": [_entry(0, at="2026-03-03T10:00:00")], "seq": 1},
            {"history": [_entry(0, old=3)], "seq": 1},
            {"history": [{**_entry(0), "extra": 1}], "seq": 1},
            {"history": [{**_entry(0), "seq": True}], "seq": 1},
            {"segments": [segment_name(0, 9)], "seq": 5},
            {"segments": ["../x.json"], "seq": 10},
            {"segments": ["history-0000000000-0000000009.json"], "seq": 10},
            {"segments": ["history-0000000009-0000000000-0123456789ab.json"], "seq": 10},
            {"segments": [segment_name(1, 9)], "seq": 10},
            {"models": "v1"},
            {"models": ["v1", "v1"]},
            {"states": {"production": ["v1", "v1"]}},
            {"models": [1]},
            {"history": [_entry(0, kind=["alias"])], "seq": 1},
            {"history": [_entry(0, kind={"a": 1})], "seq": 1},
            {"seq": 3},
        ],
    )
    def test_malformed_hidden_state_is_corrupt(self, hidden: object) -> None:
        with pytest.raises(CorruptMetadataError):
            DomainState(_domain("v1", **{HIDDEN: hidden}), WHERE)

    @pytest.mark.parametrize("value", [3, None, "../../etc", "", "a/b", ".metatree"])
    def test_an_alias_whose_key_is_not_a_model_id_is_corrupt(self, value: object) -> None:
        metadata = _domain("v1", production=value, **{HIDDEN: {"aliases": ["production"]}})
        with pytest.raises(CorruptMetadataError, match="production"):
            DomainState(metadata, WHERE)

    def test_an_alias_without_its_key_is_corrupt(self) -> None:
        with pytest.raises(CorruptMetadataError, match="production"):
            DomainState(_domain("v1", **{HIDDEN: {"aliases": ["production"]}}), WHERE)

    @pytest.mark.parametrize("key", ["latest", "latest:production"])
    def test_a_pointer_that_is_no_model_id_is_corrupt(self, key: str) -> None:
        metadata = _domain("v1", **{key: ["v1"], HIDDEN: {"states": {"production": ["v1"]}}})
        with pytest.raises(CorruptMetadataError):
            DomainState(metadata, WHERE)

    def test_the_model_list_keeps_upload_order_and_only_indexed_models(self) -> None:
        metadata = {
            "children": ["by-hand", "v2", "v1"],  # a metatreedb writer reordered the index
            HIDDEN: {"models": ["v1", "v2", "removed"]},
        }
        assert DomainState(metadata, WHERE).models == ["v1", "v2"]

    def test_segments_then_inline_entries_continue_the_numbering(self) -> None:
        metadata = _domain(
            "v1",
            **{
                HIDDEN: {
                    "segments": [segment_name(0, 9), segment_name(10, 19)],
                    "history": [_entry(20), _entry(21)],
                    "seq": 22,
                }
            },
        )
        state = DomainState(metadata, WHERE)
        assert [c.seq for c in state.history] == [20, 21]


class TestChanges:
    def test_upload_moves_latest_and_records_it(self) -> None:
        after = _state_after(_domain("v1", "v2", latest="v1"))
        assert after["latest"] == "v2"
        (entry,) = after[HIDDEN]["history"]
        assert (entry["kind"], entry["name"], entry["old"], entry["new"]) == (
            "latest",
            "latest",
            "v1",
            "v2",
        )
        assert after[HIDDEN]["seq"] == 1

    def test_state_pointer_names_the_newest_upload_in_the_state(self) -> None:
        metadata = _domain("v1", "v2", "v3", **{HIDDEN: {"states": {"production": ["v3", "v1"]}}})
        after = _state_after(metadata)
        assert after["latest:production"] == "v3"

    def test_forget_drops_aliases_and_states_and_moves_pointers(self) -> None:
        metadata = _domain(
            "v1",
            "v2",
            latest="v2",
            production="v2",
            **{
                "latest:staging": "v2",
                HIDDEN: {"aliases": ["production"], "states": {"staging": ["v2"]}},
            },
        )
        state = DomainState(metadata, WHERE)
        state.models.remove("v2")
        state.forget("v2")
        state.point()
        out = dict(metadata)
        state.commit_into(out, 500)
        assert out["latest"] == "v1"
        assert "production" not in out
        assert "latest:staging" not in out
        assert out[HIDDEN]["states"] == {}
        kinds = [(e["kind"], e["name"], e["old"], e["new"]) for e in out[HIDDEN]["history"]]
        assert kinds == [
            ("alias", "production", "v2", None),
            ("state", "staging", "v2", None),
            ("latest", "latest", "v2", "v1"),
            ("latest", "latest:staging", "v2", None),
        ]

    def test_no_change_no_entry(self) -> None:
        after = _state_after(_domain("v1", latest="v1"))
        assert after[HIDDEN]["history"] == []
        assert after[HIDDEN]["seq"] == 0

    def test_user_keys_survive_a_commit(self) -> None:
        after = _state_after(_domain("v1", owner="team-a", **{"latest:nightly": "v1"}))
        assert after["owner"] == "team-a"
        assert after["latest:nightly"] == "v1"  # not a state's pointer: the user's own key

    def test_long_history_moves_all_but_a_fifth_to_a_segment(self) -> None:
        entries = [_entry(i) for i in range(10)]
        metadata = _domain("v1", "v2", latest="v1", **{HIDDEN: {"history": entries, "seq": 10}})
        state = DomainState(metadata, WHERE)
        state.point()  # the 11th entry
        out = dict(metadata)
        moved = state.commit_into(out, 10)
        assert [c.seq for c in moved] == list(range(9))
        (segment,) = out[HIDDEN]["segments"]
        assert segment_span(segment, WHERE) == (0, 8)
        assert [e["seq"] for e in out[HIDDEN]["history"]] == [9, 10]
        DomainState(out, WHERE)  # what was written reads back

    def test_entries_of_one_change_share_one_time(self) -> None:
        state = DomainState(_domain("v1"), WHERE)
        state.record("alias", "a", None, "v1")
        state.record("alias", "b", None, "v1")
        first, second = state.pending
        assert first.at == second.at
        assert first.at.tzinfo == datetime.UTC


def test_segment_names_round_trip_and_are_new_each_time() -> None:
    assert segment_span(segment_name(12, 3456), WHERE) == (12, 3456)
    assert segment_name(0, 1) != segment_name(0, 1)


def test_segment_names_are_no_model_ids() -> None:
    with pytest.raises(PathError, match="segments"):
        check_id(segment_name(0, 9), "model id")
