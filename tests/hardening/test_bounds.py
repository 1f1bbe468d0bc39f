"""Bad input costs one document or object, with an error naming it, and never the file, the task or the process.

One test per class of hostile input (issue 8, finding 1): deep nesting, alias bombs and recursive aliases,
oversized documents and files, values YAML cannot construct, objects whose generated config multiplies out,
and a failure of pilot's own code while loading. Each checks that the object is refused by name, that the
rest of the file still loads, and that the store keeps the refused object's last good version.
"""

from __future__ import annotations

import json
import logging

import pytest

from pilot.config import bounds, loader, validation, yamlsafe
from pilot.config.loader import LoadResult, load_object, load_text
from pilot.config.store import ConfigStore
from pilot.model.config import ConfigKey

GOOD = """\
apiVersion: v1
kind: Service
metadata: {name: good, namespace: default}
spec: {ports: [{name: http, port: 80}]}
"""


def pod(name: str, spec: str) -> str:
    return f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}\n"


def vs(name: str, body: str) -> str:
    return f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n{body}\n"


def keys(result: LoadResult) -> list[str]:
    return sorted(cfg.key.name for cfg in result.configs)


def only_error(result: LoadResult) -> str:
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return str(result.errors[0])


def test_990_deep_document_is_refused_by_name_and_the_rest_loads() -> None:
    deep = pod("deep", "  x: " + "{a: " * 990 + "1" + "}" * 990)
    result = load_text("f.yaml", deep + "---\n" + GOOD)
    assert only_error(result) == "f.yaml[doc 0] Pod default/deep: document nests more than 100 levels deep"
    assert result.rejected == (ConfigKey("Pod", "default", "deep"),)
    assert keys(result) == ["good"]


def test_depth_reached_through_aliases_is_counted() -> None:
    # Each anchor nests the previous one 60 levels deeper: no single block is deep, the document is.
    text = pod("chain", "  a: &a " + "[" * 60 + "1" + "]" * 60 + "\n  b: &b " + "[" * 60 + "*a" + "]" * 60)
    assert "levels deep (following aliases)" in only_error(load_text("f.yaml", text))


def test_billion_laughs_is_refused_before_it_is_expanded() -> None:
    lines = ['  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {name}: &{name} [{','.join(['*' + prev] * 9)}]")
    text = pod("lol", "\n".join(lines))
    assert len(text) < 600
    error = only_error(load_text("f.yaml", text + "---\n" + GOOD))
    assert error.startswith("f.yaml[doc 0] Pod default/lol: yaml: aliases expand to ")
    assert "more than the limit of 10000 (an alias bomb?)" in error
    assert keys(load_text("f.yaml", text + "---\n" + GOOD)) == ["good"]


def test_5kb_alias_bomb_of_virtual_service_matches_is_refused() -> None:
    body = "  hosts: [a.example.com]\n  x-match: &m {uri: {prefix: /a}}\n"
    body += "  x-route: &r\n    match: [" + ",".join(["*m"] * 550) + "]\n    route: [{destination: {host: a}}]\n"
    body += "  http: [" + ",".join(["*r"] * 550) + "]"
    text = vs("bomb", body)
    assert len(text) < 5_000  # 302,500 matches once expanded
    error = only_error(load_text("f.yaml", text))
    assert error.startswith("f.yaml[doc 0] VirtualService default/bomb: yaml: aliases expand to")


def test_recursive_alias_is_refused() -> None:
    assert "refers to its own anchor" in only_error(load_text("f.yaml", pod("loop", "  a: &a [1, *a]")))


def test_modest_alias_use_is_accepted() -> None:
    text = vs(
        "anchors",
        "  hosts: [a.example.com]\n  http:\n"
        + "".join(
            f"  - match: [{{uri: {{prefix: /{i}}}}}]\n    route: [{{destination: {{host: a}}}}]\n"
            f"    retries: {'&r {attempts: 3, perTryTimeout: 2s}' if i == 0 else '*r'}\n"
            for i in range(20)
        ),
    )
    result = load_text("f.yaml", text)
    assert not result.errors and keys(result) == ["anchors"]


def test_document_larger_than_etcd_allows_is_refused() -> None:
    big = pod("big", "  x: '" + "a" * (bounds.MAX_DOCUMENT_BYTES + 10) + "'")
    error = only_error(load_text("f.yaml", big + "---\n" + GOOD))
    assert error.startswith("f.yaml[doc 0] Pod default/big: document is 1572955 characters, more than the limit of")
    assert error.endswith("1572864 (1.5 MiB, etcd's object size limit)")


def test_list_items_are_held_to_the_object_bound_not_the_list() -> None:
    item = "  - apiVersion: v1\n    kind: Namespace\n    metadata: {{name: n{i}, labels: {{x: '{pad}'}}}}\n"
    pad = "a" * 400_000
    text = "apiVersion: v1\nkind: List\nitems:\n" + "".join(item.format(i=i, pad=pad) for i in range(5))
    assert len(text) > bounds.MAX_DOCUMENT_BYTES
    assert not load_text("f.yaml", text).errors
    huge = "apiVersion: v1\nkind: List\nitems:\n" + item.format(i=9, pad="a" * bounds.MAX_DOCUMENT_BYTES)
    assert "items[0]: document is" in only_error(load_text("f.yaml", huge))


def test_too_many_documents_refuse_the_whole_file() -> None:
    limits = yamlsafe.Limits(documents=3)
    with pytest.raises(yamlsafe.FileLimitError, match="more than 3 documents"):
        list(yamlsafe.load_documents("a: 1\n---\nb: 2\n---\nc: 3\n---\nd: 4\n", limits))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2001-02-30", "ValueError: day is out of range for month"),
        ("!!int 0x", "ValueError"),
        ("!!timestamp 10000-01-01", "AttributeError"),
        ("!!bool maybe", "KeyError"),
        ("9" * 5000, "Exceeds the limit"),
        ("!!python/object:os.system x", "could not determine a constructor"),
    ],
)
def test_values_yaml_cannot_construct_cost_only_their_document(value: str, why: str) -> None:
    result = load_text("f.yaml", pod("odd", f"  x: {value}") + "---\n" + GOOD)
    error = only_error(result)
    assert error.startswith("f.yaml[doc 0] Pod default/odd: yaml: ") and why in error
    assert keys(result) == ["good"] and result.rejected == (ConfigKey("Pod", "default", "odd"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            vs("many", "  hosts: [a]\n  http:\n" + "  - route: [{destination: {host: a}}]\n" * 5001),
            "spec.http: 5001 routes after match expansion (http, tcp and tls), more than the limit of 5000",
        ),
        (
            vs(
                "wide",
                "  hosts: [" + ", ".join(f"h{i}" for i in range(200)) + "]\n  http:\n"
                "  - match: [" + ", ".join(f"{{uri: {{exact: /{i}}}}}" for i in range(600)) + "]\n"
                "    route: [{destination: {host: a}}]",
            ),
            "spec.hosts: 120000 hosts x 600 routes, more than the limit of 100000",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n"
            "  hosts: [" + ", ".join(f"h{i}.com" for i in range(100)) + "]\n"
            "  ports: [" + ", ".join(f"{{number: {p}, name: p{p}}}" for p in range(1, 11)) + "]\n"
            "  endpoints: [" + ", ".join(f"{{address: 10.0.0.{i}}}" for i in range(101)) + "]\n",
            "spec.endpoints: 101000 hosts x ports x endpoints, more than the limit of 100000",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\nspec:\n  host: a\n"
            "  subsets: [" + ", ".join(f"{{name: s{i}}}" for i in range(1001)) + "]\n",
            "spec.subsets: 1001 subsets, more than the limit of 1000",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: es, labels: "
            "{kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints:\n" + "- addresses: [10.0.0.1]\n" * 1001,
            "endpoints: 1001 endpoints, more than the limit of 1000",
        ),
    ],
    ids=["vs-routes", "vs-hosts-x-routes", "se-endpoints", "dr-subsets", "slice-endpoints"],
)
def test_objects_whose_config_multiplies_out_are_refused(text: str, expected: str) -> None:
    result = load_text("f.yaml", text)
    assert [e.message for e in result.errors] == [expected]
    assert len(result.rejected) == 1 and not result.configs


