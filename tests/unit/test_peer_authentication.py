"""PeerAuthentication: loading and validation (istiod's messages), composition (istiod's AuthenticationPolicies and
ComposePeerAuthentication), the PushContext index, push scopes, cache keys and the types a change affects."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot.config.loader import load_text
from pilot.config.validation import validate_spec_full
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.authn import AuthnPolicies, MergedPeerAuthentication, MtlsMode
from pilot.push.context import PushContext
from pilot.push.offline import environment_of
from pilot.push.scope import scope_for
from pilot.xds import cds, eds, lds, names
from tests.support import push_of

ROOT = "istio-system"
STRICT, PERMISSIVE, DISABLE, UNKNOWN = MtlsMode.STRICT, MtlsMode.PERMISSIVE, MtlsMode.DISABLE, MtlsMode.UNKNOWN


def pa(
    namespace: str, name: str, mode: str | None = None, selector: dict[str, str] | None = None, ports: str = ""
) -> str:
    spec = []
    if selector is not None:
        spec.append(f"selector: {{matchLabels: {selector}}}")
    if mode is not None:
        spec.append(f"mtls: {{mode: {mode}}}")
    if ports:
        spec.append(f"portLevelMtls: {{{ports}}}")
    body = ", ".join(spec)
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{{body}}}
---"""


def policies(*docs: str) -> AuthnPolicies:
    result = load_text("pa.yaml", "".join(docs))
    assert not result.errors, [str(e) for e in result.errors]
    return AuthnPolicies.build(sorted(result.configs, key=lambda c: c.key), ROOT)


# ----- loading and validation -----


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_both_api_versions_load_as_typed_specs(version: str) -> None:
    text = f"""
apiVersion: security.istio.io/{version}
kind: PeerAuthentication
metadata: {{name: finance, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: finance}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls:
    8080: {{mode: DISABLE}}
    "9090": {{}}
"""
    result = load_text("pa.yaml", text)
    assert result.errors == ()
    (cfg,) = result.configs
    assert cfg.key == ConfigKey("PeerAuthentication", "foo", "finance")
    assert cfg.spec.selector.match_labels == {"app": "finance"}
    assert cfg.spec.mtls.mode.name == "STRICT"
    assert {port: m.mode.name for port, m in cfg.spec.port_level_mtls.items()} == {8080: "DISABLE", 9090: "UNSET"}


@pytest.mark.parametrize(
    ("spec", "errors"),
    [
        (
            "{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}",
            ["spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS"],
        ),
        (
            "{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: DISABLE}, 70000: {}}}",
            [
                "spec.portLevelMtls[0]: port must be in range 1..65535",
                "spec.portLevelMtls[70000]: port must be in range 1..65535",
            ],
        ),
        (
            "{selector: {matchLabels: {app: a}}, portLevelMtls: {}}",
            ["spec.portLevelMtls: port level mTLS, if defined, must have at least one element"],
        ),
        (
            "{selector: {matchLabels: {app: 'a*'}}}",
            ['spec.selector.matchLabels[app]: wildcard is not supported in selector: "app=a*"'],
        ),
        (
            "{mtls: {mode: STRICTER}}",
            ['spec.mtls.mode: invalid value "STRICTER", expected one of: UNSET, DISABLE, PERMISSIVE, STRICT'],
        ),
        ("{mtl: {mode: STRICT}}", ["spec.mtl: unknown field"]),
    ],
)
def test_invalid_policies_are_rejected_with_istiod_messages(spec: str, errors: list[str]) -> None:
    head = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: foo}\n"
    text = f"{head}spec: {spec}\n"
    result = load_text("pa.yaml", text)
    assert result.configs == () and result.rejected == (ConfigKey("PeerAuthentication", "foo", "p"),)
    messages = [e.message for e in result.errors]
    for expected in errors:
        assert any(m.startswith(expected) for m in messages), messages


def test_selector_without_labels_is_a_warning() -> None:
    result = load_text("pa.yaml", pa("foo", "p", "STRICT", selector={}))
    (cfg,) = result.configs
    errors, warnings = validate_spec_full("PeerAuthentication", cfg.spec, "foo")
    assert errors == [] and [str(w) for w in warnings] == ["spec.selector: workload selector specified without labels"]


