"""``pilot analyze``: istioctl analyze's offline checks for pilot's kinds. ``command`` is the CLI, ``resources``
reads the files, ``analyzers`` holds the checks and ``messages`` istioctl's codes and texts."""
