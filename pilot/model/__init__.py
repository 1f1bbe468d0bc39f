"""The shared vocabulary of pilot: config keys and objects, services, endpoints, proxies, hosts.

A leaf package: every other package may import it, and it imports nothing of pilot's above it.
"""
