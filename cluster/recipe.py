"""How a device's worker starts, said once: the ``dask worker`` flags and Dask settings of a
device (the emulated farm's workers use them, ``cluster.provision``), and the systemd units
that start a real device's worker and the scheduler at boot.

``python -m cluster.recipe worker-unit --scheduler tls://HOST:8786 --name pi3-00 --kind pi3
--memory-limit 900MiB`` and ``python -m cluster.recipe scheduler-unit --host HOST`` print the
units (``cluster/scripts/install-device.sh`` writes them to /etc/systemd/system).

Mutual TLS by default: the scheduler listens on ``tls://`` with the device gate
(``mcdask.security.gate``), and a device whose scheduler address is ``tls://`` presents its own
certificate; both read their files from ``PREFIX/certs`` (``mcdask certs``; see cluster/README.md).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .devices import parse_bytes
from .errors import FarmSpecError

#: Dask settings of every device's worker (override on the farm with ``--env`` or a spec's ``env``).
#: CPU: an idle stock worker uses about 1.7 % of a host core (measured here), as much as a
#: whole pi3 share (about 1.8 %); with these it uses about 0.2 %: the sampling profiler is off;
#: event-loop ticks, the system monitor and the memory monitor run less often.
#: Memory: TensorFlow 2.21 alone is ~550 MB of RSS on x86-64, so a 1 GiB worker with AlexNet
#: slices sits above Dask's 80 % pause threshold and would stop running tasks; the device's
#: memory (the farm's cgroup, a unit's MemoryMax) is the limit, so Dask's own target/spill/pause
#: are off (resident model weights are not data Dask can spill).
WORKER_CONFIG = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__TICK__LIMIT": "60s",  # a capped device's event loop is slow by design
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "5s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False",
}
#: TensorFlow intra-op threads on a real Pi: all four cores (the farm uses 1, as calibrated)
PI_TF_THREADS = 4
DEFAULT_PREFIX = Path("/opt/mcdask")


def worker_flags(scheduler: str, name: str, kind: str, memory_limit_bytes: int) -> list[str]:
    """The ``dask worker`` arguments of one device:

    ``--nthreads 1``: one task at a time; TensorFlow's own threads use the cores.
    ``--no-nanny``: one process per device (a nanny is another Python process in 1 GiB), and a
    worker that dies leaves at once, for the stream's controller to plan around (a real
    device's unit starts it again; it then joins as a device that came back).
    ``--memory-limit``: the device's memory, in bytes. ``--resources KIND=1``: what it is.
    ``--no-dashboard``: a device serves no web page (and has no bokeh).
    ``--preload cluster.preload``: TensorFlow imported and warmed up before the worker registers.
    ``--death-timeout 60``: a worker that cannot reach its scheduler for a minute exits.
    """
    return [scheduler, "--name", name, "--nthreads", "1", "--no-nanny", "--memory-limit", str(memory_limit_bytes),
            "--resources", f"{kind}=1", "--no-dashboard", "--preload", "cluster.preload", "--death-timeout", "60"]


def tls_flags(certs: Path, name: str) -> list[str]:
    """``--tls-ca-file/--tls-cert/--tls-key``: the CA and ``name``'s certificate in ``certs``."""
    return ["--tls-ca-file", str(certs / "ca.crt"), "--tls-cert", str(certs / f"{name}.crt"),
            "--tls-key", str(certs / f"{name}.key")]


