"""pilot analyze: istioctl analyze's checks, codes and output on planted mistakes and on Istio's samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pilot.cli import main
from pilot.tools.analyze.analyzers import analyze
from pilot.tools.analyze.command import EXIT_FOUND_ISSUES
from pilot.tools.analyze.messages import BY_CODE, Message, sorted_unique
from pilot.tools.analyze.resources import load
from pilot.tools.files import expand

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "istio-samples"

# One mistake per object (plus the objects that make the Kubernetes-kind analyzers run: a Pod, a Namespace and a
# Node, as istioctl runs an analyzer only when the kinds it reads are there).
PLANTED = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-abc, namespace: shop, labels: {app: reviews, version: v1}}
spec: {nodeName: node-1, containers: [{name: app, image: reviews}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: web, port: 9080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: shop}
spec:
  selector: {app: multi}
  ports: [{name: http, port: 80, protocol: TCP}, {name: http-admin, port: 8080, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-nowhere, namespace: shop}
spec:
  hosts: [nowhere-front]
  http:
  - route:
    - destination: {host: nowhere}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-missing-subset, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-missing-gateway, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [missing-gateway]
  http:
  - route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-a, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-b, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unreachable, namespace: shop}
spec:
  hosts: [unreachable.shop.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews}
  - route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: which-port, namespace: shop}
spec:
  hosts: [multi-front]
  http:
  - route:
    - destination: {host: multi}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: negative, namespace: shop}
spec:
  hosts: [negative]
  http:
  - route:
    - destination: {host: reviews}
      weight: -1
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: selects-nothing, namespace: shop}
spec:
  selector: {istio: nothing-here}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: first, namespace: shop}
spec:
  selector: {app: reviews}
  servers:
  - port: {number: 8443, name: http, protocol: HTTP}
    hosts: [same.example.com]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: second, namespace: shop}
spec:
  selector: {app: reviews}
  servers:
  - port: {number: 8443, name: http, protocol: HTTP}
    hosts: [same.example.com]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: unknown-host, namespace: shop}
spec:
  host: unknown.shop.svc.cluster.local
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: no-ca, namespace: shop}
spec:
  host: ratings
  trafficPolicy:
    tls: {mode: SIMPLE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-no-address, namespace: shop}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-http, namespace: shop}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.1]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-grpc, namespace: shop}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.2]
  ports: [{number: 8000, name: grpc, protocol: GRPC}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: one, namespace: shop}
spec:
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: two, namespace: shop}
spec:
  egress: [{hosts: ["./*"]}]
"""

PLANTED_FINDINGS = {
    "IST0101 VirtualService shop/to-nowhere",  # a destination host no Service or ServiceEntry has
    "IST0101 VirtualService shop/to-missing-subset",  # subset v9 of reviews: no DestinationRule defines it
    "IST0101 VirtualService shop/to-missing-gateway",  # a gateway that does not exist
    "IST0132 VirtualService shop/to-missing-gateway",  # ... so none of its hosts is in it
    "IST0101 Gateway shop/selects-nothing",  # a gateway selector no pod matches
    "IST0106 VirtualService shop/negative",  # schema: weight -1
    "IST0109 VirtualService shop/ratings-a",  # two mesh VirtualServices for one host
    "IST0109 VirtualService shop/ratings-b",
    "IST0111 Sidecar shop/one",  # two Sidecars without a workload selector in one namespace
    "IST0111 Sidecar shop/two",
    "IST0112 VirtualService shop/which-port",  # multi has two ports: the destination must name one
    "IST0118 Service shop/ratings",  # port name "web" says no protocol
    "IST0128 DestinationRule shop/no-ca",  # SIMPLE TLS without caCertificates
    "IST0130 VirtualService shop/unreachable",  # an unreachable rule (a second rule without match)
    "IST0134 ServiceEntry shop/tcp-no-address",  # TCP without addresses
    "IST0145 Gateway shop/first",  # two gateways, same workloads, port and host
    "IST0145 Gateway shop/second",
    "IST0173 DestinationRule shop/reviews",  # subset v2 selects no pod
    "IST0174 DestinationRule shop/unknown-host",  # a host no service has
    "IST0177 ServiceEntry shop/api-http",  # api.example.com:8000 is HTTP in one and GRPC in the other
    "IST0177 ServiceEntry shop/api-grpc",
    # What istioctl also says about the objects above:
    "IST0133 ServiceEntry shop/tcp-no-address",  # the webhook's warning (resolution NONE: no auto-allocation)
    "IST0140 VirtualService shop/to-missing-gateway",  # a gateway route to reviews, which another VS splits
    "IST0162 Gateway shop/first",  # port 8443 is not a port of the Service of the pods it selects
    "IST0162 Gateway shop/second",
}


