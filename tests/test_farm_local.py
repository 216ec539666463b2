"""The farm's fallback without root or namespaces: local workers, same count and resources,
and a plain statement that CPU and network are not capped."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fallback_starts_uncapped_local_workers(tmp_path):
    env = {**os.environ, "MCDASK_FARM_FORCE_LOCAL": "1", "MCDASK_FARM_DIR": str(tmp_path / "farm")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "mcdask.cli", "farm", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=600, env=env)
    r = run("up", "--devices", "2", "--port", str(_free_port()), "--dashboard-port", str(_free_port()), "--json")
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "CPU and network are NOT capped" in r.stderr
        st = json.loads(r.stdout.strip().splitlines()[-1])
        assert st["mode"] == "local" and not st["cpu_capped"] and not st["network_shaped"]
        assert [d["name"] for d in st["devices"]] == ["pi3-00", "pi3-01"]
        from distributed import Client

        with Client(st["scheduler"], timeout="30s", set_as_default=False) as c:
            workers = c.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(w["name"] for w in workers) == ["pi3-00", "pi3-01"]
            assert all(w["resources"] == {"pi3": 1} and w["nthreads"] == 1 and w["memory_limit"] == 2**30 - 64 * 2**20
                       for w in workers)
        st = json.loads(run("status", "--json").stdout.strip().splitlines()[-1])
        assert all(d["alive"] for d in st["devices"])
    finally:
        r = run("down")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "farm").exists()
