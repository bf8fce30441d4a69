"""A network namespace joined to the host by a veth pair, for peers that vanish (root only).

``netns_link`` creates it and always removes it; ``NetnsLink.pull_cable`` sets the namespace's
end down, so that the client's socket stays open and nothing reaches the server any more (no FIN,
no RST). ``start_python`` runs a client script inside; ``stop_client`` stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests.support.waiting import wait_until


@dataclass
class NetnsLink:
    """A namespace ``ns`` whose device ``ns_dev`` (``client_addr``) is wired to ``host_dev`` (``host_addr``)."""

    ns: str
    host_dev: str
    ns_dev: str
    host_addr: str
    client_addr: str

    def exec(self, *args: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
        return _ip("netns", "exec", self.ns, *args, timeout=timeout, check=check)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *args], **kwargs)

    def pull_cable(self) -> None:
        """Set the namespace's end of the link down: no FIN, no RST, nothing gets through any more."""
        self.exec("ip", "link", "set", self.ns_dev, "down")


def _ip(*args: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _free_link_local_subnet() -> int:
    """A 169.254.N.0/30 that no interface on the host uses (other runs may hold one)."""
    used = _ip("-o", "-4", "addr", "show", check=False).stdout
    start = os.getpid() % 200
    for offset in range(200):
        third = 20 + (start + offset) % 200
        if f"169.254.{third}." not in used:
            return third
    raise RuntimeError("no free 169.254.N.0/30 subnet")


@contextlib.contextmanager
def netns_link() -> Iterator[NetnsLink]:
    """Create the namespace and veth pair (root only); always remove them afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed: .ci/run installs it")
    tag = f"{os.getpid() % 100000}{threading.get_ident() % 10}"
    ns = f"tether-dp-{tag}"
    host_dev, ns_dev = f"tdh{tag}"[:15], f"tdn{tag}"[:15]
    created_ns = created_link = False
    try:
        result = _ip("netns", "add", ns, check=False)
        if result.returncode != 0:
            pytest.skip(f"ip netns add failed: {result.stderr.strip()}")
        created_ns = True
        result = _ip("link", "add", host_dev, "type", "veth", "peer", "name", ns_dev, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot create a veth pair: {result.stderr.strip()}")
        created_link = True
        third = _free_link_local_subnet()
        host_addr, client_addr = f"169.254.{third}.1", f"169.254.{third}.2"
        _ip("link", "set", ns_dev, "netns", ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_dev)
        _ip("link", "set", host_dev, "up")
        link = NetnsLink(ns, host_dev, ns_dev, host_addr, client_addr)
        link.exec("ip", "addr", "add", f"{client_addr}/30", "dev", ns_dev)
        link.exec("ip", "link", "set", ns_dev, "up")
        link.exec("ip", "link", "set", "lo", "up")
        # Wait until the pair is usable (DAD does not apply to IPv4, but carrier can lag).
        if shutil.which("ping"):
            wait_until(lambda: link.exec("ping", "-c", "1", "-W", "1", host_addr, check=False).returncode == 0,
                       5, "the veth pair passing packets", interval=0.1)
        yield link
    finally:
        if created_ns:
            _ip("netns", "del", ns, check=False)  # takes the namespace's end of the veth with it
        if created_link:
            _ip("link", "del", host_dev, check=False)  # gone already if the pair went with the ns


def start_python(link: NetnsLink, code: str, port: int) -> subprocess.Popen:
    """``python -c code HOST_ADDR PORT`` inside the namespace, its output piped (text)."""
    return link.popen(sys.executable, "-c", code, link.host_addr, str(port),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_client(client: subprocess.Popen) -> None:
    if client.poll() is None:
        client.kill()
    client.wait(5)
    for stream in (client.stdout, client.stderr):
        if stream is not None:
            stream.close()