def findings(messages: list[Message]) -> set[str]:
    return {f"{m.type.code} {m.origin.friendly_name}" for m in messages if m.origin is not None}


def run(paths: list[Path]) -> list[Message]:
    loaded = load(paths)
    return sorted_unique(loaded.messages + analyze(loaded.context).messages)


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    path = tmp_path / "planted.yaml"
    path.write_text(PLANTED)
    return path


def test_every_planted_mistake_is_found_with_its_code(planted: Path) -> None:
    assert findings(run([planted])) == PLANTED_FINDINGS


def test_messages_read_as_istioctl_prints_them(planted: Path) -> None:
    by_finding = {f"{m.type.code} {m.origin.friendly_name}": m for m in run([planted]) if m.origin}
    subset = by_finding["IST0101 VirtualService shop/to-missing-subset"]
    line = PLANTED.splitlines().index("    - destination: {host: reviews, subset: v9}") + 1
    assert str(subset) == (
        f"Error [IST0101] (VirtualService shop/to-missing-subset {planted}:{line}) "
        'Referenced host+subset in destinationrule not found: "reviews+v9"'
    )
    assert by_finding["IST0173 DestinationRule shop/reviews"].text == (
        "The Subset v2 defined in the DestinationRule does not select any pods. Which may lead to 503 UH "
        "(NoHealthyUpstream)."
    )
    for message in by_finding.values():  # every code, level and template is istioctl's
        assert BY_CODE[message.type.code] is message.type


def test_cli_exit_status_output_formats_and_suppression(planted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(planted)]) == EXIT_FOUND_ISSUES
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("Error [IST0101]")  # errors first, as istioctl sorts
    assert "Analyzers found issues" in out.err

    assert main(["analyze", "-o", "json", str(planted)]) == EXIT_FOUND_ISSUES
    entries = json.loads(capsys.readouterr().out)
    assert {f"{e['code']} {e['origin']}" for e in entries} == PLANTED_FINDINGS
    assert all(
        e["documentationUrl"].startswith("https://istio.io/latest/docs/reference/config/analysis/ist0") for e in entries
    )
    assert all(e["reference"].startswith(str(planted) + ":") for e in entries)

    assert main(["analyze", "-o", "yaml", "--output-threshold", "Error", str(planted)]) == EXIT_FOUND_ISSUES
    levels = {e["level"] for e in yaml.safe_load(capsys.readouterr().out)}
    assert levels == {"Error"}

    error_codes = sorted({f.split()[0] for f in PLANTED_FINDINGS if BY_CODE[f.split()[0]].level == "Error"})
    suppress = [arg for code in error_codes for arg in ("-S", f"{code}=*")]
    assert main(["analyze", *suppress, str(planted)]) == 0, capsys.readouterr().out
    assert "Error [" not in capsys.readouterr().out


def test_annotation_suppresses_and_clean_files_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: q, annotations: {galley.istio.io/analyze-suppress: IST0101}}\n"
        "spec: {hosts: [q], http: [{route: [{destination: {host: q, subset: v1}}]}]}\n"
    )
    assert main(["analyze", str(quiet)]) == 0
    assert "No validation issues found" in capsys.readouterr().err


def test_unreadable_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(tmp_path / "missing.yaml")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert main(["analyze", str(broken)]) == 1
    assert "Error(s) adding files" in capsys.readouterr().err


