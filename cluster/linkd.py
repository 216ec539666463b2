"""The farm's delay line: a userspace process that adds the links' propagation delay.

Why it exists: the kernel on this machine kind is built without ``sch_netem``
(``CONFIG_NET_SCH_NETEM`` is not set), so ``tc`` can shape bandwidth (HTB) but cannot delay
packets. Each device therefore gets a pair of TAP interfaces instead of a veth pair:
``mcdn<i>`` (moved into the device's namespace) and ``mcdh<i>`` (on the farm bridge). This
process owns both TAPs and copies every Ethernet frame from one to the other, holding it for
the link's one-way delay. Bandwidth stays with the kernel: an HTB qdisc on the egress of each
TAP (see ``cluster.network.shape``), so TCP runs unchanged over a rate-limited, delayed path:

    device stack -> mcdn<i> egress HTB -> [delay] -> mcdh<i> -> bridge -> mcdh<j> egress HTB
                 -> [delay] -> mcdn<j> -> device j stack

The TAPs are not persistent: when this process exits, they vanish with it; a TAP deleted
while it runs (``farm remove``) ends that link's threads. Run by ``cluster.provision`` (one
process for the devices of ``farm up``, one more per ``farm add``) as
``python -m cluster.linkd INDEX:DELAY_MS ...``; prints ``ready`` once every TAP exists.
Each direction has a reader thread (timestamps frames) and a writer thread (sleeps until the
frame is due), so frames in flight overlap as on a real link.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import signal
import struct
import sys
import threading
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536
#: frames held per direction before new ones are dropped (a real queue would drop too)
MAX_QUEUE = 20000
#: what reading a TAP returns once its interface was deleted (``farm remove``)
GONE = (errno.EBADFD, errno.ENODEV, errno.ENXIO)


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


class Direction:
    """Frames from ``src`` appear on ``dst`` ``delay_s`` after they were read."""

    def __init__(self, src: int, dst: int, delay_s: float, label: str):
        self.src, self.dst, self.delay = src, dst, delay_s
        self.label = label
        self.queue: collections.deque = collections.deque()
        self.ready = threading.Condition()
        self.frames = self.dropped = 0

    def start(self) -> None:
        for fn in (self._read, self._write):
            threading.Thread(target=fn, name=f"{self.label}-{fn.__name__}", daemon=True).start()

    def _read(self) -> None:
        """Timestamp each frame; ends (with its writer) when the source TAP is deleted."""
        while True:
            try:
                frame = os.read(self.src, MAX_FRAME)
            except OSError as e:
                if e.errno in GONE:
                    with self.ready:
                        self.queue.append((None, b""))
                        self.ready.notify()
                    return
                time.sleep(0.01)
                continue
            due = time.monotonic() + self.delay
            with self.ready:
                if len(self.queue) >= MAX_QUEUE:
                    self.dropped += 1
                    continue
                self.queue.append((due, frame))
                self.ready.notify()

    def _write(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                due, frame = self.queue.popleft()
            if due is None:  # the reader ended: the link is gone
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                os.write(self.dst, frame)
                self.frames += 1
            except OSError:  # interface down (`farm cut`) or gone: the frame is lost, as on a real link
                self.dropped += 1


def main(argv: list[str]) -> int:
    """``argv``: ``INDEX:DELAY_MS`` per device (TAPs ``mcdh<INDEX>`` and ``mcdn<INDEX>``)."""
    from .network import tap_names

    sys.setswitchinterval(0.0005)  # hand the GIL over quickly: every thread is I/O-bound
    links = []
    for arg in argv:
        index, _, delay_ms = arg.partition(":")
        host_if, ns_if = tap_names(int(index))
        links.append((host_if, ns_if, float(delay_ms) / 1000))
    directions = []
    for host_if, ns_if, delay in links:
        h, n = open_tap(host_if), open_tap(ns_if)
        directions += [Direction(n, h, delay, f"{ns_if}>{host_if}"), Direction(h, n, delay, f"{host_if}>{ns_if}")]
    for d in directions:
        d.start()
    print("ready", flush=True)
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: stop.set())
    while not stop.wait(60):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