def test_other_security_kinds_and_versions_stay_skipped() -> None:
    text = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a}
---
apiVersion: security.istio.io/v1alpha1
kind: PeerAuthentication
metadata: {name: b}
"""
    result = load_text("x.yaml", text)
    assert result.configs == () and result.errors == ()
    assert result.skipped_kinds == (
        "security.istio.io/v1/AuthorizationPolicy",
        "security.istio.io/v1alpha1/PeerAuthentication",
    )


# ----- composition -----


@pytest.mark.parametrize(
    ("docs", "namespace_modes"),
    [
        ((), {"foo": UNKNOWN}),
        ((pa(ROOT, "mesh", "STRICT"),), {"foo": STRICT}),
        ((pa(ROOT, "mesh"),), {"foo": PERMISSIVE}),  # a mesh policy without mode is PERMISSIVE
        ((pa("foo", "ns", "DISABLE"),), {"foo": DISABLE, "bar": UNKNOWN}),
        ((pa(ROOT, "mesh", "STRICT"), pa("foo", "ns", "UNSET")), {"foo": STRICT, "bar": STRICT}),
        ((pa("foo", "ns", "UNSET"),), {"foo": PERMISSIVE}),  # inherits PERMISSIVE without a mesh policy
        ((pa(ROOT, "mesh", "DISABLE"), pa("foo", "ns", "STRICT")), {"foo": STRICT, "bar": DISABLE}),
        # Workload policies do not make a namespace mode; of two namespace policies the oldest (first) wins.
        ((pa("foo", "w", "DISABLE", selector={"app": "a"}),), {"foo": UNKNOWN}),
        ((pa("foo", "a", "STRICT"), pa("foo", "b", "DISABLE")), {"foo": STRICT}),
    ],
)
def test_namespace_mode(docs: tuple[str, ...], namespace_modes: dict[str, MtlsMode]) -> None:
    index = policies(*docs)
    assert {ns: index.namespace_mode(ns) for ns in namespace_modes} == namespace_modes


APP = {"app": "a"}


@pytest.mark.parametrize(
    ("docs", "labels", "merged"),
    [
        ((), APP, MergedPeerAuthentication(PERMISSIVE)),
        ((pa(ROOT, "mesh", "STRICT"),), APP, MergedPeerAuthentication(STRICT)),
        ((pa(ROOT, "mesh", "STRICT"), pa("foo", "ns", "DISABLE")), APP, MergedPeerAuthentication(DISABLE)),
        ((pa(ROOT, "mesh", "STRICT"), pa("foo", "ns", "UNSET")), APP, MergedPeerAuthentication(STRICT)),
        ((pa("foo", "ns", "STRICT"), pa("foo", "w", "DISABLE", selector=APP)), APP, MergedPeerAuthentication(DISABLE)),
        (
            (pa("foo", "ns", "STRICT"), pa("foo", "w", "DISABLE", selector=APP)),
            {"app": "b"},
            MergedPeerAuthentication(STRICT),
        ),
        # A workload policy's UNSET mode inherits; its UNSET ports inherit the workload's mode.
        (
            (pa("foo", "ns", "STRICT"), pa("foo", "w", "UNSET", selector=APP, ports="8080: {mode: DISABLE}, 9090: {}")),
            APP,
            MergedPeerAuthentication(STRICT, ((8080, DISABLE), (9090, STRICT))),
        ),
        # Selectors in the root namespace are ignored (istiod); other namespaces' policies never apply.
        ((pa(ROOT, "rootsel", "DISABLE", selector=APP),), APP, MergedPeerAuthentication(PERMISSIVE)),
        ((pa("bar", "ns", "DISABLE"),), APP, MergedPeerAuthentication(PERMISSIVE)),
        # Of two workload policies the oldest (first in key order) wins.
        (
            (pa("foo", "w1", "STRICT", selector=APP), pa("foo", "w2", "DISABLE", selector=APP)),
            APP,
            MergedPeerAuthentication(STRICT),
        ),
    ],
)
def test_effective_policy_for_a_workload(
    docs: tuple[str, ...], labels: dict[str, str], merged: MergedPeerAuthentication
) -> None:
    assert policies(*docs).effective("foo", labels) == merged


def test_port_level_mode_lookup() -> None:
    merged = MergedPeerAuthentication(STRICT, ((8080, DISABLE),))
    assert merged.mode_for_port(8080) is DISABLE
    assert merged.mode_for_port(9080) is STRICT


# ----- PushContext, scopes, cache keys -----

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: team-a}
spec:
  hosts: [a.team-a.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.1.1, labels: {app: a, security.istio.io/tlsMode: istio}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: team-b}
spec:
  egress: [{hosts: ["./*"]}]
---"""


