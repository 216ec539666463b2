"""Measure a farm link with plain TCP: bandwidth of a bulk transfer and round-trip time.

    ip netns exec mcd-pi3-01 python -m cluster.netcheck serve --port 5201 --once
    ip netns exec mcd-pi3-00 python -m cluster.netcheck measure 10.77.0.11 --port 5201 --json

``measure`` sends ``--bytes`` to the server and times until the server confirms it has read
them all (bandwidth = bytes * 8 / seconds, a one-RTT handshake included), then times
``--pings`` 64-byte ping-pongs (RTT, median). ``cluster.farm.measure_link`` runs both sides
in two devices' namespaces.
"""

from __future__ import annotations

import json
import socket
import statistics
import struct
import sys
import time

import click

PING = 64


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def serve(host: str, port: int, once: bool) -> None:
    with socket.create_server((host, port), reuse_port=False) as srv:
        print("listening", flush=True)
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                mode, n = struct.unpack("!cQ", _recv_exact(conn, 9))
                if mode == b"B":  # bulk: read n bytes, then confirm
                    left = n
                    while left:
                        chunk = conn.recv(min(1 << 20, left))
                        if not chunk:
                            break
                        left -= len(chunk)
                    conn.sendall(b"k")
                elif mode == b"P":  # n ping-pongs of PING bytes
                    for _ in range(n):
                        conn.sendall(_recv_exact(conn, PING))
            if once and mode == b"P":
                return


def measure(host: str, port: int, nbytes: int, pings: int) -> dict:
    block = b"\0" * (1 << 16)
    with socket.create_connection((host, port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall(struct.pack("!cQ", b"B", nbytes))
        left = nbytes
        while left:
            k = min(len(block), left)
            s.sendall(block[:k])
            left -= k
        _recv_exact(s, 1)
        bulk_s = time.perf_counter() - t0
    with socket.create_connection((host, port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(struct.pack("!cQ", b"P", pings))
        msg = b"x" * PING
        rtts = []
        for _ in range(pings):
            t = time.perf_counter()
            s.sendall(msg)
            _recv_exact(s, PING)
            rtts.append(time.perf_counter() - t)
    return {"bytes": nbytes, "bulk_s": bulk_s, "mbit_s": nbytes * 8 / bulk_s / 1e6,
            "rtt_ms_median": statistics.median(rtts) * 1e3, "rtt_ms_min": min(rtts) * 1e3,
            "rtt_ms_max": max(rtts) * 1e3, "pings": pings}


@click.group()
def main():
    """TCP bandwidth and RTT between two farm devices."""


@main.command("serve")
@click.option("--host", default="0.0.0.0")
@click.option("--port", default=5201)
@click.option("--once", is_flag=True, help="Exit after one bulk + ping session.")
def serve_cmd(host, port, once):
    serve(host, port, once)


@main.command("measure")
@click.argument("host")
@click.option("--port", default=5201)
@click.option("--bytes", "nbytes", default=8_000_000, show_default=True)
@click.option("--pings", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def measure_cmd(host, port, nbytes, pings, as_json):
    r = measure(host, port, nbytes, pings)
    click.echo(json.dumps(r) if as_json else
               f"{r['mbit_s']:.2f} Mbit/s over {nbytes} B; RTT median {r['rtt_ms_median']:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
