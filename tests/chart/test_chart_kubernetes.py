"""charts/pilot's cluster objects: every rendered manifest against the Kubernetes OpenAPI schemas (offline,
kubernetes-validate), least-privilege RBAC, the Istio CRDs, the validating webhook, and the Prometheus
Operator objects (whose alert rules promtool checks and unit-tests when it is installed).
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    CLUSTER_NAME,
    FULLNAME,
    NAMESPACE,
    REPO,
    container,
    env_of,
    flag,
    mounts_of,
    of_kind,
    only,
    render,
    render_error,
    render_values,
    requires_helm,
)

pytestmark = requires_helm

ISTIO_PLURALS = ["serviceentries", "workloadentries", "virtualservices", "destinationrules", "gateways", "sidecars"]
ISTIO_KINDS = ["ServiceEntry", "WorkloadEntry", "VirtualService", "DestinationRule", "Gateway", "Sidecar"]
NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
# Every Istio resource pilot reads, by API group, and the versions each group is served at.
ISTIO_RESOURCES = [(NETWORKING, r) for r in ISTIO_PLURALS] + [(SECURITY, "peerauthentications")]
GROUP_VERSIONS = {NETWORKING: {"v1", "v1beta1", "v1alpha3"}, SECURITY: {"v1", "v1beta1"}}
READ_VERBS = {"get", "list", "watch"}

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), the one the issue names, and the newest
# kubernetes-validate knows.
KUBE_VERSIONS = ["1.25.0", "1.30.0"]
# Prometheus Operator kinds: CRDs of that operator, not part of the Kubernetes API, so not in the schemas.
NOT_IN_KUBERNETES_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

WEBHOOK_ON = ("--set", "webhook.enabled=true,webhook.caBundle=Zm9v")
SCENARIOS: dict[str, tuple[str, ...]] = {
    "default": (),
    "ha": ("--set", "replicaCount=3"),
    "autoscaling": ("--set", "autoscaleEnabled=true,autoscaleMin=2,autoscaleMax=6"),
    "crds-skipped": ("--set", "base.enableCRDTemplates=false"),
    "everything": (
        "--set",
        "replicaCount=3,webhook.enabled=true,webhook.caBundle=Zm9v,webhook.namespaceSelector.matchLabels.team=mesh,"
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,env.PILOT_ENABLE_STATUS=true,"
        "meshConfig.discoverySelectors[0].matchLabels.mesh=on,podDisruptionBudget.enabled=true,"
        "secureXds.enabled=true,secureXds.clientCertificates=true",
    ),
    "files-only": ("--set", "kubernetes.enabled=false", "--set-string", "config.a\\.yaml=kind: List"),
    "remote-cluster": ("--set", "kubernetes.kubeconfigSecret=remote"),
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(*args) for name, args in SCENARIOS.items()}


# ----- Kubernetes schemas -----


def _kubernetes_validate() -> Any:
    return pytest.importorskip("kubernetes_validate")


def test_every_manifest_matches_the_kubernetes_schemas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Strict validation (unknown fields are errors) against each supported Kubernetes version's OpenAPI schema."""
    kv = _kubernetes_validate()
    versions = [*KUBE_VERSIONS, kv.latest_version()]
    skipped: set[tuple[str, str]] = set()
    checked: set[str] = set()
    seen: set[str] = set()
    failures = []
    for scenario, docs in rendered.items():
        for doc in docs:
            key = (doc["apiVersion"], doc["kind"])
            if key in NOT_IN_KUBERNETES_SCHEMAS:
                skipped.add(key)
                continue
            text = json.dumps(doc, sort_keys=True)
            if text in seen:  # the same object in several scenarios (the CRDs, mostly) is checked once
                continue
            seen.add(text)
            for version in versions:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as exc:
                    failures.append(f"{scenario}: {doc['kind']} {doc['metadata']['name']} on {version}: {exc}")
            checked.add(doc["kind"])
    assert not failures, "\n".join(failures)
    # Every kind the chart renders was checked, except the two Prometheus Operator kinds, skipped by name.
    assert skipped == NOT_IN_KUBERNETES_SCHEMAS
    assert checked >= {
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
    }


