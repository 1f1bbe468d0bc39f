"""Hypothesis strategies and properties for fuzzing the loader and validator, shared by the bounded CI suite
(tests/hardening/test_fuzz_loader.py) and the long run (benchmarks/fuzz_loader.py).

Three generators:

- ``mutated_objects``: valid objects of every kind pilot reads (``SEEDS``), with 1-4 fields replaced by random
  values, deleted or duplicated, then loaded both as parsed objects (``load_object``, the Kubernetes and
  webhook path) and as YAML text (``load_text``);
- ``mutated_texts``: the seed file's text with characters inserted or deleted and YAML tokens spliced in
  (anchors, aliases, merge keys, explicit tags, invalid dates and numbers, flow brackets, BOMs);
- ``alias_graphs``: documents made of anchors and aliases at random, to check yamlsafe's alias count against
  a naive expansion.

The property: nothing raises, every error names its file, no error is an internal one (a bug the loader's
guard caught), and loading is deterministic.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import yaml
from hypothesis import strategies as st

from pilot.config.loader import LoadResult, load_object, load_text

SEEDS = r"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local, "*.example.com"]
  gateways: [mesh, istio-system/gw]
  exportTo: ["."]
  http:
  - name: r1
    match:
    - uri: {prefix: /a}
      headers: {end-user: {exact: jason}, x: {regex: "a.*"}}
      queryParams: {q: {exact: "1"}}
      port: 80
      sourceLabels: {app: x}
      withoutHeaders: {y: {prefix: b}}
      ignoreUriCase: true
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 75
      headers: {request: {set: {a: b}, add: {c: d}, remove: [e]}, response: {set: {f: g}}}
    - destination: {host: reviews, subset: v1}
      weight: 25
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure", retryRemoteLocalities: true}
    fault: {delay: {percentage: {value: 10}, fixedDelay: 5s}, abort: {percentage: {value: 5}, httpStatus: 503}}
    mirror: {host: mirror}
    mirrorPercentage: {value: 50}
    corsPolicy: {allowOrigins: [{exact: "https://a"}], allowMethods: [GET], maxAge: 24h, allowCredentials: true}
    rewrite: {uri: /b, authority: x}
    headers: {request: {set: {a: b}}}
  - redirect: {uri: /x, authority: y, redirectCode: 301}
    match: [{uri: {exact: /old}}]
  - directResponse: {status: 404, body: {string: nope}}
    match: [{uri: {exact: /gone}}]
  - delegate: {name: child, namespace: default}
    match: [{uri: {prefix: /d}}]
  tcp:
  - match: [{port: 3306, destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: db, port: {number: 3306}}}]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: a.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: default}
spec:
  host: reviews
  exportTo: ["*"]
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true, distribute: [{from: "a/b/*", to: {"a/b/*": 100}}]}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, idleTimeout: 1s}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 50}
    tls: {mode: ISTIO_MUTUAL, sni: a.b}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 0s}}}}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [ns/a.example.com]
    tls: {mode: SIMPLE, credentialName: cert, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  addresses: [192.168.0.0/24]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}, {number: 443, name: tls, protocol: TLS}]
  location: MESH_INTERNAL
  resolution: STATIC
  exportTo: ["."]
  subjectAltNames: [spiffe://a]
  endpoints:
  - address: 10.0.0.1
    ports: {http: 9080}
    labels: {version: v1}
    network: n1
    locality: r/z/s
    weight: 2
    serviceAccount: sa
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: we, namespace: default}
spec:
  address: 10.0.0.2
  ports: {http: 8080}
  labels: {app: y}
  network: n
  locality: r/z
  weight: 1
  serviceAccount: sa
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  workloadSelector: {labels: {app: x}}
  egress:
  - hosts: ["./*", "istio-system/*"]
    port: {number: 80, protocol: HTTP, name: http}
    bind: 127.0.0.1
    captureMode: IPTABLES
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress, port: {number: 80}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa, namespace: default}
spec:
  selector: {matchLabels: {app: x}}
  mtls: {mode: STRICT}
  portLevelMtls: {"8080": {mode: DISABLE}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default, labels: {app: reviews}}
spec:
  clusterIP: 10.96.0.10
  type: ClusterIP
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9080, protocol: TCP, appProtocol: http}
  - {name: grpc, port: 9090, targetPort: grpc}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: default, labels: {app: reviews, version: v1}}
spec: {nodeName: n1, serviceAccountName: sa, containers: [{name: app, ports: [{containerPort: 9080, name: http}]}]}
status: {podIP: 10.1.0.1, phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {topology.kubernetes.io/region: r, topology.kubernetes.io/zone: z}}
---
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio-injection: enabled}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-abc, namespace: default, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080, protocol: TCP}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true, serving: true, terminating: false}
  targetRef: {kind: Pod, name: reviews-1, namespace: default}
  nodeName: n1
  zone: z
"""

