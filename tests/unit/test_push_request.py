"""PushRequest merging as istiod's Merge / CopyMerge: "everything" stays everything."""

from __future__ import annotations

from collections import Counter

from pilot.model.config import ConfigKey
from pilot.push.request import PushRequest

VS = ConfigKey("VirtualService", "ns", "vs")
DR = ConfigKey("DestinationRule", "ns", "dr")
EP = ConfigKey("Endpoints", "ns", "a.ns.svc.cluster.local")


def test_empty_set_means_everything() -> None:
    assert PushRequest(configs_updated=set()).everything
    assert PushRequest(configs_updated=None).everything
    assert not PushRequest(configs_updated={VS}).everything


def test_everything_merged_with_an_edit_stays_everything() -> None:
    everything = PushRequest(full=True, configs_updated=None, reason=Counter(global_=1))
    everything.merge(PushRequest(full=True, configs_updated={VS}, reason=Counter(config=1)))
    assert everything.everything
    edit = PushRequest(full=True, configs_updated={VS}, reason=Counter(config=1))
    edit.merge(PushRequest(full=True, configs_updated=None))
    assert edit.everything, "an edit merged with everything must become everything"
    assert edit.kinds() is None


def test_merge_is_in_place_and_unions_keys_sums_reasons_keeps_oldest_start() -> None:
    a = PushRequest(full=False, configs_updated={EP}, reason=Counter(endpoint=1), start=5.0)
    b = PushRequest(full=True, configs_updated={VS}, reason=Counter(config=2, endpoint=1), start=7.0, forced=True)
    merged = a.merge(b)
    assert merged is a
    assert a.full and a.forced
    assert a.configs_updated == {EP, VS}
    assert a.reason == Counter(config=2, endpoint=2)
    assert a.start == 5.0
    assert b.configs_updated == {VS}, "the merged-in request is not modified"


def test_copy_merge_leaves_both_inputs_untouched() -> None:
    shared = PushRequest(full=True, configs_updated={VS}, reason=Counter(config=1))
    other = PushRequest(full=False, configs_updated={EP}, reason=Counter(endpoint=1))
    merged = shared.copy_merge(other)
    assert merged is not shared and merged.configs_updated == {VS, EP}
    assert shared.configs_updated == {VS} and shared.reason == Counter(config=1)
    assert other.configs_updated == {EP} and not other.full


def test_a_request_owns_its_key_set() -> None:
    keys = {VS}
    request = PushRequest(configs_updated=keys)
    request.merge(PushRequest(configs_updated={DR}))
    assert keys == {VS}, "merging must not write into the caller's set"


def test_endpoint_only_requests_stay_endpoint_only_when_merged() -> None:
    a = PushRequest(full=False, configs_updated={EP})
    a.merge(PushRequest(full=False, configs_updated={ConfigKey("Endpoints", "ns", "b")}))
    assert not a.full and a.kinds() == frozenset({"Endpoints"})
