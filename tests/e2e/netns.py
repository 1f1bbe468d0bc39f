"""A private network namespace made by a test, for traffic capture as istio-iptables sets it up in a pod.

``unshare --net`` starts a holder process in a new namespace (root only); programs run inside it through
``nsenter --net=/proc/<holder>/ns/net``, and the test makes its own sockets inside it from one worker thread
that joined the namespace (a socket belongs to the namespace it was created in, whichever thread uses it
later). The host's network is never touched: everything goes when the holder exits.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
TOOLS = ("unshare", "nsenter", "ip", "nft")
READY_TIMEOUT = 5.0


def unavailable_reason() -> str | None:
    """Why a namespace cannot be made here (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces for traffic capture need root (unshare --net)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (util-linux, iproute2, nftables)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"unshare --net failed: {probe.stderr.strip()}"
    return None


def _join(path: str) -> None:
    """Thread initializer: move the calling thread into the namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


class NetNamespace:
    def __init__(self) -> None:
        self._holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
        self.path = f"/proc/{self._holder.pid}/ns/net"
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # the holder has the new namespace once unshare has exec'd sleep
            try:
                if os.readlink(self.path) != own:
                    break
            except OSError:
                pass
            if self._holder.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("unshare --net did not start a namespace")
            time.sleep(0.01)
        self._sockets = ThreadPoolExecutor(max_workers=1, initializer=_join, initargs=(self.path,))

    def command(self, args: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", *args]

    def run(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(self.command(args), input=stdin, capture_output=True, text=True, timeout=10)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed in the namespace: {result.stderr.strip()}")
        return result.stdout

    def popen(self, args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(self.command(args), stdout=out, stderr=subprocess.STDOUT)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket inside the namespace."""
        return self._sockets.submit(socket.socket, family, kind).result(timeout=READY_TIMEOUT)

    def close(self) -> None:
        if getattr(self, "_sockets", None) is not None:
            self._sockets.shutdown(wait=False)
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait(timeout=READY_TIMEOUT)

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
