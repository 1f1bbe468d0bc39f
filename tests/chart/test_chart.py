"""The Helm chart in charts/pilot, checked with the real helm binary: lint, the Deployment and its args, the
config directory, scaling and NOTES. RBAC, CRDs, the webhook, monitoring and the Kubernetes schema check are
in test_chart_kubernetes.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    CHART,
    CONFIG_DIR,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    REPO,
    container,
    env_of,
    flag,
    helm,
    mounts_of,
    of_kind,
    only,
    parse_serve_args,
    pod_spec,
    render,
    render_error,
    render_values,
    requires_helm,
)

pytestmark = requires_helm

BOOKINFO = REPO / "examples" / "bookinfo"
FILES_ONLY = ("--set", "kubernetes.enabled=false")
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ValidatingWebhookConfiguration"}


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return render()


# ----- lint -----


def test_lint_strict_default_values() -> None:
    proc = helm("lint", "--strict", str(CHART), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_lint_strict_with_config_and_ha() -> None:
    proc = helm(
        "lint",
        "--strict",
        str(CHART),
        "--set-file",
        f"config.gateway\\.yaml={BOOKINFO / 'gateway.yaml'}",
        "--set",
        "kubernetes.enabled=false,replicaCount=3,livenessProbe.enabled=false,pushThrottle=20,xdsSendTimeout=5",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lint_strict_everything_on() -> None:
    proc = helm(
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "autoscaleEnabled=true,autoscaleMin=2,webhook.enabled=true,webhook.caBundle=Zm9v,serviceMonitor.enabled=true,"
        "secureXds.enabled=true,secureXds.clientCertificates=true,"
        "prometheusRule.enabled=true,env.PILOT_ENABLE_STATUS=true,meshConfig.discoverySelectors[0].matchLabels.a=b",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----- default render -----


def test_default_render_kinds(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted({d["kind"] for d in default_docs})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for doc in default_docs:
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], doc["kind"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_deployment_args(default_docs: list[dict[str, Any]]) -> None:
    c = container(default_docs)
    # The image's ENTRYPOINT is `pilot`: the chart sets only args.
    assert "command" not in c
    args = c["args"]
    assert flag(args, "--log-level") == "info"
    serve_at = args.index("serve")
    # Global flags go before the subcommand, serve's flags after it.
    assert args.index("--log-level") < serve_at < args.index("--grpc-addr")
    assert flag(args, "--grpc-addr") == "0.0.0.0:15010"
    assert flag(args, "--monitoring-addr") == "0.0.0.0:15014"
    assert flag(args, "--domain-suffix") == "cluster.local"
    # Kubernetes in-cluster is pilot serve's default in a pod given neither --config-dir nor --kubeconfig.
    assert "--config-dir" not in args
    assert "--kubeconfig" not in args
    assert "--webhook-addr" not in args


def test_deployment_args_accepted_by_pilot_cli(default_docs: list[dict[str, Any]]) -> None:
    """The rendered args parse with pilot's own argparse parser, to the intended values."""
    ns = parse_serve_args(container(default_docs)["args"])
    assert ns.command == "serve"
    assert ns.config_dir is None
    assert ns.grpc_addr == "0.0.0.0:15010"
    assert ns.monitoring_addr == "0.0.0.0:15014"
    assert ns.domain_suffix == "cluster.local"