SEED_OBJECTS: list[dict[str, Any]] = [doc for doc in yaml.safe_load_all(SEEDS) if doc]

_ODD_STRINGS = [
    "",
    "0",
    "-1",
    "80",
    "99999",
    "1s",
    "-1s",
    "1.5s",
    "10000000000h",
    "abc",
    "*",
    "*.",
    ".",
    "a..b",
    "http",
    "HTTP",
    "unix://",
    "unix:///a",
    "10.0.0.1/33",
    "::1",
    "1.2.3.4:80",
    "a/b/c/d",
    "/",
    "%",
    "\x00",
    "\n",
    "é",
    "ns/",
    "/h",
    "~",
    "-",
    "a" * 300,
]
_TOKENS = [
    "&a ",
    "*a",
    "<<: *a\n",
    "!!timestamp ",
    "!!int ",
    "!!float ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "!!python/object ",
    "2001-02-30",
    "0x",
    "---\n",
    "...\n",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n  ",
    "? ",
    "|\n",
    ">\n",
    "'",
    '"',
    "\t",
    "%YAML 1.1\n",
    "!tag ",
    "9" * 5000,
    "kind: List\nitems:\n",
    "\ufeff",
    "\x85",
    "#",
    ",",
    "&b [*a, *a]",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(_ODD_STRINGS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_objects(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(SEED_OBJECTS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p and p[0] not in ("apiVersion", "kind")]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        operation = draw(st.sampled_from(["set", "set", "delete", "duplicate"]))
        if operation == "set":
            parent[path[-1]] = draw(values)
        elif operation == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    return doc


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    text = SEEDS
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(text)))
        operation = draw(st.sampled_from(["insert", "insert", "delete", "token"]))
        if operation == "insert":
            text = text[:position] + draw(st.text(max_size=5)) + text[position:]
        elif operation == "token":
            text = text[:position] + draw(st.sampled_from(_TOKENS)) + text[position:]
        else:
            text = text[:position] + text[position + draw(st.integers(1, 40)) :]
    return text


@st.composite
def alias_graphs(draw: st.DrawFn) -> str:
    """A Pod whose spec is built from anchors and aliases: each anchor a list of earlier aliases and scalars."""
    lines = []
    for i in range(draw(st.integers(1, 6))):
        items = [
            f"*a{draw(st.integers(0, i - 1))}" if i and draw(st.booleans()) else "x"
            for _ in range(draw(st.integers(1, 5)))
        ]
        lines.append(f"  a{i}: &a{i} [{', '.join(items)}]")
    return "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n" + "\n".join(lines) + "\n"


def check_result(source: str, result: LoadResult) -> None:
    """What every load must satisfy, whatever the input."""
    for error in result.errors:
        assert str(error).startswith(f"{source}[doc "), error
        assert "internal error" not in error.message, str(error)
    loaded = {cfg.key for cfg in result.configs}
    assert not loaded & set(result.rejected), "an object is both loaded and rejected"
    for cfg in result.configs:
        assert isinstance(cfg.content_hash, int)


def check_object(doc: dict[str, Any]) -> None:
    first = load_object("fuzz", copy.deepcopy(doc))
    check_result("fuzz", first)
    again = load_object("fuzz", copy.deepcopy(doc))
    assert [c.content_hash for c in first.configs] == [c.content_hash for c in again.configs]
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    check_result("fuzz.yaml", load_text("fuzz.yaml", text))


def check_text(text: str) -> None:
    check_result("fuzz.yaml", load_text("fuzz.yaml", text))


def naive_alias_nodes(text: str) -> int:
    """Nodes aliases add to the document, by expanding them (small documents only)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    unique: set[int] = set()

    def expand(node: Any) -> int:
        unique.add(id(node))
        if isinstance(node.value, list):
            children = (
                [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
            )
            return 1 + sum(expand(child) for child in children)
        return 1

    return expand(root) - len(unique)
