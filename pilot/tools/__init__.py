"""Operator commands, one module each: ``validate``, ``analyze`` (offline checks with istioctl analyze's codes),
``proxy-status`` and ``proxy-config`` (istioctl's views, read from a running pilot's monitoring port),
``version``, and ``demo`` (bookinfo end to end on loopback with real Envoys). ``pilot.cli`` only dispatches to
them."""
