"""The Helm chart in charts/pilot, checked with the real helm binary (``helm lint`` / ``helm template``).

helm is ``<repo>/.tools/bin/helm`` (installed by ``tools/install_helm.sh``) or the one on PATH. Rendered
manifests are parsed with ``yaml.safe_load_all`` and checked structurally.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pilot"
BOOKINFO = REPO / "examples" / "bookinfo"
RELEASE = "rel"
NAMESPACE = "mesh"
FULLNAME = "rel-pilot"
CONFIG_DIR = "/etc/pilot/config"


def _find_helm() -> str | None:
    local = REPO / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


HELM = _find_helm()
pytestmark = pytest.mark.skipif(
    HELM is None, reason="helm not found at .tools/bin/helm or on PATH (run: bash tools/install_helm.sh)"
)


def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    env = dict(os.environ)
    env.setdefault("HELM_CACHE_HOME", "/tmp/pilot-chart-tests/helm-cache")
    env.setdefault("HELM_CONFIG_HOME", "/tmp/pilot-chart-tests/helm-config")
    env.setdefault("HELM_DATA_HOME", "/tmp/pilot-chart-tests/helm-data")
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(*args: str) -> list[dict]:
    out = _helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def container(docs: list[dict]) -> dict:
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def flag(args: list[str], name: str) -> str:
    """The value following ``name`` in an argv list."""
    assert name in args, f"{name} not in {args}"
    i = args.index(name)
    assert i + 1 < len(args), f"{name} has no value in {args}"
    return args[i + 1]


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return render()


# ----- lint -----


def test_lint_strict_default_values() -> None:
    proc = _helm("lint", "--strict", str(CHART), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_lint_strict_with_config_and_ha() -> None:
    proc = _helm(
        "lint",
        "--strict",
        str(CHART),
        "--set-file",
        f"config.gateway\\.yaml={BOOKINFO / 'gateway.yaml'}",
        "--set",
        "replicaCount=3,livenessProbe.enabled=true,pushThrottle=20,xdsSendTimeout=5",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----- default render -----


def test_default_render_kinds(default_docs: list[dict]) -> None:
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    for doc in default_docs:
        assert doc["metadata"]["namespace"] == NAMESPACE


def test_deployment_args(default_docs: list[dict]) -> None:
    c = container(default_docs)
    assert c["command"] == ["pilot"]
    args = c["args"]
    assert "serve" in args
    # Global flags go before the subcommand, serve's flags after it.
    serve_at = args.index("serve")
    assert args.index("--config-dir") > serve_at
    assert flag(args, "--config-dir") == CONFIG_DIR
    assert flag(args, "--grpc-addr") == "0.0.0.0:15010"
    assert flag(args, "--monitoring-addr") == "0.0.0.0:15014"
    assert flag(args, "--domain-suffix") == "cluster.local"
    assert flag(args, "--log-level") == "info"


def test_deployment_args_accepted_by_pilot_cli(default_docs: list[dict]) -> None:
    """The rendered args parse with pilot's own argparse parser, to the intended values."""
    cli = pytest.importorskip("pilot.cli")
    c = container(default_docs)
    ns = cli.build_parser().parse_args(c["args"])
    assert ns.command == "serve"
    assert ns.config_dir == CONFIG_DIR
    assert ns.grpc_addr == "0.0.0.0:15010"
    assert ns.monitoring_addr == "0.0.0.0:15014"
    assert ns.domain_suffix == "cluster.local"


def test_container_ports(default_docs: list[dict]) -> None:
    ports = {p["name"]: p for p in container(default_docs)["ports"]}
    assert set(ports) == {"grpc-xds", "http-monitoring"}
    assert ports["grpc-xds"]["containerPort"] == 15010
    assert ports["http-monitoring"]["containerPort"] == 15014
    assert all(p["protocol"] == "TCP" for p in ports.values())


def test_readiness_probe(default_docs: list[dict]) -> None:
    probe = container(default_docs)["readinessProbe"]
    assert probe["httpGet"]["path"] == "/ready"
    assert probe["httpGet"]["port"] == 15014


def test_liveness_probe_optional(default_docs: list[dict]) -> None:
    assert "livenessProbe" not in container(default_docs)
    probe = container(render("--set", "livenessProbe.enabled=true"))["livenessProbe"]
    # Not /ready: a slow initial load must not get the pod restarted.
    assert probe["httpGet"] == {"path": "/metrics", "port": 15014}


def test_debounce_env_defaults(default_docs: list[dict]) -> None:
    env = env_of(container(default_docs))
    assert env["PILOT_DEBOUNCE_AFTER"] == "100ms"
    assert env["PILOT_DEBOUNCE_MAX"] == "10s"
    # Unset by default: pilot's own defaults (auto throttle, 10 s send timeout) apply.
    assert "PILOT_PUSH_THROTTLE" not in env
    assert "PILOT_XDS_SEND_TIMEOUT" not in env


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
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"env": {"FOO": "bar", "PILOT_DEBOUNCE_AFTER": "1s", "NUM": 3}}))
    env_list = container(render("-f", str(values)))["env"]
    names = [e["name"] for e in env_list]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    env = {e["name"]: e["value"] for e in env_list}
    assert env["FOO"] == "bar"
    assert env["NUM"] == "3"
    assert env["PILOT_DEBOUNCE_AFTER"] == "1s"


