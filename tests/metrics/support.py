"""Helpers for the metrics tests: a running pilot's /metrics parsed into families, and istiod's list."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from pilot.workers.metrics import family_of, parse

HERE = Path(__file__).resolve().parent
ISTIOD_LIST = HERE / "istiod_metrics.txt"

SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - address: 10.0.0.2
    labels: {version: v1}
  - address: 10.0.0.3
    labels: {version: v2}
"""

VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.example.com]
  http:
  - timeout: {timeout}
    route:
    - destination: {{host: reviews.example.com}}
"""


def write(path: Path, text: str) -> None:
    """Atomic replace, as an editor or a ConfigMap update does."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def write_config(config_dir: Path, timeout: str = "5s") -> None:
    write(config_dir / "reviews-se.yaml", SERVICE_ENTRY)
    write(config_dir / "reviews-vs.yaml", VIRTUAL_SERVICE.format(timeout=timeout))


@dataclass
class Family:
    name: str
    type: str = ""
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, sample: str = "", **labels: str) -> float:
        """The one sample named ``sample`` (default: the family name) with exactly ``labels``."""
        wanted = sample or self.name
        found = [v for n, lbl, v in self.samples if n == wanted and lbl == labels]
        assert len(found) == 1, f"{wanted}{labels}: found {len(found)} in {self.samples[:20]}"
        return found[0]


def families(text: str) -> dict[str, Family]:
    exposition = parse(text)
    known = set(exposition.types)
    out: dict[str, Family] = {}
    for name, kind in exposition.types.items():
        out[name] = Family(name, kind, exposition.help.get(name, ""))
    for sample in exposition.samples:
        family = family_of(sample.name, known)
        entry = out.setdefault(family, Family(family))
        entry.samples.append((sample.name, dict(sample.label_key), sample.value))
    return out


async def scrape(port: int) -> tuple[str, str]:
    """(content type, body) of GET /metrics."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            assert resp.status == 200
            return resp.headers["Content-Type"], await resp.text()


async def metrics_of(port: int) -> dict[str, Family]:
    return families((await scrape(port))[1])


@dataclass(frozen=True)
class IstiodMetric:
    name: str
    type: str
    labels: frozenset[str]
    buckets: tuple[float, ...]
    exported: bool
    why_not: str


def istiod_metrics() -> dict[str, IstiodMetric]:
    out = {}
    for line in ISTIOD_LIST.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, kind, labels, buckets, exported, _source = (part.strip() for part in line.split("|"))
        out[name] = IstiodMetric(
            name,
            kind,
            frozenset() if labels == "-" else frozenset(labels.split(",")),
            () if buckets == "-" else tuple(float(b) for b in buckets.split(",")),
            exported == "yes",
            "" if exported == "yes" else exported,
        )
    return out