def test_schema_check_rejects_a_bad_manifest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The validator is strict: a misspelt field and a wrong type in a rendered Deployment are caught."""
    kv = _kubernetes_validate()
    deploy = only(rendered["default"], "Deployment")
    misspelt = yaml.safe_load(yaml.safe_dump(deploy))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(misspelt, KUBE_VERSIONS[-1], strict=True)
    wrong_type = yaml.safe_load(yaml.safe_dump(deploy))
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "15010"
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong_type, KUBE_VERSIONS[-1], strict=True)


def test_names_fit_kubernetes_limits(rendered: dict[str, list[dict[str, Any]]]) -> None:
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for docs in rendered.values():
        for doc in docs:
            name = doc["metadata"]["name"]
            if doc["kind"] in ("Service", "Deployment"):
                assert len(name) <= 63 and dns_label.match(name), name
    long = render("--set", "fullnameOverride=" + "p" * 80)
    assert len(only(long, "Service")["metadata"]["name"]) <= 63


# ----- RBAC -----


def _rules(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for doc in of_kind(docs, kind) for rule in doc["rules"]]


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_cluster_role_reads_only_what_pilot_watches(rendered: dict[str, list[dict[str, Any]]]) -> None:
    grants = _grants(_rules(rendered["default"], "ClusterRole"))
    # Secrets: read (never written) as gateway credentials, as istiod reads them.
    expected = {("", r): READ_VERBS for r in ("services", "pods", "nodes", "namespaces", "secrets")}
    expected[("discovery.k8s.io", "endpointslices")] = READ_VERBS
    expected.update({resource: READ_VERBS for resource in ISTIO_RESOURCES})
    # Status writing is off by default (PILOT_ENABLE_STATUS=false): no write verb at all.
    assert grants == expected


def test_status_rbac_follows_pilot_enable_status(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    assert env_of(container(docs))["PILOT_ENABLE_STATUS"] == "true"
    grants = _grants(_rules(docs, "ClusterRole"))
    writes = {key: verbs - READ_VERBS for key, verbs in grants.items() if verbs - READ_VERBS}
    # The only cluster-wide writes: update/patch of the Istio kinds' status subresources.
    assert writes == {(g, f"{r}/status"): {"update", "patch"} for g, r in ISTIO_RESOURCES}
    # Any spelling pilot's boolean parser takes as true turns it on.
    assert ("networking.istio.io", "sidecars/status") in _grants(
        _rules(render("--set-string", "env.PILOT_ENABLE_STATUS=1"), "ClusterRole")
    )


def test_lease_role_is_namespaced(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario in ("default", "everything"):
        docs = rendered[scenario]
        role = only(docs, "Role")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert _grants(role["rules"]) == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
        # Leases are not granted cluster-wide.
        assert not any(group == "coordination.k8s.io" for group, _ in _grants(_rules(docs, "ClusterRole")))


def test_bindings_name_the_pods_service_account(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    sa = only(docs, "ServiceAccount")["metadata"]["name"]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = only(docs, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": only(docs, role_kind)["metadata"]["name"],
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    # Cluster-scoped names carry the namespace: two releases named alike in two namespaces do not collide.
    assert only(docs, "ClusterRole")["metadata"]["name"] == CLUSTER_NAME


def test_no_rbac_without_in_cluster_kubernetes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for scenario in ("files-only", "remote-cluster"):
        kinds = {d["kind"] for d in rendered[scenario]}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}, scenario


# ----- CRDs -----


def test_istio_crds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    crds = {d["spec"]["names"]["kind"]: d for d in of_kind(rendered["default"], "CustomResourceDefinition")}
    assert sorted(crds) == sorted([*ISTIO_KINDS, "PeerAuthentication"])
    for kind, crd in crds.items():
        spec = crd["spec"]
        assert (spec["group"], spec["names"]["plural"]) in ISTIO_RESOURCES
        assert spec["scope"] == "Namespaced"
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        # Deleting a CRD deletes every object of its kind: helm uninstall leaves them.
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        versions = {v["name"]: v for v in spec["versions"]}
        assert set(versions) == GROUP_VERSIONS[spec["group"]], kind
        assert all(v["served"] for v in versions.values())
        assert [name for name, v in versions.items() if v["storage"]] == ["v1"]
        for v in versions.values():
            schema = v["schema"]["openAPIV3Schema"]
            assert schema["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] is True
            assert v["subresources"] == {"status": {}}  # pilot writes validation status there
    assert crds["VirtualService"]["spec"]["names"]["shortNames"] == ["vs"]


def test_crds_match_the_kinds_pilot_reads(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The CRDs, the RBAC rules and the webhook rules all cover exactly the kinds pilot's loader accepts."""
    model = pytest.importorskip("pilot.model.config")
    assert sorted(model.ISTIO_NETWORKING_KINDS) == sorted(ISTIO_KINDS)
    assert {d["spec"]["names"]["kind"] for d in of_kind(rendered["default"], "CustomResourceDefinition")} == {
        *model.ISTIO_NETWORKING_KINDS,
        *model.ISTIO_SECURITY_KINDS,
    }
    assert GROUP_VERSIONS == {
        model.ISTIO_GROUP: set(model.ISTIO_VERSIONS),
        model.SECURITY_GROUP: set(model.SECURITY_VERSIONS),
    }