def test_domain_suffix_override() -> None:
    c = container(render("--set", "domainSuffix=corp.example"))
    assert flag(c["args"], "--domain-suffix") == "corp.example"


def test_security_context(default_docs: list[dict]) -> None:
    pod = only(default_docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = container(default_docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_resources_and_replicas(default_docs: list[dict]) -> None:
    deploy = only(default_docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    requests = container(default_docs)["resources"]["requests"]
    assert requests == {"cpu": "500m", "memory": "1Gi"}


def test_scheduling_values() -> None:
    docs = render(
        "--set",
        "nodeSelector.pool=infra,tolerations[0].key=dedicated,tolerations[0].operator=Exists",
    )
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "infra"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


# ----- labels, service -----


def test_labels_and_selectors(default_docs: list[dict]) -> None:
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


def test_service_ports(default_docs: list[dict]) -> None:
    svc = only(default_docs, "Service")
    assert svc["metadata"]["name"] == FULLNAME
    assert svc["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"grpc-xds", "http-monitoring"}
    assert ports["grpc-xds"]["port"] == 15010
    assert ports["http-monitoring"]["port"] == 15014
    container_ports = {p["name"] for p in container(default_docs)["ports"]}
    for p in ports.values():
        assert p["targetPort"] in container_ports


def test_service_account(default_docs: list[dict]) -> None:
    sa = only(default_docs, "ServiceAccount")
    pod = only(default_docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


# ----- config directory -----


def _escape_key(name: str) -> str:
    """A file name as one key of a helm --set path (dots escaped)."""
    return name.replace(".", "\\.")


def _config_volume(docs: list[dict]) -> tuple[dict, dict]:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == CONFIG_DIR]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def test_config_set_file_renders_configmap_and_mount() -> None:
    src = BOOKINFO / "gateway.yaml"
    docs = render("--set-file", f"config.gateway\\.yaml={src}")
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
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": {"reviews.yaml": vs, "external.yml": se}}))
    cm = only(render("-f", str(values)), "ConfigMap")
    assert set(cm["data"]) == {"reviews.yaml", "external.yml"}
    assert cm["data"]["reviews.yaml"].strip() == vs.strip()
    assert yaml.safe_load(cm["data"]["reviews.yaml"])["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
    # A YAML object (not text) is rendered as YAML text of the same object.
    assert yaml.safe_load(cm["data"]["external.yml"]) == se


def test_config_bookinfo_loads_in_pilot(tmp_path: Path) -> None:
    """All bookinfo files through the chart's ConfigMap, written out as the kubelet would, pass pilot validate."""
    sources = sorted(BOOKINFO.glob("*.yaml"))
    assert sources
    args: list[str] = []
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
    proc = _helm("template", RELEASE, str(CHART), "--set", "config.notes=hello", check=False)
    assert proc.returncode != 0
    assert "must be a file name ending in .yaml or .yml" in proc.stderr


def test_existing_configmap() -> None:
    docs = render("--set", "existingConfigMap=my-mesh-config")
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    _, volume = _config_volume(docs)
    assert volume["configMap"]["name"] == "my-mesh-config"


def test_config_change_does_not_roll_pods() -> None:
    """pilot watches the directory live: the pod template must not depend on the config contents."""
    a = render("--set-string", "config.a\\.yaml=kind: List")
    b = render("--set-string", "config.a\\.yaml=kind: List\nitems: []")
    assert only(a, "ConfigMap")["data"] != only(b, "ConfigMap")["data"]
    assert only(a, "Deployment")["spec"]["template"] == only(b, "Deployment")["spec"]["template"]


# ----- PodDisruptionBudget -----


def test_no_pdb_for_single_replica(default_docs: list[dict]) -> None:
    assert not [d for d in default_docs if d["kind"] == "PodDisruptionBudget"]


def test_pdb_for_ha() -> None:
    docs = render("--set", "replicaCount=2")
    assert only(docs, "Deployment")["spec"]["replicas"] == 2
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_pdb_when_enabled() -> None:
    pdb = only(
        render("--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.maxUnavailable=1"), "PodDisruptionBudget"
    )
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]


# ----- NOTES.txt -----


def test_notes_show_bootstrap_command() -> None:
    out = _helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    notes = out.split("NOTES:", 1)[1]
    assert "pilot bootstrap --node-id" in notes
    assert f"--xds-addr {FULLNAME}.{NAMESPACE}:15010" in notes


# ----- tools/install_helm.sh -----


@pytest.mark.skipif(not (REPO / ".tools" / "bin" / "helm").is_file(), reason="helm not installed in .tools/bin")
def test_install_script_is_idempotent() -> None:
    proc = subprocess.run(["bash", str(REPO / "tools" / "install_helm.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout
