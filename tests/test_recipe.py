"""The real-device recipe: scripts that parse, units systemd accepts, and a device's worker
started with exactly the emulated farm's flags and Dask settings."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster import provision
from cluster.recipe import WORKER_CONFIG, scheduler_unit, worker_unit

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "cluster" / "scripts"
EXAMPLE = ("tcp://192.168.1.10:8786", "pi3-00", "pi3", "900MiB")
TLS_EXAMPLE = ("tls://192.168.1.10:8786", *EXAMPLE[1:])   # the checked-in unit: mutual TLS by default


def unit_field(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


@pytest.mark.parametrize("script", ["install-device.sh", "start-scheduler.sh"])
def test_the_scripts_parse(script):
    run = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("args", [[], ["/src", "dancer"], ["/src", "worker", "tcp://h:8786"]])
def test_install_device_says_how_to_call_it_before_installing_anything(args):
    run = subprocess.run(["bash", str(SCRIPTS / "install-device.sh"), *args], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 2
    assert "install-device.sh SOURCE worker SCHEDULER NAME KIND MEMORY_LIMIT" in run.stderr


def test_the_checked_in_units_are_the_generated_ones():
    assert (SCRIPTS / "mcdask-worker.service").read_text() == worker_unit(*TLS_EXAMPLE)
    assert (SCRIPTS / "mcdask-scheduler.service").read_text() == scheduler_unit("192.168.1.10")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_accepts_the_units(tmp_path):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "dask").symlink_to(Path(sys.executable).with_name("dask"))
    units = {"mcdask-worker.service": worker_unit(*TLS_EXAMPLE, prefix=tmp_path, user="root"),
             "mcdask-scheduler.service": scheduler_unit("192.168.1.10", prefix=tmp_path, user="root")}
    for name, text in units.items():
        (tmp_path / name).write_text(text)
        run = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, f"{name}: {run.stderr}"


def farm_command(monkeypatch, scheduler: str, name: str, kind: str, memory_bytes: int) -> list[str]:
    """The ``dask worker`` arguments the farm starts a device with (no process started)."""
    monkeypatch.setattr(provision, "spawn", lambda *a, **k: SimpleNamespace(pid=1))
    monkeypatch.setattr(provision.processes, "start_time", lambda pid: 0)
    state = SimpleNamespace(data={"mode": "local", "scheduler": scheduler}, save=lambda: None)
    rec = {"name": name, "kind": kind, "memory_limit_bytes": memory_bytes, "ip": "127.0.0.1"}
    provision.start_workers(state, [rec], {})
    return shlex.split(rec["command"])


def test_a_device_unit_starts_the_farms_worker(monkeypatch):
    unit = worker_unit(*EXAMPLE)
    (exec_start,) = unit_field(unit, "ExecStart")
    unit_args = shlex.split(exec_start)
    farm_args = farm_command(monkeypatch, EXAMPLE[0], "pi3-00", "pi3", 900 * 2**20)
    i = farm_args.index("--host")   # the farm's device address in its network namespace
    assert farm_args[0] == "dask" and unit_args[1:] == farm_args[1:i] + farm_args[i + 2:]
    assert unit_args[0] == "/opt/mcdask/venv/bin/dask"
    assert "--no-nanny" in unit_args and unit_args[unit_args.index("--memory-limit") + 1] == str(900 * 2**20)
    assert unit_field(unit, "MemoryMax") == [str(900 * 2**20)]
    assert unit_field(unit, "WorkingDirectory") == ["/opt/mcdask"]


def test_a_device_unit_has_the_farms_dask_settings():
    env = dict(v.strip('"').split("=", 1) for v in unit_field(worker_unit(*EXAMPLE), "Environment"))
    farm_env = provision.base_env(None, None)
    assert {k: farm_env[k] for k in WORKER_CONFIG} == {k: env[k] for k in WORKER_CONFIG}
    assert env["DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE"] == "False"
    assert env["DASK_MCDASK__WORKER__BACKEND"] == "litert" and "MCDASK_TF_THREADS" not in env   # the default
    tf = dict(v.strip('"').split("=", 1)
              for v in unit_field(worker_unit(*EXAMPLE, backend="tensorflow"), "Environment"))
    # a tensorflow device says so: its preload would otherwise get the default, LiteRT, ready
    assert tf["DASK_MCDASK__WORKER__BACKEND"] == "tensorflow" and tf["MCDASK_TF_THREADS"] == "4"


def test_a_litert_device_unit_sets_the_backend_the_farm_sets():
    """``--backend litert``: the unit tells ``cluster.preload`` what ``farm up --backend litert``
    tells the farm's devices, and drops TensorFlow's thread count."""
    from cluster.farm import BACKEND_ENV

    env = dict(v.strip('"').split("=", 1) for v in unit_field(worker_unit(*EXAMPLE, backend="litert"), "Environment"))
    assert env[BACKEND_ENV] == "litert" and "MCDASK_TF_THREADS" not in env
    assert {k: env[k] for k in WORKER_CONFIG} == WORKER_CONFIG