def test_crds_can_be_skipped(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["crds-skipped"]
    assert not of_kind(docs, "CustomResourceDefinition")
    # Everything else is still there: pilot reads Istio's own CRDs then.
    assert {d["kind"] for d in docs} == {d["kind"] for d in rendered["default"]} - {"CustomResourceDefinition"}
    assert not of_kind(render("--set", "pilot.base.enableCRDTemplates=false"), "CustomResourceDefinition")


# ----- validating webhook -----


def _make_ca_and_server_cert(dns_name: str) -> tuple[bytes, bytes]:
    """A CA certificate and a server certificate it signed for ``dns_name`` (both PEM)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pilot-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM)


def test_webhook_configuration(tmp_path: Path) -> None:
    ca_pem, server_pem = _make_ca_and_server_cert(f"{FULLNAME}.{NAMESPACE}.svc")
    values = {
        "webhook": {
            "enabled": True,
            "caBundle": base64.b64encode(ca_pem).decode(),
            "failurePolicy": "Ignore",
            "namespaceSelector": {
                "matchExpressions": [{"key": "istio-validation", "operator": "NotIn", "values": ["off"]}]
            },
        }
    }
    docs = render_values(tmp_path, values)
    vwc = only(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["name"] == CLUSTER_NAME
    (hook,) = vwc["webhooks"]
    assert hook["name"] == "validation.istio.io"  # kubectl shows denials under istiod's webhook name
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["namespaceSelector"] == values["webhook"]["namespaceSelector"]
    covered = set()
    for rule in hook["rules"]:
        (group,) = rule["apiGroups"]
        assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]
        assert set(rule["apiVersions"]) == GROUP_VERSIONS[group]
        covered.update((group, r) for r in rule["resources"])
    assert covered == set(ISTIO_RESOURCES)

    # The API server calls the Service's https-webhook port, which reaches the container's 15017.
    service_ref = hook["clientConfig"]["service"]
    assert (service_ref["name"], service_ref["namespace"], service_ref["path"]) == (FULLNAME, NAMESPACE, "/validate")
    svc_ports = {p["name"]: p for p in only(docs, "Service")["spec"]["ports"]}
    assert svc_ports["https-webhook"]["port"] == service_ref["port"]
    c_ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert c_ports[svc_ports["https-webhook"]["targetPort"]] == 15017
    assert flag(container(docs)["args"], "--webhook-addr") == "0.0.0.0:15017"

    # caBundle is the CA that signed a certificate for the name the API server connects to.
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    server = x509.load_pem_x509_certificate(server_pem)
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{service_ref['name']}.{service_ref['namespace']}.svc" in sans


def test_webhook_certificate_mounted_from_secret() -> None:
    docs = render(*WEBHOOK_ON)
    args = container(docs)["args"]
    mount, volume = mounts_of(docs)["/var/run/secrets/pilot-webhook"]
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}  # a kubernetes.io/tls Secret
    assert volume["secret"]["defaultMode"] == 0o440
    assert flag(args, "--webhook-cert") == "/var/run/secrets/pilot-webhook/tls.crt"
    assert flag(args, "--webhook-key") == "/var/run/secrets/pilot-webhook/tls.key"
    own = render(*WEBHOOK_ON, "--set", "webhook.certSecretName=my-cert")
    assert mounts_of(own)["/var/run/secrets/pilot-webhook"][1]["secret"]["secretName"] == "my-cert"


def test_webhook_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    assert not of_kind(docs, "ValidatingWebhookConfiguration")
    assert "https-webhook" not in {p["name"] for p in only(docs, "Service")["spec"]["ports"]}
    assert "/var/run/secrets/pilot-webhook" not in mounts_of(docs)


def test_webhook_needs_a_ca_bundle() -> None:
    err = render_error("--set", "webhook.enabled=true")
    assert "webhook.caBundle" in err
    # cert-manager's CA injector fills caBundle in instead.
    docs = render(
        "--set",
        "webhook.enabled=true",
        "--set-string",
        "webhook.annotations.cert-manager\\.io/inject-ca-from=mesh/pilot",
    )
    vwc = only(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "mesh/pilot"}
    assert "caBundle" not in vwc["webhooks"][0]["clientConfig"]


# ----- Prometheus Operator objects -----


def test_service_monitor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not of_kind(rendered["default"], "ServiceMonitor")
    docs = rendered["everything"]
    sm = only(docs, "ServiceMonitor")
    svc = only(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["port"] == "http-monitoring"
    assert endpoint["path"] == "/metrics"
    labelled = render("--set", "serviceMonitor.enabled=true,serviceMonitor.additionalLabels.release=prom")
    assert only(labelled, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom"


def _alerts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    (group,) = only(docs, "PrometheusRule")["spec"]["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def test_prometheus_rule_alerts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not of_kind(rendered["default"], "PrometheusRule")
    alerts = _alerts(rendered["everything"])
    assert set(alerts) == {"PilotConfigPushErrors", "PilotProxyConvergenceHigh", "PilotXDSClientsDropped"}
    selector = f'namespace="{NAMESPACE}",job="{FULLNAME}"'
    push = alerts["PilotConfigPushErrors"]
    # istiod's names: no _total suffix; send errors are pilot_xds_pushes with a *_senderr type.
    assert 'pilot_xds_pushes{type=~".+_senderr",' + selector + "}" in push["expr"]
    assert "pilot_xds_write_timeout{" + selector + "}" in push["expr"]
    assert push["expr"].rstrip().endswith("> 0.1")
    assert push["for"] == "2m"
    convergence = alerts["PilotProxyConvergenceHigh"]
    assert "pilot_proxy_convergence_time_bucket{" + selector + "}" in convergence["expr"]
    assert "histogram_quantile(0.99," in convergence["expr"]
    assert convergence["for"] == "5m"
    dropped = alerts["PilotXDSClientsDropped"]
    assert "pilot_xds{" + selector + "}" in dropped["expr"]
    assert "increase(" not in dropped["expr"]  # pilot_xds is a gauge
    assert dropped["for"] == "1m"
    assert all(rule["labels"] == {"severity": "warning"} for rule in alerts.values())
    tuned = _alerts(
        render(
            "--set",
            'prometheusRule.enabled=true,prometheusRule.clientsDropped=50,prometheusRule.metricSelector=app="pilot"',
        )
    )
    assert tuned["PilotXDSClientsDropped"]["expr"].rstrip().endswith("> 50")
    assert 'pilot_xds{app="pilot"}' in tuned["PilotXDSClientsDropped"]["expr"]


def test_alert_metrics_are_exported_by_pilot(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The alerts' metrics are ones pilot's code emits, except those known to be missing (listed here)."""
    not_exported_yet = {"pilot_proxy_convergence_time"}  # pilot counts convergences but has no histogram yet
    source = "\n".join(p.read_text() for p in (REPO / "pilot").rglob("*.py") if "api" not in p.parts)
    exprs = " ".join(rule["expr"] for rule in _alerts(rendered["everything"]).values())
    names = set(re.findall(r"\b(pilot_[a-z_]+?)(?:_bucket)?\{", exprs))
    assert names == {"pilot_xds_pushes", "pilot_xds_write_timeout", "pilot_proxy_convergence_time", "pilot_xds"}
    missing = {n for n in names if f'"{n}' not in source and f"'{n}" not in source}
    assert missing <= not_exported_yet, f"alerts use metrics pilot does not export: {missing - not_exported_yet}"


PROMTOOL = shutil.which("promtool")
requires_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (bash tools/install_promtool.sh)"
)