def test_all_modes_args_accepted_by_pilot_cli(tmp_path: Path) -> None:
    files = render(*FILES_ONLY)
    ns = parse_serve_args(container(files)["args"])
    assert ns.config_dir == CONFIG_DIR
    assert getattr(ns, "kubeconfig", None) is None

    remote = render_values(
        tmp_path,
        {
            "kubernetes": {"kubeconfigSecret": "remote-kubeconfig"},
            "config": {"a.yaml": "kind: List\nitems: []\n"},
            "meshConfig": {"discoverySelectors": [{"matchLabels": {"mesh": "on"}}]},
            "webhook": {"enabled": True, "caBundle": "Zm9v"},
            "extraContainerArgs": ["--workers", "1"],
        },
    )
    ns = parse_serve_args(container(remote)["args"])
    assert ns.config_dir == CONFIG_DIR
    assert ns.kubeconfig == "/var/run/secrets/remote/config"
    assert ns.discovery_selectors == "/etc/pilot/mesh/mesh.yaml"
    assert ns.workers == 1
    # Every file the args name is a mounted volume.
    mounts = mounts_of(remote)
    for path in (ns.config_dir, ns.kubeconfig, ns.discovery_selectors):
        assert any(path == m or path.startswith(m + "/") for m in mounts), f"{path} not under {sorted(mounts)}"


def test_container_ports(default_docs: list[dict[str, Any]]) -> None:
    ports = {p["name"]: p for p in container(default_docs)["ports"]}
    assert set(ports) == {"grpc-xds", "http-monitoring"}
    assert ports["grpc-xds"]["containerPort"] == 15010
    assert ports["http-monitoring"]["containerPort"] == 15014
    assert all(p["protocol"] == "TCP" for p in ports.values())


def test_readiness_probe(default_docs: list[dict[str, Any]]) -> None:
    probe = container(default_docs)["readinessProbe"]
    assert probe["httpGet"] == {"path": "/ready", "port": 15014}
    assert probe["periodSeconds"] <= 5


def test_liveness_probe(default_docs: list[dict[str, Any]]) -> None:
    probe = container(default_docs)["livenessProbe"]
    # Not /ready: a slow initial sync must not get the pod restarted.
    assert probe["httpGet"] == {"path": "/metrics", "port": 15014}
    # A loop busy with a large push for a few seconds is not a dead pod.
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 30
    assert "livenessProbe" not in container(render("--set", "livenessProbe.enabled=false"))


def test_graceful_termination(default_docs: list[dict[str, Any]]) -> None:
    """preStop sleeps while the pod leaves the Service's endpoints; the grace period covers it and the drain."""
    pod = pod_spec(default_docs)
    command = container(default_docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = int(command[1])
    assert sleep >= 1
    assert pod["terminationGracePeriodSeconds"] >= sleep + 10
    docs = render("--set", "preStopSleepSeconds=12,terminationGracePeriodSeconds=60")
    assert container(docs)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "12"]
    assert pod_spec(docs)["terminationGracePeriodSeconds"] == 60
    assert "lifecycle" not in container(render("--set", "preStopSleepSeconds=0"))


def test_rolling_update_keeps_a_replica_serving(default_docs: list[dict[str, Any]]) -> None:
    rolling = only(default_docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": 0}


def test_debounce_env_defaults(default_docs: list[dict[str, Any]]) -> None:
    env = env_of(container(default_docs))
    assert env["PILOT_DEBOUNCE_AFTER"] == "100ms"
    assert env["PILOT_DEBOUNCE_MAX"] == "10s"
    # Unset by default: pilot's own defaults (auto throttle, 10 s send timeout) apply.
    assert "PILOT_PUSH_THROTTLE" not in env
    assert "PILOT_XDS_SEND_TIMEOUT" not in env


def test_keepalive_max_connection_age(default_docs: list[dict[str, Any]]) -> None:
    assert env_of(container(default_docs))["PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE"] == "30m"
    assert (
        env_of(container(render("--set", "keepaliveMaxServerConnectionAge=5m")))[
            "PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE"
        ]
        == "5m"
    )
    assert "PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE" not in env_of(
        container(render("--set", "keepaliveMaxServerConnectionAge="))
    )


def test_pod_identity_env(default_docs: list[dict[str, Any]]) -> None:
    """POD_NAME (Lease holder identity) and POD_NAMESPACE (Lease namespace) come from the downward API."""
    refs = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container(default_docs)["env"] if "valueFrom" in e
    }
    assert refs == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def test_debounce_and_push_env_from_values() -> None:
    docs = render(
        "--set",
        "debounce.after=250ms,debounce.max=3s,pushThrottle=40,xdsSendTimeout=7",
    )
    env = env_of(container(docs))
    assert env["PILOT_DEBOUNCE_AFTER"] == "250ms"
    assert env["PILOT_DEBOUNCE_MAX"] == "3s"
    assert env["PILOT_PUSH_THROTTLE"] == "40"
    assert env["PILOT_XDS_SEND_TIMEOUT"] == "7"


