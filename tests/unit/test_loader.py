"""YAML text → Configs: documents, Lists, kinds, errors and content hashes (pilot.config.loader)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.config.loader import LoadError, load_text
from pilot.model.config import ConfigKey

SAMPLES = Path("/work/shared/istio-samples")

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
  labels: {app: reviews}
  annotations: {note: hi}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""

BAD_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: -1
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels: {app: reviews}
spec:
  clusterIP: 10.0.0.5
  ports:
  - name: http
    port: 9080
"""


def keys(result) -> list[ConfigKey]:
    return [c.key for c in result.configs]


# ----- documents and kinds -----


def test_multi_document_with_istio_and_kube_kinds() -> None:
    text = VS + "---\n" + SERVICE + "---\n# only a comment\n---\n"
    result = load_text("a.yaml", text)
    assert keys(result) == [
        ConfigKey("VirtualService", "bookinfo", "reviews"),
        ConfigKey("Service", "default", "reviews"),
    ]
    assert result.errors == () and result.rejected == () and result.skipped_kinds == ()
    vs, svc = result.configs
    # Istio kinds carry the typed message, Kubernetes kinds the whole parsed object.
    assert list(vs.spec.hosts) == ["reviews"]
    assert vs.spec.http[0].route[0].destination.subset == "v1"
    assert vs.labels == {"app": "reviews"} and vs.annotations == {"note": "hi"}
    assert vs.api_version == "networking.istio.io/v1" and vs.source == "a.yaml"
    assert isinstance(svc.spec, dict) and svc.spec["spec"]["ports"][0]["port"] == 9080
    assert svc.labels == {"app": "reviews"}


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_istio_versions_accepted(version: str) -> None:
    result = load_text("a.yaml", VS.replace("networking.istio.io/v1", f"networking.istio.io/{version}"))
    assert keys(result) == [ConfigKey("VirtualService", "bookinfo", "reviews")]
    assert result.configs[0].api_version == f"networking.istio.io/{version}"


def test_default_namespace_applies_when_metadata_has_none() -> None:
    result = load_text("a.yaml", SERVICE, default_namespace="team-a")
    assert keys(result) == [ConfigKey("Service", "team-a", "reviews")]


def test_list_kind_items_are_loaded() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: bookinfo, namespace: ignored}
- apiVersion: v1
  kind: Pod
  metadata: {name: p1, namespace: bookinfo, labels: {app: x}}
- apiVersion: v1
  kind: Service
  metadata: {name: s}
  spec: {ports: [{port: 0}]}
"""
    result = load_text("l.yaml", text)
    # Namespaces are cluster-scoped.
    assert keys(result) == [ConfigKey("Namespace", "", "bookinfo"), ConfigKey("Pod", "bookinfo", "p1")]
    assert result.rejected == (ConfigKey("Service", "default", "s"),)
    assert [str(e) for e in result.errors] == [
        "l.yaml[doc 0] Service default/s: items[2].spec.ports[0].port: 0 out of range 1..65535"
    ]


def test_unknown_kinds_are_skipped_and_reported_once() -> None:
    text = """\
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: a}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: b}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
---
apiVersion: networking.istio.io/v1
kind: EnvoyFilter
metadata: {name: ef}
"""
    result = load_text("x.yaml", text)
    assert result.configs == () and result.errors == ()
    assert result.skipped_kinds == (
        "security.istio.io/v1beta1/AuthorizationPolicy",
        "apps/v1/Deployment",
        "v1/ServiceAccount",
        "networking.istio.io/v1/EnvoyFilter",
    )


# ----- errors -----


def test_yaml_syntax_error_is_one_error_for_the_file() -> None:
    text = SERVICE + "---\n" + "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n"
    result = load_text("broken.yaml", text)
    assert result.configs == () and result.rejected == ()
    assert len(result.errors) == 1
    err = result.errors[0]
    assert err.key is None and err.doc_index == 1
    line = str(err)
    assert line.startswith("broken.yaml[doc 1]: yaml: line ") and "\n" not in line


def test_invalid_istio_object_is_rejected_with_field_path() -> None:
    result = load_text("vs.yaml", SERVICE + "---\n" + BAD_VS)
    assert keys(result) == [ConfigKey("Service", "default", "reviews")]
    assert result.rejected == (ConfigKey("VirtualService", "default", "reviews"),)
    assert len(result.errors) >= 1
    err = result.errors[0]
    assert err.key == ConfigKey("VirtualService", "default", "reviews") and err.doc_index == 1
    assert str(err).startswith("vs.yaml[doc 1] VirtualService default/reviews: spec.http[0].route[0].weight")


def test_missing_name_is_an_error_without_key() -> None:
    result = load_text("n.yaml", "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n")
    assert result.configs == () and result.rejected == ()
    assert [(e.key, e.doc_index) for e in result.errors] == [(None, 0)]
    assert "metadata.name" in str(result.errors[0])


def test_non_mapping_document_and_missing_kind() -> None:
    result = load_text("m.yaml", "- a\n- b\n---\napiVersion: v1\nmetadata: {name: x}\n")
    assert [(e.doc_index, e.key) for e in result.errors] == [(0, None), (1, None)]
    assert "kind" in result.errors[1].message


def test_duplicate_key_in_one_file_errors_on_the_second() -> None:
    second = SERVICE.replace("10.0.0.5", "10.0.0.6")
    result = load_text("d.yaml", SERVICE + "---\n" + second)
    assert len(result.configs) == 1
    assert result.configs[0].spec["spec"]["clusterIP"] == "10.0.0.5"
    assert len(result.errors) == 1
    assert result.errors[0].doc_index == 1 and result.errors[0].key == ConfigKey("Service", "default", "reviews")
    assert "duplicate" in result.errors[0].message


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("spec: {ports: {http: 80}}", "spec.ports: expected a list"),
        ("spec: {ports: [{name: http, port: '80'}]}", "spec.ports[0].port: expected an integer"),
        ("spec: {ports: [{name: http, port: 70000}]}", "spec.ports[0].port: 70000 out of range"),
        ("spec: {ports: [{name: http}]}", "spec.ports[0].port: required"),
        ("spec: {type: ExternalName}", "spec.externalName: required"),
    ],
)
def test_service_light_checks(body: str, path: str) -> None:
    text = f"apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: ns}}\n{body}\n"
    result = load_text("s.yaml", text)
    assert result.configs == ()
    assert result.rejected == (ConfigKey("Service", "ns", "s"),)
    assert any(e.message.startswith(path) for e in result.errors), [str(e) for e in result.errors]


def test_endpoint_slice_checks() -> None:
    good = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-abc, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-v1}
"""
    assert keys(load_text("e.yaml", good)) == [ConfigKey("EndpointSlice", "default", "reviews-abc")]
    bad = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-abc}