def _write_rule_file(path: Path, docs: list[dict[str, Any]], *, annotations: bool) -> None:
    spec = yaml.safe_load(yaml.safe_dump(only(docs, "PrometheusRule")["spec"]))
    if not annotations:
        for group in spec["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path.write_text(yaml.safe_dump(spec))


@requires_promtool
def test_promtool_checks_rules(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    _write_rule_file(rules, rendered["everything"], annotations=True)
    proc = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 3 rules found" in proc.stdout


@requires_promtool
def test_promtool_alert_unit_tests(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """The alerts fire on synthetic series that should fire them, and stay quiet on those that should not."""
    _write_rule_file(tmp_path / "rules.yaml", rendered["everything"], annotations=False)
    sel = f'namespace="{NAMESPACE}",job="{FULLNAME}"'
    warning = [{"exp_labels": {"severity": "warning"}}]

    def pod_alert(pod: str) -> list[dict[str, Any]]:
        return [{"exp_labels": {"severity": "warning", "namespace": NAMESPACE, "pod": pod}}]

    buckets = ["0.1", "0.5", "1", "3", "5", "10", "20", "30", "+Inf"]

    def histogram(pod: str, slow: bool) -> list[dict[str, str]]:
        # 60 observations a minute; slow: all of them above 10 s, else all below 0.5 s.
        def rate(le: str) -> int:
            return 60 if float(le) > (10 if slow else 0.1) else 0

        return [
            {
                "series": f'pilot_proxy_convergence_time_bucket{{{sel},pod="{pod}",le="{le}"}}',
                "values": f"0+{rate(le)}x15",
            }
            for le in buckets
        ]

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "name": "send errors and write timeouts",
                "interval": "30s",
                "input_series": [
                    # 1 failed send per second on pod a; pod b only has write timeouts, 1 per second; pod c is fine.
                    {"series": f'pilot_xds_pushes{{{sel},pod="a",type="eds_senderr"}}', "values": "0+30x20"},
                    {"series": f'pilot_xds_pushes{{{sel},pod="a",type="eds"}}', "values": "0+300x20"},
                    {"series": f'pilot_xds_write_timeout{{{sel},pod="b"}}', "values": "0+30x20"},
                    {"series": f'pilot_xds_pushes{{{sel},pod="c",type="cds"}}', "values": "0+300x20"},
                    {"series": f'pilot_xds_write_timeout{{{sel},pod="c"}}', "values": "0x20"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "PilotConfigPushErrors", "exp_alerts": []},  # `for: 2m`
                    {
                        "eval_time": "8m",
                        "alertname": "PilotConfigPushErrors",
                        "exp_alerts": pod_alert("a") + pod_alert("b"),
                    },
                ],
            },
            {
                "name": "slow convergence on one pod",
                "interval": "1m",
                "input_series": histogram("slow", slow=True) + histogram("fast", slow=False),
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "PilotProxyConvergenceHigh", "exp_alerts": []},  # `for: 5m`
                    {"eval_time": "12m", "alertname": "PilotProxyConvergenceHigh", "exp_alerts": pod_alert("slow")},
                ],
            },
            {
                "name": "proxies lost, not moved",
                "interval": "30s",
                "input_series": [
                    # 50 proxies on two replicas; at 5m pod a's 20 move to pod b (no alert); at 10m 30 are lost.
                    {"series": f'pilot_xds{{{sel},pod="a"}}', "values": "20x9 0x30"},
                    {"series": f'pilot_xds{{{sel},pod="b"}}', "values": "30x9 50x9 20x20"},
                ],
                "alert_rule_test": [
                    {"eval_time": "9m", "alertname": "PilotXDSClientsDropped", "exp_alerts": []},
                    {"eval_time": "10m30s", "alertname": "PilotXDSClientsDropped", "exp_alerts": []},  # `for: 1m`
                    {"eval_time": "12m", "alertname": "PilotXDSClientsDropped", "exp_alerts": warning},
                    # The peak leaves the 5-minute window: the alert resolves.
                    {"eval_time": "17m", "alertname": "PilotXDSClientsDropped", "exp_alerts": []},
                ],
            },
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    proc = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