# What pilot analyze reports on Istio's own samples, each file alone and each directory as a whole. Every entry
# is what istioctl analyze reports on the same input: the analyzers mirror istioctl's rule for rule (checked
# against istio's own analyzer test cases while writing them), and an analyzer that reads Kubernetes kinds runs
# only when the input has objects of those kinds, as istioctl skips analyzers whose collections it lacks. So
# without Services in the input (the networking samples alone) destination hosts are not checked; subsets
# without a DestinationRule in the same input (IST0101) are what istioctl reports for those files too.
SAMPLE_FINDINGS: dict[str, set[str]] = {
    "bookinfo/networking/egress-rule-google-apis.yaml": {
        "IST0129 DestinationRule default/originate-tls-for-googleapis",
    },
    "bookinfo/networking/fault-injection-details-v1.yaml": {
        "IST0130 VirtualService default/details",
    },
    "bookinfo/networking/virtual-service-all-v1.yaml": {
        "IST0101 VirtualService default/details",
        "IST0101 VirtualService default/productpage",
        "IST0101 VirtualService default/ratings",
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-details-v2.yaml": {
        "IST0101 VirtualService default/details",
    },
    "bookinfo/networking/virtual-service-ratings-db.yaml": {
        "IST0101 VirtualService default/ratings",
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-ratings-mysql-vm.yaml": {
        "IST0101 VirtualService default/ratings",
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-ratings-mysql.yaml": {
        "IST0101 VirtualService default/ratings",
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-ratings-test-abort.yaml": {
        "IST0101 VirtualService default/ratings",
    },
    "bookinfo/networking/virtual-service-ratings-test-delay.yaml": {
        "IST0101 VirtualService default/ratings",
    },
    "bookinfo/networking/virtual-service-reviews-50-v3.yaml": {
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-reviews-80-20.yaml": {
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-reviews-90-10.yaml": {
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml": {
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-reviews-test-v2.yaml": {
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-reviews-v2-v3.yaml": {
        "IST0101 VirtualService default/reviews",
    },
    "bookinfo/networking/virtual-service-reviews-v3.yaml": {
        "IST0101 VirtualService default/reviews",
    },
    "testdata-config/destination-rule-all.yaml": {
        "IST0133 DestinationRule testns/destall",
    },
    "testdata-config/destination-rule-ssl.yaml": {
        "IST0128 DestinationRule testns/ssl-simple",
    },
    "testdata-config/none.yaml": {
        "IST0134 ServiceEntry none/s1tcp",
        "IST0134 ServiceEntry none/s2",
        "IST0134 ServiceEntry none/s2dns",
        "IST0134 ServiceEntry none/tcpmeshdns",
        "IST0134 ServiceEntry none/tcpmeshstatic",
        "IST0134 ServiceEntry none/tcpmeshstaticint",
    },
    "testdata-config/rule-content-route.yaml": {
        "IST0101 VirtualService testns/headers-route",
    },
    "testdata-config/rule-default-route.yaml": {
        "IST0101 VirtualService testns/default-route-1",
        "IST0101 VirtualService testns/default-route-2",
        "IST0132 VirtualService testns/default-route-1",
        "IST0132 VirtualService testns/default-route-2",
    },
    "testdata-config/rule-fault-injection.yaml": {
        "IST0101 VirtualService testns/fault",
    },
    "testdata-config/rule-ingressgateway.yaml": {
        "IST0101 VirtualService testns/gateway-bound-route",
        "IST0132 VirtualService testns/gateway-bound-route",
    },
    "testdata-config/rule-route-via-egressgateway.yaml": {
        "IST0101 VirtualService testns/route-via-egressgateway",
        "IST0132 VirtualService testns/route-via-egressgateway",
    },
    "testdata-config/se-example-gw.yaml": {
        "IST0134 ServiceEntry exampleegressgw/workload",
    },
    "testdata-config/se-example.yaml": {
        "IST0134 ServiceEntry seexamples/workload",
    },
    "testdata-config/virtual-service-all.yaml": {
        "IST0101 VirtualService testns/all",
        "IST0132 VirtualService testns/all",
    },
    "bookinfo": {
        "IST0101 VirtualService default/details",
        "IST0101 VirtualService istio-system/cert-manager",
        "IST0129 DestinationRule default/originate-tls-for-googleapis",
        "IST0140 VirtualService default/bookinfo",
    },
    "testdata-config": {
        "IST0101 VirtualService exampleegressgw/gateway-routing",
        "IST0101 VirtualService testns/all",
        "IST0101 VirtualService testns/fault",
        "IST0101 VirtualService testns/gateway-bound-route",
        "IST0101 VirtualService testns/ingress",
        "IST0101 VirtualService testns/route-via-egressgateway",
        "IST0128 DestinationRule testns/ssl-simple",
        "IST0133 DestinationRule testns/destall",
        "IST0134 ServiceEntry exampleegressgw/workload",
        "IST0134 ServiceEntry none/s1tcp",
        "IST0134 ServiceEntry none/s2",
        "IST0134 ServiceEntry none/s2dns",
        "IST0134 ServiceEntry none/tcpmeshdns",
        "IST0134 ServiceEntry none/tcpmeshstatic",
        "IST0134 ServiceEntry none/tcpmeshstaticint",
        "IST0134 ServiceEntry seexamples/workload",
        "IST0140 VirtualService testns/all",
        "IST0140 VirtualService testns/ingress",
    },
}


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"Istio samples not found at {SAMPLES}")
def test_istio_samples_get_exactly_istioctls_findings() -> None:
    got: dict[str, set[str]] = {}
    for path in sorted(SAMPLES.rglob("*.yaml")):
        found = findings(run([path]))
        if found:
            got[str(path.relative_to(SAMPLES))] = found
    for directory in ("bookinfo", "testdata-config"):
        got[directory] = findings(run(list(expand([str(SAMPLES / directory)]))))
    assert got == SAMPLE_FINDINGS


def test_list_analyzers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "-L"]) == 0
    out = capsys.readouterr().out
    assert "* virtualservice.DestinationRuleAnalyzer:" in out and "* gateway.ConflictingGatewayAnalyzer:" in out