def sidecar(namespace: str, labels: dict[str, str] | None = None, ip: str = "10.9.0.1") -> Proxy:
    """An injected sidecar (Istio's injector labels the pod; pilot then knows it has workload certificates)."""
    return parse_proxy(
        f"sidecar~{ip}~app.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "LABELS": {**(labels or {"app": "x"}), "security.istio.io/tlsMode": "istio"}},
    )


def test_push_scope_reaches_the_proxies_a_policy_can_shape() -> None:
    push = push_of(SERVICES)
    a_proxy, b_proxy = sidecar("team-a"), sidecar("team-b")  # team-b imports only its own namespace
    a_scope, b_scope = scope_for(push, a_proxy), scope_for(push, b_proxy)
    new = push_of(SERVICES + pa("team-a", "default", "STRICT") + pa("team-c", "default", "STRICT"))
    key_a = ConfigKey("PeerAuthentication", "team-a", "default")
    key_c = ConfigKey("PeerAuthentication", "team-c", "default")
    # Current scopes (built with the policy) see it; team-b neither lives in team-a nor imports its services.
    assert scope_for(new, a_proxy).depends_on(key_a)
    assert not scope_for(new, b_proxy).depends_on(key_a)
    assert not scope_for(new, a_proxy).depends_on(key_c)
    # A root-namespace policy reaches everyone; previous scopes never saw the new keys.
    assert scope_for(new, b_proxy).depends_on(ConfigKey("PeerAuthentication", ROOT, "x")) is False
    mesh = push_of(SERVICES + pa(ROOT, "default", "STRICT"))
    assert scope_for(mesh, b_proxy).depends_on(ConfigKey("PeerAuthentication", ROOT, "default"))
    assert not a_scope.depends_on(key_a) and not b_scope.depends_on(key_a)


def test_a_policy_change_affects_cds_eds_and_lds_but_not_rds() -> None:
    assert names.affected_types(frozenset({"PeerAuthentication"})) == (
        names.CLUSTER_TYPE,
        names.ENDPOINT_TYPE,
        names.LISTENER_TYPE,
    )


def test_the_index_is_reused_unless_policies_change() -> None:
    first = load_text("a.yaml", SERVICES + pa("team-a", "default", "STRICT")).configs
    env = environment_of(first)
    push1 = PushContext.build(env, "1", 1)
    index = push1.authn_policies
    push2 = PushContext.build(env, "2", 2, previous=push1, changed_kinds=frozenset({"VirtualService"}))
    assert push2.authn_policies is index
    push3 = PushContext.build(env, "3", 3, previous=push2, changed_kinds=frozenset({"PeerAuthentication"}))
    assert push3.authn_policies is not index


def _unit_keys(units: list) -> dict[str, object]:
    return {unit.key[1]: unit for unit in units}


def test_cache_keys_and_dependencies_follow_the_policies() -> None:
    proxy = sidecar("team-a")
    cluster = "outbound|80||a.team-a.svc.cluster.local"
    plain = push_of(SERVICES)
    strict = push_of(SERVICES + pa("team-a", "default", "STRICT"))
    disabled = push_of(SERVICES + pa("team-a", "default", "DISABLE"))
    key_a = ConfigKey("PeerAuthentication", "team-a", "default")
    units = {
        name: _unit_keys(cds.cluster_units(proxy, p, scope_for(p, proxy)))[cluster]
        for name, p in (("plain", plain), ("strict", strict), ("disabled", disabled))
    }
    # CDS: the key holds the policies' version and whether auto-mTLS applies; the policy is a dependency.
    assert len({u.key for u in units.values()}) == 3
    assert key_a in units["strict"].deps and key_a not in units["plain"].deps
    assert units["strict"].key[-2] is True and units["disabled"].key[-2] is False  # auto-mTLS
    # EDS: likewise (istiod clears every assignment on a PeerAuthentication change).
    eds_units = [eds.endpoint_unit(proxy, p, cluster) for p in (plain, strict, disabled)]
    assert len({u.key for u in eds_units}) == 3 and key_a in eds_units[1].deps
    # LDS: an instance's inbound listeners depend on the policies of its scope, its outbound ones do not (and
    # a proxy without an inbound side has only those).
    instance = sidecar("team-a", {"app": "a"}, ip="10.0.1.1")
    scope = scope_for(strict, instance)
    (outbound,) = lds.listener_units(instance, strict, scope)
    (inbound,) = lds.inbound_listener_units(instance, strict, scope, strict.view_of(instance))
    assert inbound.key[0] == "lds-inbound" and key_a in inbound.deps and key_a not in outbound.deps
    assert lds.inbound_listener_units(proxy, strict, scope_for(strict, proxy), strict.view_of(proxy)) == []