def test_extra_env_added_and_overrides(tmp_path: Path) -> None:
    env_list = container(render_values(tmp_path, {"env": {"FOO": "bar", "PILOT_DEBOUNCE_AFTER": "1s", "NUM": 3}}))[
        "env"
    ]
    names = [e["name"] for e in env_list]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    env = {e["name"]: e["value"] for e in env_list if "value" in e}
    assert env["FOO"] == "bar"
    assert env["NUM"] == "3"
    assert env["PILOT_DEBOUNCE_AFTER"] == "1s"
    # The chart's own default in `env` stays unless overridden.
    assert env["PILOT_ENABLE_STATUS"] == "false"


def test_istiod_style_pilot_block(tmp_path: Path) -> None:
    """`pilot.*` values apply as the top-level ones, win over them, and a false under `pilot:` overrides true."""
    docs = render(
        "--set",
        "pilot.env.PILOT_DEBOUNCE_AFTER=200ms,pilot.replicaCount=2,pilot.livenessProbe.enabled=false,"
        "pilot.resources.requests.cpu=2",
    )
    c = container(docs)
    assert env_of(c)["PILOT_DEBOUNCE_AFTER"] == "200ms"
    assert env_of(c)["PILOT_ENABLE_STATUS"] == "false"  # env merged key by key, not replaced
    assert only(docs, "Deployment")["spec"]["replicas"] == 2
    assert "livenessProbe" not in c
    assert c["resources"]["requests"] == {"cpu": 2, "memory": "1Gi"}
    on = render_values(tmp_path, {"autoscaleEnabled": True, "pilot": {"autoscaleEnabled": False}})
    assert not of_kind(on, "HorizontalPodAutoscaler")


def test_domain_suffix_override() -> None:
    c = container(render("--set", "domainSuffix=corp.example"))
    assert flag(c["args"], "--domain-suffix") == "corp.example"


