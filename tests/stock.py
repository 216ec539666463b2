"""A cluster of stock `dask scheduler` and `dask worker` processes on loopback, for tests that
kill, freeze and add devices. Runs everywhere (no root). Every process dies with the test
process (PR_SET_PDEATHSIG) and ``close`` checks that none is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def _die_with_pytest() -> None:
    """In the child: get SIGTERM if this test process dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StockCluster:
    """With ``certs`` (a folder of ``mcdask certs``: ca.crt, scheduler.crt/key, client.crt/key,
    NAME.crt/key per worker) everything runs under mutual TLS."""

    def __init__(self, cwd: Path, env: dict | None = None, certs: Path | None = None):
        self.cwd = cwd
        self.env = {**os.environ, "MCDASK_TEST": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        self.certs = certs
        self.address = f"{'tls' if certs else 'tcp'}://127.0.0.1:{free_port()}"
        self.procs: dict[str, subprocess.Popen] = {}

    def tls_args(self, name: str) -> list[str]:
        """``--tls-ca-file/--tls-cert/--tls-key`` with ``name``'s certificate (none without certs)."""
        if not self.certs:
            return []
        return ["--tls-ca-file", str(self.certs / "ca.crt"), "--tls-cert", str(self.certs / f"{name}.crt"),
                "--tls-key", str(self.certs / f"{name}.key")]

    def client(self, timeout: str = "30s"):
        """A Dask client of the scheduler (with the client's certificate under TLS)."""
        from distributed import Client
        from distributed.security import Security

        security = None
        if self.certs:
            security = Security(tls_ca_file=str(self.certs / "ca.crt"), tls_client_cert=str(self.certs / "client.crt"),
                                tls_client_key=str(self.certs / "client.key"), require_encryption=True)
        return Client(self.address, timeout=timeout, set_as_default=False, security=security)

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL,
                             stderr=open(self.cwd / f"{name}.log", "a"), start_new_session=True,
                             preexec_fn=_die_with_pytest)
        self.procs[name] = p
        return p

    def start_scheduler(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self._spawn("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", port,
                                  "--dashboard-address", ":0", *self.tls_args("scheduler")])
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(port))) == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler did not listen on {self.address} within 60 s")
            time.sleep(0.2)

    def start_worker(self, name: str, *extra: str, cert: str | None = None) -> subprocess.Popen:
        """A stock worker without a nanny (a device: when it dies, it is gone); under TLS with
        the certificate ``cert`` (default: its own name's; "" for none)."""
        tls = self.tls_args(name if cert is None else cert) if cert != "" else []
        return self._spawn(name, [str(BIN / "dask"), "worker", self.address, "--name", name, "--nthreads", "1",
                                  "--no-nanny", "--no-dashboard", *tls, *extra])

    def start_plain_worker(self, name: str) -> subprocess.Popen:
        """`dask worker ADDRESS` with no other flag, as a user would start one."""
        return self._spawn(name, [str(BIN / "dask"), "worker", self.address])

    def wait_for(self, names: set[str] | int, timeout_s: float = 120) -> None:
        """Until the workers ``names`` (or that many workers) are registered."""
        with self.client() as c:
            deadline = time.monotonic() + timeout_s
            while True:
                there = {str(w["name"]) for w in c.scheduler_info(n_workers=-1)["workers"].values()}
                if (len(there) >= names) if isinstance(names, int) else names <= there:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers {names} did not register within {timeout_s:.0f} s")
                time.sleep(0.3)

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.procs[name].pid, sig)

    def close(self) -> list[int]:
        """Stop every process, workers before the scheduler (a worker whose scheduler is gone
        spends its death timeout trying to reach it); returns the pids still alive afterwards
        (should be none)."""
        pids = [p.pid for p in self.procs.values()]
        family = [c for pid in pids if psutil.pid_exists(pid) for c in psutil.Process(pid).children(recursive=True)]
        workers = [p for n, p in self.procs.items() if n != "scheduler"]
        scheduler = [p for n, p in self.procs.items() if n == "scheduler"]
        for group in (workers, scheduler):   # all workers at once, then the scheduler
            for p in group:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGCONT)
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 15
            for p in group:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        psutil.wait_procs(family, timeout=30)
        return [pid for pid in pids + [c.pid for c in family] if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