def test_proxy_classes_split_by_the_policy_in_effect_and_by_service_targets() -> None:
    push = push_of(SERVICES + pa("team-a", "w", "DISABLE", selector={"app": "special"}))
    plain, plain2 = sidecar("team-a", {"app": "x"}), sidecar("team-a", {"app": "y"}, ip="10.9.0.2")
    special = sidecar("team-a", {"app": "special"})
    instance = sidecar("team-a", {"app": "a"}, ip="10.0.1.1")  # the endpoint of a.team-a
    special_instance = sidecar("team-a", {"app": "special"}, ip="10.0.1.1")
    assert push.view_of(plain) == push.view_of(plain2)  # labels that select nothing do not split classes
    # Without an inbound side the policy in effect does not matter; with one it does.
    assert push.view_of(special) == push.view_of(plain)
    assert push.view_of(instance) != push.view_of(plain)
    assert push.view_of(special_instance) != push.view_of(instance)
    assert [t.service.hostname for t in push.service_targets(instance)] == ["a.team-a.svc.cluster.local"]
    # The inbound side splits listener and cluster snapshots only: scopes, routes, endpoints stay shared.
    assert push.view_of(instance).outbound == push.view_of(plain).outbound
    assert scope_for(push, instance) is scope_for(push, plain)


def test_file_loader_accepts_security_kinds_beside_networking_ones(tmp_path: Path) -> None:
    result = load_text(str(tmp_path / "x.yaml"), SERVICES + pa("team-a", "default", "STRICT"))
    kinds = sorted({c.kind for c in result.configs})
    assert kinds == ["PeerAuthentication", "ServiceEntry", "Sidecar"]
    cfg: Config = next(c for c in result.configs if c.kind == "PeerAuthentication")
    assert cfg.api_version == "security.istio.io/v1"


def test_instances_share_their_outbound_snapshots_and_add_only_their_inbound_side() -> None:
    from pilot.xds.cache import XdsCache
    from pilot.xds.generate import Generator
    from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE
    from pilot.xds.snapshot import NameSet, Snapshot

    push = push_of(SERVICES)
    generator = Generator(XdsCache())
    client = sidecar("team-a", {"app": "x"})
    instance = sidecar("team-a", {"app": "a"}, ip="10.0.1.1")

    def snapshot(type_url: str, proxy: Proxy, names: NameSet | None = None) -> Snapshot:
        return generator.snapshot(type_url, proxy, push, push.view_of(proxy), names)

    for type_url in (CLUSTER_TYPE, LISTENER_TYPE):
        shared, own = snapshot(type_url, client), snapshot(type_url, instance)
        assert own is not shared
        extra = set(own.resources) - set(shared.resources)
        assert extra and all(n.startswith(("inbound|", "virtualInbound", "InboundPassthrough")) for n in extra)
        # The outbound resources are the very same encoded objects, not rebuilt per instance.
        assert all(own.resources[n] is r for n, r in shared.resources.items())
    assert set(snapshot(CLUSTER_TYPE, instance).resources) - set(snapshot(CLUSTER_TYPE, client).resources) == {
        "inbound|80||",
        "InboundPassthroughCluster",
    }
    names = NameSet.of({"outbound|80||a.team-a.svc.cluster.local"})
    assert snapshot(ENDPOINT_TYPE, instance, names) is snapshot(ENDPOINT_TYPE, client, names)