def test_security_context(default_docs: list[dict[str, Any]]) -> None:
    pod = pod_spec(default_docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["runAsGroup"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(default_docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "privileged" not in sc
    # The one writable path a read-only root needs.
    _, volume = mounts_of(default_docs)["/tmp"]
    assert "emptyDir" in volume


def test_resources_and_replicas(default_docs: list[dict[str, Any]]) -> None:
    deploy = only(default_docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    requests = container(default_docs)["resources"]["requests"]
    assert requests == {"cpu": "500m", "memory": "1Gi"}


def test_scheduling_values() -> None:
    docs = render(
        "--set",
        "nodeSelector.pool=infra,tolerations[0].key=dedicated,tolerations[0].operator=Exists,priorityClassName=high",
    )
    pod = pod_spec(docs)
    assert pod["nodeSelector"] == {"pool": "infra"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["priorityClassName"] == "high"


def test_pod_not_injected_and_scrapable(default_docs: list[dict[str, Any]]) -> None:
    meta = only(default_docs, "Deployment")["spec"]["template"]["metadata"]
    assert meta["labels"]["sidecar.istio.io/inject"] == "false"
    assert meta["annotations"]["prometheus.io/port"] == "15014"
    assert meta["annotations"]["prometheus.io/scrape"] == "true"


# ----- labels, service -----


def test_labels_and_selectors(default_docs: list[dict[str, Any]]) -> None:
    for doc in default_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app"] == "pilot", doc["kind"]
        assert labels["app.kubernetes.io/name"] == "pilot", doc["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, doc["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", doc["kind"]
    deploy = only(default_docs, "Deployment")
    selector = deploy["spec"]["selector"]["matchLabels"]
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert selector["app"] == "pilot"
    assert selector.items() <= pod_labels.items()
    assert only(default_docs, "Service")["spec"]["selector"] == selector


def test_service_ports(default_docs: list[dict[str, Any]]) -> None:
    svc = only(default_docs, "Service")
    assert svc["metadata"]["name"] == FULLNAME
    assert svc["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"grpc-xds", "http-monitoring"}
    assert ports["grpc-xds"]["port"] == 15010
    assert ports["grpc-xds"]["appProtocol"] == "grpc"
    assert ports["http-monitoring"]["port"] == 15014
    container_ports = {p["name"] for p in container(default_docs)["ports"]}
    for p in ports.values():
        assert p["targetPort"] in container_ports


def test_secure_xds_port_with_its_serving_certificate(tmp_path: Path) -> None:
    """secureXds: TLS xDS on 15012 (Service port https-dns, as istiod), the serving certificate mounted from a
    Secret, and with clientCertificates the root that signs client certificates."""
    docs = render_values(tmp_path, {"secureXds": {"enabled": True, "clientCertificates": True}})
    ns = parse_serve_args(container(docs)["args"])
    assert ns.secure_grpc_addr == "0.0.0.0:15012"
    assert (ns.tls_cert, ns.tls_key, ns.ca_cert) == tuple(
        f"/var/run/secrets/pilot-xds/{name}" for name in ("tls.crt", "tls.key", "ca.crt")
    )
    mounts = mounts_of(docs)
    for path in (ns.tls_cert, ns.tls_key, ns.ca_cert):
        assert any(path.startswith(m + "/") for m in mounts), f"{path} not under {sorted(mounts)}"
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "xds-certs")
    assert volume["secret"]["secretName"] == f"{FULLNAME}-xds-tls"
    assert [item["key"] for item in volume["secret"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    assert {p["name"]: p["containerPort"] for p in container(docs)["ports"]}["https-dns"] == 15012
    service_ports = {p["name"]: p for p in only(docs, "Service")["spec"]["ports"]}
    assert service_ports["https-dns"]["port"] == 15012 and service_ports["https-dns"]["targetPort"] == "https-dns"
    # Without client certificates: no root mounted or passed (tokens authenticate), another Secret name.
    tokens = render("--set", "secureXds.enabled=true", "--set", "secureXds.certSecretName=my-xds-cert")
    ns = parse_serve_args(container(tokens)["args"])
    assert ns.ca_cert is None and ns.tls_cert == "/var/run/secrets/pilot-xds/tls.crt"
    volume = next(v for v in pod_spec(tokens)["volumes"] if v["name"] == "xds-certs")
    assert volume["secret"]["secretName"] == "my-xds-cert"
    assert "https-dns" not in {p["name"] for p in container(render())["ports"]}


def test_service_account(default_docs: list[dict[str, Any]]) -> None:
    sa = only(default_docs, "ServiceAccount")
    pod = pod_spec(default_docs)
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    # The token is mounted because pilot watches the cluster with it.
    assert pod["automountServiceAccountToken"] is True


# ----- Kubernetes source modes -----


def test_files_only_mode_needs_no_api_access() -> None:
    docs = render(*FILES_ONLY)
    assert flag(container(docs)["args"], "--config-dir") == CONFIG_DIR
    assert pod_spec(docs)["automountServiceAccountToken"] is False
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not of_kind(docs, kind), kind
    # The config directory exists even while empty: it is all pilot reads.
    assert only(docs, "ConfigMap")["data"] == {}


def test_config_beside_in_cluster_kubernetes_is_refused() -> None:
    err = render_error("--set-string", "config.a\\.yaml=kind: List")
    assert "not supported by pilot serve yet" in err
    assert "kubernetes.enabled=false" in err


def test_remote_kubeconfig_from_secret() -> None:
    docs = render("--set", "kubernetes.kubeconfigSecret=remote-kubeconfig")
    c = container(docs)
    assert flag(c["args"], "--kubeconfig") == "/var/run/secrets/remote/config"
    mount, volume = mounts_of(docs)["/var/run/secrets/remote"]
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "remote-kubeconfig"
    assert volume["secret"]["items"] == [{"key": "config", "path": "config"}]
    # This cluster's API is not used: no token, and no RBAC here.
    assert pod_spec(docs)["automountServiceAccountToken"] is False
    assert not of_kind(docs, "ClusterRole")


def test_discovery_selectors_file(tmp_path: Path) -> None:
    selectors = [
        {"matchLabels": {"istio-discovery": "enabled"}},
        {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]},
    ]
    docs = render_values(tmp_path, {"meshConfig": {"discoverySelectors": selectors}})
    args = container(docs)["args"]
    path = flag(args, "--discovery-selectors")
    cm = only(docs, "ConfigMap")
    assert cm["metadata"]["name"] == f"{FULLNAME}-meshconfig"
    (name,) = cm["data"]
    assert path == f"/etc/pilot/mesh/{name}"
    _, volume = mounts_of(docs)["/etc/pilot/mesh"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    doc = yaml.safe_load(cm["data"][name])
    assert doc == {"discoverySelectors": selectors}
    # pilot's own parser accepts the file.
    kube_selectors = pytest.importorskip("pilot.sources.kube.selectors")
    parsed = kube_selectors.parse_selectors(doc, path)
    assert len(parsed.selectors) == 2
    # pilot reads the file at start: a change must roll the pods.
    annotations = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    other = render_values(tmp_path, {"meshConfig": {"discoverySelectors": selectors[:1]}})
    other_annotations = only(other, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/mesh-config"] != other_annotations["checksum/mesh-config"]


# ----- config directory -----


def _escape_key(name: str) -> str:
    """A file name as one key of a helm --set path (dots escaped)."""
    return name.replace(".", "\\.")


def _config_volume(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    return mounts_of(docs)[CONFIG_DIR]


def test_config_set_file_renders_configmap_and_mount() -> None:
    src = BOOKINFO / "gateway.yaml"
    docs = render(*FILES_ONLY, "--set-file", f"config.gateway\\.yaml={src}")
    cm = only(docs, "ConfigMap")
    assert cm["data"] == {"gateway.yaml": src.read_text()}
    mount, volume = _config_volume(docs)
    assert mount.get("readOnly") is True
    assert volume["configMap"]["name"] == cm["metadata"]["name"]


def test_config_from_values_file(tmp_path: Path) -> None:
    vs = (
        "apiVersion: networking.istio.io/v1\n"
        "kind: VirtualService\n"
        "metadata: {name: reviews, namespace: default}\n"
        "spec:\n"
        "  hosts: [reviews]\n"
        "  http:\n"
        "  - route:\n"
        "    - destination: {host: reviews, subset: v1}\n"
    )
    se = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]},
    }
    values = {"kubernetes": {"enabled": False}, "config": {"reviews.yaml": vs, "external.yml": se}}
    cm = only(render_values(tmp_path, values), "ConfigMap")
    assert set(cm["data"]) == {"reviews.yaml", "external.yml"}
    assert cm["data"]["reviews.yaml"].strip() == vs.strip()
    assert yaml.safe_load(cm["data"]["reviews.yaml"])["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
    # A YAML object (not text) is rendered as YAML text of the same object.
    assert yaml.safe_load(cm["data"]["external.yml"]) == se


def test_config_bookinfo_loads_in_pilot(tmp_path: Path) -> None:
    """All bookinfo files through the chart's ConfigMap, written out as the kubelet would, pass pilot validate."""
    sources = sorted(BOOKINFO.glob("*.yaml"))
    assert sources
    args: list[str] = list(FILES_ONLY)
    for src in sources:
        args += ["--set-file", f"config.{_escape_key(src.name)}={src}"]
    cm = only(render(*args), "ConfigMap")
    assert sorted(cm["data"]) == [s.name for s in sources]
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "pilot", "validate", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_key_must_be_a_yaml_file_name() -> None:
    err = render_error(*FILES_ONLY, "--set", "config.notes=hello")
    assert "must be a file name ending in .yaml or .yml" in err


def test_existing_configmap() -> None:
    docs = render(*FILES_ONLY, "--set", "existingConfigMap=my-mesh-config")
    assert not of_kind(docs, "ConfigMap")
    _, volume = _config_volume(docs)
    assert volume["configMap"]["name"] == "my-mesh-config"


def test_config_change_does_not_roll_pods() -> None:
    """pilot watches the directory live: the pod template must not depend on the config contents."""
    a = render(*FILES_ONLY, "--set-string", "config.a\\.yaml=kind: List")
    b = render(*FILES_ONLY, "--set-string", "config.a\\.yaml=kind: List\nitems: []")
    assert only(a, "ConfigMap")["data"] != only(b, "ConfigMap")["data"]
    assert only(a, "Deployment")["spec"]["template"] == only(b, "Deployment")["spec"]["template"]


# ----- replicas, autoscaling, PodDisruptionBudget -----


def test_no_pdb_for_single_replica(default_docs: list[dict[str, Any]]) -> None:
    assert not of_kind(default_docs, "PodDisruptionBudget")
    assert not of_kind(default_docs, "HorizontalPodAutoscaler")


def test_ha_replicas_with_pdb() -> None:
    docs = render("--set", "replicaCount=3")
    assert only(docs, "Deployment")["spec"]["replicas"] == 3
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_autoscaling() -> None:
    docs = render("--set", "autoscaleEnabled=true,autoscaleMin=2,autoscaleMax=7,cpu.targetAverageUtilization=65")
    deploy = only(docs, "Deployment")
    # The HPA owns the replica count: a rendered `replicas` would fight it on every upgrade.
    assert "replicas" not in deploy["spec"]
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 65}
    # CPU utilisation needs a CPU request to be measured against.
    assert container(docs)["resources"]["requests"]["cpu"]
    # More than one replica at all times: the PDB is on.
    assert only(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert not of_kind(render("--set", "autoscaleEnabled=true,autoscaleMin=1"), "PodDisruptionBudget")


def test_autoscale_behavior(tmp_path: Path) -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 600}}
    hpa = only(
        render_values(tmp_path, {"autoscaleEnabled": True, "autoscaleBehavior": behavior}), "HorizontalPodAutoscaler"
    )
    assert hpa["spec"]["behavior"] == behavior


def test_pdb_when_enabled() -> None:
    pdb = only(
        render("--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.maxUnavailable=1"), "PodDisruptionBudget"
    )
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]


# ----- NOTES.txt -----


def test_notes_show_bootstrap_command() -> None:
    out = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    notes = out.split("NOTES:", 1)[1]
    assert "pilot bootstrap --node-id" in notes
    assert f"--xds-addr {FULLNAME}.{NAMESPACE}:15010" in notes
    assert "Sources: Kubernetes (this cluster" in notes
    assert "Validating webhook:     off" in notes


# ----- tools/install_helm.sh -----


@pytest.mark.skipif(not (REPO / ".tools" / "bin" / "helm").is_file(), reason="helm not installed in .tools/bin")
def test_install_script_is_idempotent() -> None:
    proc = subprocess.run(["bash", str(REPO / "tools" / "install_helm.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout
