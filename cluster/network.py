"""The farm's network: the bridge, one network namespace per device, its TAP link, the ``tc``
shaping of that link, addresses, and finding or deleting what is left of them.

Addresses: ``10.77.0.0/24`` lives only on the bridge this module creates; the host side is
``10.77.0.1`` and device ``i`` is ``10.77.0.(10 + i)``. Namespaces get no default route, so
farm traffic cannot leave this machine.

Each device's link is a TAP pair joined by the delay line ``cluster.linkd`` (this kernel has
no ``netem``), with an HTB rate limit on the egress of both TAPs.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
from pathlib import Path

from .system import PREFIX, sh

BRIDGE = "mcdask-br0"
SUBNET = "10.77.0"
HOST_IP = f"{SUBNET}.1"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
#: farm links carry jumbo frames: at 62 Mbit/s a 9000-byte frame takes 1.2 ms on the wire,
#: and the delay line copies 6x fewer frames than at 1500 bytes
MTU = 9000


def device_ip(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


def netns_name(device: str) -> str:
    return f"{PREFIX}-{device}"


def tap_names(index: int) -> tuple[str, str]:
    """(host side, device side) TAP names; at most 15 characters each."""
    return f"{PREFIX}h{index}", f"{PREFIX}n{index}"


def add_bridge() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


def add_netns(device: str) -> str:
    ns = netns_name(device)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "set", "lo", "up", netns=ns)
    return ns


def attach_device(index: int, device: str) -> tuple[str, str]:
    """Wire one device's TAP pair (created by ``cluster.linkd``): ``mcdn<i>`` into the device's
    namespace with its address, ``mcdh<i>`` onto the bridge. Returns (host tap, device tap)."""
    ns = netns_name(device)
    host_if, ns_if = tap_names(index)
    sh("ip", "link", "set", ns_if, "netns", ns)
    sh("ip", "link", "set", host_if, "mtu", str(MTU), "master", BRIDGE, "up")
    sh("ip", "link", "set", ns_if, "mtu", str(MTU), "up", netns=ns)
    sh("ip", "addr", "add", f"{device_ip(index)}/24", "dev", ns_if, netns=ns)
    sh("ip", "link", "set", BRIDGE, "mtu", str(MTU))
    return host_if, ns_if


def shape(dev: str, rate_mbit: float, netns: str | None = None) -> None:
    """Egress of ``dev`` limited to ``rate_mbit`` by one HTB class (the delay is ``linkd``'s)."""
    kbit = max(8, round(rate_mbit * 1000))
    # bucket: 1 ms of traffic but at least two full frames, so HTB is smooth but never stuck
    burst = max(2 * (MTU + 14), kbit * 1000 // 8 // 1000)
    sh("tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1", netns=netns)
    sh("tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", f"{kbit}kbit",
       "ceil", f"{kbit}kbit", "burst", str(burst), "cburst", str(burst), netns=netns)
    sh("tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "pfifo", "limit", "10000", netns=netns)


def set_link_up(dev: str, up: bool, netns: str | None = None) -> None:
    """Bring ``dev`` administratively up or down: down, it neither sends nor receives, and the
    device's kernel drops the routes through it until it comes up again."""
    sh("ip", "link", "set", dev, "up" if up else "down", netns=netns)


def link_is_up(dev: str, netns: str | None = None) -> bool:
    """Whether ``dev`` exists and is administratively up."""
    out = sh("ip", "-o", "link", "show", "dev", dev, netns=netns, check=False).stdout
    flags = re.search(r"<([^>]*)>", out)
    return flags is not None and "UP" in flags.group(1).split(",")


def reachable(ip: str, timeout_s: float = 1.0, port: int = 9) -> bool:
    """Whether this host reaches ``ip`` over TCP: an accepted or a refused connection both
    mean the packets went there and back (port 9 is normally closed, so nothing is disturbed)."""
    with socket.socket() as s:
        s.settimeout(timeout_s)
        try:
            s.connect((ip, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return True


def qdisc_summary(dev: str, netns: str | None = None) -> str:
    return sh("tc", "qdisc", "show", "dev", dev, netns=netns, check=False).stdout.strip()


def our_links() -> list[str]:
    out = sh("ip", "-o", "link", "show", check=False).stdout
    names = [re.split(r"[@:]", line.split(":", 2)[1].strip())[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n == BRIDGE or re.fullmatch(rf"{PREFIX}[hn]\d+", n)]


def our_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


def our_qdiscs() -> list[str]:
    """Interfaces of ours (on the host) that carry a non-default root qdisc."""
    out = sh("tc", "qdisc", "show", check=False).stdout
    devs = set()
    for line in out.splitlines():
        m = re.search(r" dev (\S+) root", line)
        if m and (m.group(1) == BRIDGE or m.group(1).startswith(PREFIX)) and ("htb" in line or "netem" in line):
            devs.add(m.group(1))
    return sorted(devs)


def delete_link(name: str) -> None:
    sh("tc", "qdisc", "del", "dev", name, "root", check=False)
    sh("ip", "link", "del", name, check=False)


def delete_netns(name: str) -> None:
    sh("ip", "netns", "del", name, check=False)


def netns_pids(name: str) -> list[int]:
    out = sh("ip", "netns", "pids", name, check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


_libc = None


def enter_netns(path: str) -> None:
    """Move the calling process into the network namespace at ``path`` (Python 3.11 has no
    ``os.setns``). Used in a ``preexec_fn``, between fork and exec."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
    finally:
        os.close(fd)
