"""ConfigStore: per-source replacement, last-good on invalid edits, conflicts, change notification."""

from __future__ import annotations

import logging

import pytest

from pilot.config.loader import LoadError, LoadResult, load_text
from pilot.config.store import ConfigStore
from pilot.model.config import Config, ConfigKey


def svc_yaml(name: str, port: int = 80, ns: str = "default") -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: {port}}}]
"""


def load(source: str, *docs: str) -> LoadResult:
    return load_text(source, "---\n".join(docs))


def key(name: str, ns: str = "default") -> ConfigKey:
    return ConfigKey("Service", ns, name)


def port_of(cfg: Config | None) -> int:
    assert cfg is not None
    return cfg.spec["spec"]["ports"][0]["port"]


@pytest.fixture
def store() -> ConfigStore:
    return ConfigStore()


def test_replace_source_adds_updates_removes(store: ConfigStore) -> None:
    seen: list[set[ConfigKey]] = []
    store.subscribe(seen.append)
    assert store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x"), svc_yaml("y"))) == {key("x"), key("y")}
    assert store.revision == 1
    assert sorted(store.snapshot()) == [key("x"), key("y")]

    changed = store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x", 81)))
    assert changed == {key("x"), key("y")}  # x modified, y removed
    assert store.get(key("y")) is None and port_of(store.get(key("x"))) == 81
    assert store.revision == 2
    assert seen == [{key("x"), key("y")}, {key("x"), key("y")}]


def test_identical_reload_is_not_a_change(store: ConfigStore) -> None:
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x")))
    before = store.get(key("x"))
    snap = store.snapshot()
    seen: list[set[ConfigKey]] = []
    store.subscribe(seen.append)
    assert store.replace_source("/a.yaml", load("/a.yaml", "# comment\n" + svc_yaml("x"))) == set()
    assert store.revision == 1 and seen == []
    assert store.get(key("x")) is before  # same object kept
    assert store.snapshot() is snap  # snapshot not rebuilt


def test_snapshot_is_immutable_and_isolated(store: ConfigStore) -> None:
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x")))
    snap = store.snapshot()
    with pytest.raises(TypeError):
        snap[key("z")] = snap[key("x")]  # type: ignore[index]
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x"), svc_yaml("y")))
    assert list(snap) == [key("x")]  # an old snapshot does not see later changes
    assert sorted(store.snapshot()) == [key("x"), key("y")]


def test_rejected_key_keeps_last_good_version(store: ConfigStore) -> None:
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x"), svc_yaml("y")))
    bad = load("/a.yaml", svc_yaml("x").replace("port: 80", "port: 0"), svc_yaml("y", 82))
    assert bad.rejected == (key("x"),)
    assert store.replace_source("/a.yaml", bad) == {key("y")}
    assert port_of(store.get(key("x"))) == 80  # last good kept
    assert port_of(store.get(key("y"))) == 82
    # Fixed later: the new version replaces the kept one.
    assert store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x", 83), svc_yaml("y", 82))) == {key("x")}
    assert port_of(store.get(key("x"))) == 83


def test_rejected_key_without_previous_version_is_absent(store: ConfigStore) -> None:
    bad = load("/a.yaml", svc_yaml("x").replace("port: 80", "port: 0"))
    assert store.replace_source("/a.yaml", bad) == set()
    assert store.get(key("x")) is None and store.revision == 0


def test_syntax_error_keeps_everything_the_source_had(store: ConfigStore) -> None:
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x"), svc_yaml("y")))
    broken = load_text("/a.yaml", svc_yaml("x") + "  bad: [\n")
    assert broken.errors and broken.errors[0].key is None
    assert store.replace_source("/a.yaml", broken) == set()
    assert sorted(store.snapshot()) == [key("x"), key("y")]


def test_remove_source(store: ConfigStore) -> None:
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x")))
    store.replace_source("/b.yaml", load("/b.yaml", svc_yaml("y")))
    assert store.remove_source("/a.yaml") == {key("x")}
    assert list(store.snapshot()) == [key("y")]
    assert store.remove_source("/a.yaml") == set()
    assert store.revision == 3


def test_conflict_first_source_in_path_order_wins_and_falls_back(
    store: ConfigStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pilot.config.store")
    store.replace_source("/z.yaml", load("/z.yaml", svc_yaml("x", 90)))
    # A source earlier in sorted order takes over.
    assert store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x", 80))) == {key("x")}
    assert port_of(store.get(key("x"))) == 80 and store.get(key("x")).source == "/a.yaml"  # type: ignore[union-attr]
    assert any("/a.yaml" in r.getMessage() and "/z.yaml" in r.getMessage() for r in caplog.records)
    # A change in the losing source is not visible.
    assert store.replace_source("/z.yaml", load("/z.yaml", svc_yaml("x", 91))) == set()
    assert port_of(store.get(key("x"))) == 80
    # The winner goes away: the other source's version takes over.
    assert store.remove_source("/a.yaml") == {key("x")}
    assert port_of(store.get(key("x"))) == 91
    assert store.remove_source("/z.yaml") == {key("x")}
    assert store.get(key("x")) is None


def test_list_by_kind_sorted(store: ConfigStore) -> None:
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("b"), svc_yaml("a", ns="z"), svc_yaml("c", ns="a")))
    store.replace_source("/p.yaml", load("/p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"))
    assert [c.key for c in store.list("Service")] == [key("c", "a"), key("b"), key("a", "z")]
    assert [c.name for c in store.list("Pod")] == ["p"]
    assert store.list("VirtualService") == []


def test_failing_subscriber_does_not_block_others(store: ConfigStore) -> None:
    calls: list[set[ConfigKey]] = []

    def boom(_: set[ConfigKey]) -> None:
        raise RuntimeError("boom")

    store.subscribe(boom)
    store.subscribe(calls.append)
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x")))
    assert calls == [{key("x")}]


def test_unattributed_error_from_result_object(store: ConfigStore) -> None:
    store.replace_source("/a.yaml", load("/a.yaml", svc_yaml("x")))
    result = LoadResult(errors=(LoadError("/a.yaml", 0, None, "cannot read file"),))
    assert store.replace_source("/a.yaml", result) == set()
    assert store.get(key("x")) is not None


def test_per_object_upsert_and_delete(store: ConfigStore) -> None:
    """Watch sources (Kubernetes informers) write one object at a time beside whole-file sources."""
    seen: list[set[ConfigKey]] = []
    store.subscribe(seen.append)
    a1 = load("f", svc_yaml("a", 80)).configs[0]
    a2 = load("f", svc_yaml("a", 81)).configs[0]
    assert store.upsert("kubernetes", a1) == {key("a")}
    assert store.upsert("kubernetes", a1) == set(), "the same content again is no change"
    assert store.upsert("kubernetes", a2) == {key("a")} and port_of(store.get(key("a"))) == 81
    assert store.list("Service") == [store.get(key("a"))]
    assert store.delete("kubernetes", key("a")) == {key("a")} and store.get(key("a")) is None
    assert store.delete("kubernetes", key("a")) == set()
    assert seen == [{key("a")}, {key("a")}, {key("a")}]
    assert store.list("Service") == [] and store.snapshot() == {}


def test_a_watched_object_and_a_file_object_with_one_key_fall_back_to_each_other(store: ConfigStore) -> None:
    from_file = load("/cfg/a.yaml", svc_yaml("a", 80))
    store.replace_source("/cfg/a.yaml", from_file)
    from_cluster = load("x", svc_yaml("a", 90)).configs[0]
    store.upsert("kubernetes", from_cluster)  # "/cfg/a.yaml" sorts first: the file wins
    assert port_of(store.get(key("a"))) == 80
    assert store.remove_source("/cfg/a.yaml") == {key("a")} and port_of(store.get(key("a"))) == 90
    assert store.source_keys("kubernetes") == {key("a")}
