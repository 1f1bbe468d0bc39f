"""NACK quarantine with a real Envoy: a listener Envoy cannot bind (a Sidecar egress bound to an address
that is not the host's) is rejected, and later listener changes still reach Envoy; the rejected object is
reported in push_status with the Istio object behind it, and retried when it changes.

Without quarantine, every LDS response after the bad Sidecar carries the unbindable listener again, Envoy
rejects each one whole, and no listener change of that proxy ever applies (issue 8, finding 3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import (
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    endpoint_slice,
    free_port,
    kube_pods,
    kube_service,
    only,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

NODE = "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local"
UNBINDABLE = "192.0.2.1"  # TEST-NET-1: never an address of this host, so Envoy cannot bind it
WITHIN = 10.0


def egress(port: int, bind: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "port": {"number": port, "protocol": "HTTP", "name": f"http-{port}"},
        "bind": bind,
        "captureMode": "NONE",
        "hosts": ["./*"],
    }


def sidecar(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {"egress": list(listeners)},
    }


async def test_a_rejected_listener_does_not_freeze_the_others(
    pilot_factory: Callable[..., PilotProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    backends: Backends,
    client: HttpClient,
) -> None:
    first, second, bad = free_port(), free_port(), free_port()
    pilot = pilot_factory({"sidecar.yaml": sidecar(egress(first))})
    envoy = envoy_factory(pilot, NODE, {"app": "app"}, "sidecar")
    envoy.wait_listener_sync(f"127.0.0.1_{first}", f"127.0.0.1:{first}")
    (web,) = await backends.start("web")
    services = []
    for port in (first, second):
        services.append(kube_service(f"web-{port}", f"10.96.1.{len(services) + 1}", port, web.port))
    pilot.write("web.yaml", [*services, *kube_pods("web-" + str(first), [web]), endpoint_slice(f"web-{first}", [web])])
    await client.wait_routed(first, f"web-{first}", only("web"), within=WITHIN, describe=envoy.diagnostics)

    # An egress listener Envoy cannot bind: Envoy rejects the listener update that carries it.
    mark = pilot.log_mark()
    pilot.write("sidecar.yaml", sidecar(egress(first), egress(bad, UNBINDABLE)))
    blamed = rf"rejected {UNBINDABLE}_{bad} \(from Sidecar/default/default\)"
    await pilot.wait_for_log(blamed, since=mark, within=WITHIN)

    # A later listener change reaches Envoy although the unbindable listener is still in the config.
    pilot.write("sidecar.yaml", sidecar(egress(first), egress(bad, UNBINDABLE), egress(second)))
    envoy.wait_listener_sync(f"127.0.0.1_{second}", f"127.0.0.1:{second}", timeout=WITHIN)
    assert not envoy.has_listener(f"{UNBINDABLE}_{bad}")
    assert await client.count(5, first, f"web-{first}") == {"web": 5}

    status = await pilot.debug("/debug/push_status")
    held = status["pilot_xds_nack_quarantine"]["Sidecar/default/default"]
    (detail,) = held.values()
    assert detail["type"] == "Listener" and detail["resource"] == f"{UNBINDABLE}_{bad}"
    assert "cannot bind" in detail["message"] or UNBINDABLE in detail["message"], detail
    rejects = envoy.stats("listener_manager.lds.update_rejected")
    assert sum(rejects.values()) >= 1, rejects

    # Fixed: the listener leaves the config, the quarantine ends, push_status no longer lists it.
    pilot.write("sidecar.yaml", sidecar(egress(first), egress(second)))

    async def released() -> bool:
        return "pilot_xds_nack_quarantine" not in await pilot.debug("/debug/push_status")

    await wait_until(released, WITHIN, message="the quarantine to end")
    assert envoy.has_listener(f"127.0.0.1_{second}")