def test_kubernetes_objects_are_held_to_the_same_depth() -> None:
    doc: dict[str, object] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "deep"}}
    inner: dict[str, object] = doc
    for _ in range(300):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    result = load_object("kubernetes", json.loads(json.dumps(doc)))
    assert only_error(result) == "kubernetes[doc 0] Pod default/deep: nested more than 100 levels deep"


def test_a_failure_of_pilots_own_code_costs_one_object(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_check = validation.check

    def check(kind: str, spec: dict[str, object], namespace: str):  # type: ignore[no-untyped-def]
        if spec.get("hosts") == ["boom"]:
            raise RuntimeError("bug")
        return real_check(kind, spec, namespace)

    monkeypatch.setattr(loader.validation, "check", check)
    caplog.set_level(logging.ERROR, logger="pilot.config.loader")
    text = vs("bad", "  hosts: [boom]\n  http: [{route: [{destination: {host: a}}]}]") + "---\n" + GOOD
    result = load_text("f.yaml", text)
    assert (
        only_error(result)
        == "f.yaml[doc 0] VirtualService default/bad: internal error while loading: RuntimeError: bug"
    )
    assert keys(result) == ["good"]
    assert "config: internal error loading f.yaml[doc 0]" in caplog.text


def test_a_refused_object_keeps_its_last_good_version_in_the_store() -> None:
    store = ConfigStore()
    store.replace_source("f.yaml", load_text("f.yaml", pod("p", "  nodeName: n1") + "---\n" + GOOD))
    lines = ['  a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"  {name}: &{name} [{','.join(['*' + prev] * 9)}]")
    store.replace_source("f.yaml", load_text("f.yaml", pod("p", "\n".join(lines)) + "---\n" + GOOD))
    kept = store.get(ConfigKey("Pod", "default", "p"))
    assert kept is not None and kept.spec["spec"] == {"nodeName": "n1"}
    assert store.get(ConfigKey("Service", "default", "good")) is not None


def test_a_list_without_a_sequence_of_items_is_held_to_the_document_bound() -> None:
    text = "apiVersion: v1\nkind: List\nitems: {x: '" + "a" * (bounds.MAX_DOCUMENT_BYTES + 10) + "'}\n"
    assert "more than the limit of 1572864" in only_error(load_text("f.yaml", text))
