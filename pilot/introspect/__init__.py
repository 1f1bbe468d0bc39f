"""Introspection of a running pilot: istiod's /debug endpoints (``endpoints``), per-proxy config dumps
(``configdump``), rejected config and push problems for push_status (``rejections``, ``pushstatus``)."""
