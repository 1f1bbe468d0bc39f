"""Secrets from the (fake) cluster as gateway credentials: listed and watched without Helm release and
service-account token Secrets (istiod's field selector), trimmed, decoded into the store, and a renewal or
deletion is pushed."""

from __future__ import annotations

from typing import Any

import pytest

from pilot.model.config import ConfigKey
from pilot.model.secret import SecretData
from tests.certs import TestCA, b64, generic_secret, tls_secret
from tests.e2e.harness import wait_until
from tests.kube import objects as o
from tests.kube.harness import FakeApiServer

pytestmark = pytest.mark.timeout(30)

NS = "istio-system"
KEY = ConfigKey("Secret", NS, "gw-cert")


async def test_secrets_are_watched_as_gateway_credentials(
    api: FakeApiServer, start_pilot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA()
    first, renewed = ca.issue("a.example.com"), ca.issue("a.example.com")
    api.apply(o.namespace(NS))
    secret = tls_secret("gw-cert", NS, first)
    secret["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
    api.apply(secret)
    api.apply({**generic_secret("release", NS, {"release": b"x"}), "type": "helm.sh/release.v1"})
    api.apply({**generic_secret("token", NS, {"token": b"x"}), "type": "kubernetes.io/service-account-token"})
    api.apply(generic_secret("app-password", NS, {"password": b"hunter2"}))
    pilot = await start_pilot()

    stored = pilot.store.get(KEY)
    assert stored is not None and isinstance(stored.spec, SecretData)
    assert stored.spec.value("tls.crt") == first.cert_pem and stored.annotations == {}
    assert pilot.store.get(ConfigKey("Secret", NS, "app-password")) is not None  # stored, never printed
    assert pilot.store.get(ConfigKey("Secret", NS, "release")) is None
    assert pilot.store.get(ConfigKey("Secret", NS, "token")) is None
    selector = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"
    assert {r.query.get("fieldSelector") for r in api.requests(plural="secrets")} == {selector}
    assert "hunter2" not in repr(pilot.store.snapshot())

    api.apply(tls_secret("gw-cert", NS, renewed))

    def pushed() -> bool:  # a new PushContext holds it (the push for the Secret was made)
        current = pilot.discovery.current
        found = current.secret(NS, "gw-cert") if current is not None else None
        return found is not None and found.spec.value("tls.crt") == renewed.cert_pem

    await wait_until(pushed, 5, message="the renewal pushed")

    bad = tls_secret("gw-cert", NS, renewed)
    bad["data"]["tls.crt"] = b64(b"not a certificate")
    api.apply(bad)  # invalid: reported by name (never by content), its last good version stays
    line = "Secret istio-system/gw-cert: data.tls.crt: no PEM data found (keeping its last good version)"
    await wait_until(lambda: line in caplog.text, 5, message="the invalid Secret reported")
    assert pilot.store.get(KEY).spec.value("tls.crt") == renewed.cert_pem
    assert "not a certificate" not in caplog.text and "hunter2" not in caplog.text
    api.delete("Secret", "gw-cert", NS)
    await wait_until(lambda: pilot.store.get(KEY) is None, 5, message="deletion")
