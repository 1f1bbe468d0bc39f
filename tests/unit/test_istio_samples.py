"""Every networking.istio.io object in the shared real-Istio samples loads and validates with zero errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pilot.config.convert import ISTIO_KINDS
from pilot.config.validation import check

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "istio-samples"

if not SAMPLES.is_dir():
    pytest.skip(f"Istio samples not found at {SAMPLES}", allow_module_level=True)


def _networking_docs() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(SAMPLES.rglob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("networking.istio.io/"):
                name = doc.get("metadata", {}).get("name", index)
                docs.append((f"{path.relative_to(SAMPLES)}:{doc['kind']}/{name}", doc))
    return docs


DOCS = _networking_docs()


def test_samples_cover_the_networking_kinds() -> None:
    kinds = {doc["kind"] for _, doc in DOCS}
    assert kinds >= {"VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar"}
    assert kinds <= set(ISTIO_KINDS)
    assert len(DOCS) >= 100


@pytest.mark.parametrize("doc", [doc for _, doc in DOCS], ids=[doc_id for doc_id, _ in DOCS])
def test_sample_loads_and_validates(doc: dict[str, Any]) -> None:
    namespace = doc.get("metadata", {}).get("namespace") or "default"
    message, errors = check(doc["kind"], doc.get("spec"), namespace)
    assert [str(e) for e in errors] == []
    assert isinstance(message, ISTIO_KINDS[doc["kind"]])
