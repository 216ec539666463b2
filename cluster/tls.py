"""The farm under mutual TLS (``mcdask farm up --tls``).

The farm's CA and certificates live in its state directory (``tls/``; ``farm down`` removes
them with it): one for the scheduler, one for the client (``farm status --json`` gives its
paths under ``tls``) and one per device, naming it (``mcdask.security.certs``). The scheduler
listens on ``tls://`` and loads the device gate (``mcdask.security.gate``), so a worker whose
certificate does not name it is refused. Every Dask client the farm makes for itself comes
from ``client``.
"""

from __future__ import annotations

from pathlib import Path

from mcdask.security import certs

from .state import State


def enable(state: State) -> dict:
    """Make the farm's CA, the scheduler's and the client's certificates; record them in the
    state (``tls``) and return that record."""
    folder = state.dir / "tls"
    ca, _ = certs.init_ca(folder, force=True)
    certs.issue(folder, "scheduler", "scheduler")
    cert, key = certs.issue(folder, "client", "client")
    state.data["tls"] = {"dir": str(folder), "ca_file": str(ca), "cert": str(cert), "key": str(key)}
    state.save()
    return state.data["tls"]


def client_files(state: State) -> dict | None:
    """The client's CA, certificate and key paths, or None for a plain-TCP farm."""
    tls = state.data.get("tls")
    return {k: tls[k] for k in ("ca_file", "cert", "key")} if tls else None


def scheduler_args(state: State) -> list[str]:
    """``dask scheduler`` options: TLS with the scheduler's certificate and the device gate."""
    tls = state.data.get("tls")
    if not tls:
        return []
    folder = Path(tls["dir"])
    return ["--protocol", "tls", "--tls-ca-file", tls["ca_file"], "--tls-cert", str(folder / "scheduler.crt"),
            "--tls-key", str(folder / "scheduler.key"), "--preload", "mcdask.security.gate"]


def worker_args(state: State, name: str) -> list[str]:
    """``dask worker`` options: the device's own certificate (issued now if it has none)."""
    tls = state.data.get("tls")
    if not tls:
        return []
    folder = Path(tls["dir"])
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    if not cert.exists():
        cert, key = certs.issue(folder, name, "device")
    return ["--tls-ca-file", tls["ca_file"], "--tls-cert", str(cert), "--tls-key", str(key)]


def security(state: State):
    """The ``distributed.Security`` of the farm's client, or None for a plain-TCP farm."""
    files = client_files(state)
    if files is None:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=files["ca_file"], tls_client_cert=files["cert"], tls_client_key=files["key"],
                    require_encryption=True)


def client(state: State, timeout: str):
    """A Dask client of the farm's scheduler (over TLS on a TLS farm)."""
    from distributed import Client

    return Client(state.data["scheduler"], timeout=timeout, set_as_default=False, security=security(state))
