"""Operator commands, one module each: ``validate``, ``analyze`` (offline checks with istioctl analyze's codes),
``proxy-status`` and ``proxy-config`` (istioctl's views, read from a running pilot's monitoring port) and
``version``. ``pilot.cli`` only dispatches to them."""
