"""``pilot loadtest``: a fleet of simulated Envoy proxies over real gRPC, measuring a running pilot.

Modules, one job each:

- ``wire``: xDS type URLs and method names, the pass-through gRPC codec, the client's h2 trace fix.
- ``decode``: the facts proxies need from responses, decoded once per distinct content per process.
- ``mesh``: the generated Istio mesh (YAML files, its manifest) and who can see what in it.
- ``fleet``: the simulated proxies' identities (node ids, namespaces, labels, routers).
- ``proxy``: one Envoy-like proxy: SotW or Delta ADS, ACKs, subscriptions, reconnects with backoff.
- ``expect``: what "converged" means for one change (an endpoint set, a route weight).
- ``client``: a client process running many proxies on one uvloop loop, driven over a pipe.
- ``driver``: the orchestrator's side of the client processes.
- ``probe``: whether a server speaks Delta ADS.
- ``procstat``: CPU and RSS of a process tree, from /proc.
- ``scenarios``: connect storm, endpoint churn, VirtualService edits, reconnect storm, transport floor.
- ``floor``: a bare grpclib server replaying pre-encoded responses (the transport floor).
- ``report``: statistics, the final table and the JSON report; ``progress``: the live progress bar.
- ``cli``: ``pilot loadtest mesh`` and ``pilot loadtest run``.

Nothing here imports the rest of pilot: the load tester measures pilot from outside, over its ports.
"""
