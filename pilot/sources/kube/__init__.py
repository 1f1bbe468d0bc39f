"""Kubernetes as a config source: informers, discoverySelectors, validation status and its leader election."""