endpoints:
- addresses: 10.1.0.1
"""
    result = load_text("e.yaml", bad)
    assert result.rejected == (ConfigKey("EndpointSlice", "default", "reviews-abc"),)
    messages = [e.message for e in result.errors]
    assert any(m.startswith('metadata.labels["kubernetes.io/service-name"]') for m in messages)
    assert any(m.startswith("addressType:") for m in messages)
    assert any(m.startswith("endpoints[0].addresses:") for m in messages)


def test_pod_labels_must_be_a_string_map() -> None:
    result = load_text("p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: [a]}\n")
    assert result.rejected == (ConfigKey("Pod", "default", "p"),)
    assert result.errors[0].message.startswith("metadata.labels: expected a mapping")
    result = load_text("p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {version: 1}}\n")
    assert result.errors[0].message.startswith("metadata.labels.version: expected a string")


def test_load_error_str_formats() -> None:
    key = ConfigKey("VirtualService", "default", "reviews")
    err = LoadError("vs.yaml", 2, key, "spec.http[0].route[0].weight: weight -1 < 0")
    assert str(err) == "vs.yaml[doc 2] VirtualService default/reviews: spec.http[0].route[0].weight: weight -1 < 0"
    assert str(LoadError("ns.yaml", 0, ConfigKey("Namespace", "", "a"), "m")) == "ns.yaml[doc 0] Namespace a: m"
    assert str(LoadError("x.yaml", 3, None, "yaml: bad")) == "x.yaml[doc 3]: yaml: bad"


# ----- content hash -----


def test_content_hash_tracks_content_not_formatting() -> None:
    base = load_text("a.yaml", SERVICE).configs[0].content_hash
    reformatted = SERVICE.replace("labels: {app: reviews}", "labels:\n    app: reviews") + "# trailing comment\n"
    assert load_text("b.yaml", reformatted).configs[0].content_hash == base
    assert load_text("a.yaml", SERVICE.replace("9080", "9081")).configs[0].content_hash != base
    assert load_text("a.yaml", SERVICE.replace("app: reviews", "app: other")).configs[0].content_hash != base
    istio = load_text("a.yaml", VS).configs[0].content_hash
    assert load_text("a.yaml", VS.replace("subset: v1", "subset: v2")).configs[0].content_hash != istio
    assert load_text("a.yaml", VS.replace("note: hi", "note: ho")).configs[0].content_hash != istio


# ----- the shared Istio samples -----


def _sample_files() -> list[Path]:
    return sorted(SAMPLES.rglob("*.yaml"))


@pytest.mark.skipif(not SAMPLES.exists(), reason="istio samples not present")
def test_every_sample_networking_object_loads() -> None:
    files = _sample_files()
    assert files
    total = 0
    skipped: set[str] = set()
    for path in files:
        result = load_text(str(path), path.read_text())
        assert result.errors == (), [str(e) for e in result.errors]
        assert result.rejected == ()
        total += sum(1 for c in result.configs if c.api_version.startswith("networking.istio.io/"))
        skipped.update(result.skipped_kinds)
    assert total == 111  # every networking.istio.io document in the samples
    assert "apps/v1/Deployment" in skipped
    assert not any(kind.endswith("/PeerAuthentication") for kind in skipped), "PeerAuthentication is read now"