def _unit(description: str, user: str, prefix: Path, env: dict[str, str], command: list[str],
          service: list[str]) -> str:
    lines = ["[Unit]", f"Description={description}", "Wants=network-online.target", "After=network-online.target",
             "", "[Service]", f"User={user}", f"WorkingDirectory={prefix}",
             *(f'Environment="{k}={v}"' for k, v in env.items()),
             f"ExecStart={shlex.join(command)}", *service, "Restart=always", "RestartSec=5",
             "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def worker_unit(scheduler: str, name: str, kind: str, memory_limit: str | int, *, prefix: Path = DEFAULT_PREFIX,
                user: str = "pi", tf_threads: int = PI_TF_THREADS, backend: str = "litert") -> str:
    """The systemd unit of one device's worker: the farm's flags and Dask settings, and the
    worker's memory limit as the unit's ``MemoryMax`` (as the farm's cgroup); for a ``tls://``
    scheduler, the device's certificate from ``PREFIX/certs``. The unit names the device's
    backend, for ``cluster.preload`` to get it ready: ``litert`` (installed with ``mcdask[litert]``,
    no TensorFlow), or ``tensorflow`` with its thread count."""
    limit = parse_bytes(memory_limit)
    env = {**WORKER_CONFIG, "DASK_MCDASK__WORKER__BACKEND": backend}
    if backend == "tensorflow":
        env["MCDASK_TF_THREADS"] = str(tf_threads)
    tls = tls_flags(prefix / "certs", name) if scheduler.startswith("tls://") else []
    command = [str(prefix / "venv" / "bin" / "dask"), "worker", *worker_flags(scheduler, name, kind, limit), *tls]
    header = (f"# mcdask device {name}: `python -m cluster.recipe worker-unit --scheduler {scheduler} --name {name} "
              f"--kind {kind} --memory-limit {memory_limit}`\n")
    return header + _unit(f"mcdask device {name}: Dask worker", user, prefix, env, command, [f"MemoryMax={limit}"])


def scheduler_unit(host: str, port: int = 8786, dashboard_port: int = 8787, *, prefix: Path = DEFAULT_PREFIX,
                   user: str = "pi", tls: bool = True) -> str:
    """The systemd unit of the scheduler, listening on ``host`` (the LAN address devices reach);
    with ``tls`` on ``tls://``, with its certificate from ``PREFIX/certs`` and the device gate."""
    command = [str(prefix / "venv" / "bin" / "dask"), "scheduler", "--host", host, "--port", str(port),
               "--dashboard-address", f"{host}:{dashboard_port}"]
    if tls:
        command += ["--protocol", "tls", *tls_flags(prefix / "certs", "scheduler"), "--preload", "mcdask.security.gate"]
    header = (f"# mcdask scheduler: `python -m cluster.recipe scheduler-unit --host {host} --port {port}"
              f"{'' if tls else ' --no-tls'}`\n")
    return header + _unit("mcdask: Dask scheduler", user, prefix, {}, command, [])


@click.group()
def main() -> None:
    """Print the systemd units of the real-device recipe."""


@main.command("worker-unit")
@click.option("--scheduler", required=True,
              help="tls://HOST:8786 (the device's certificate from PREFIX/certs), or tcp://HOST:8786")
@click.option("--name", required=True, help="the device's stable name, e.g. pi3-00")
@click.option("--kind", required=True, help="its kind, e.g. pi3")
@click.option("--memory-limit", required=True, help="e.g. 900MiB on a 1 GiB Pi 3 (the OS keeps ~100 MB)")
@click.option("--prefix", type=click.Path(path_type=Path), default=DEFAULT_PREFIX, show_default=True,
              help="the install folder (its venv/ and the worker's working directory)")
@click.option("--user", default="pi", show_default=True)
@click.option("--tf-threads", type=click.IntRange(1), default=PI_TF_THREADS, show_default=True)
@click.option("--backend", type=click.Choice(["litert", "tensorflow"]), default="litert", show_default=True,
              help="the runtime the device gets ready (litert: installed with mcdask[litert], no TensorFlow)")
def worker_unit_command(scheduler, name, kind, memory_limit, prefix, user, tf_threads, backend) -> None:
    try:
        click.echo(worker_unit(scheduler, name, kind, memory_limit, prefix=prefix, user=user, tf_threads=tf_threads,
                               backend=backend), nl=False)
    except FarmSpecError as e:
        raise click.BadParameter(str(e), param_hint="--memory-limit") from None


@main.command("scheduler-unit")
@click.option("--host", required=True, help="the LAN address the devices reach")
@click.option("--port", type=click.IntRange(1, 65535), default=8786, show_default=True)
@click.option("--dashboard-port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option("--prefix", type=click.Path(path_type=Path), default=DEFAULT_PREFIX, show_default=True)
@click.option("--user", default="pi", show_default=True)
@click.option("--tls/--no-tls", default=True, show_default=True,
              help="mutual TLS with the device gate (certificates in PREFIX/certs), or plain TCP")
def scheduler_unit_command(host, port, dashboard_port, prefix, user, tls) -> None:
    click.echo(scheduler_unit(host, port, dashboard_port, prefix=prefix, user=user, tls=tls), nl=False)


if __name__ == "__main__":
    main()
