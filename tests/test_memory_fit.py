"""Plans meet the live devices' memory before anything is deployed: `mcdask run` plans for
what the workers have, and refuses a plan file that would run one out of memory, naming it."""

import json
import subprocess

import pytest
from stock import BIN, StockCluster

from mcdask.runtime.plugin import METADATA_KEY

pytestmark = pytest.mark.slow


def mcdask(*args, timeout=300):
    return subprocess.run([str(BIN / "mcdask"), *args], capture_output=True, text=True, timeout=timeout)


def test_run_refuses_what_does_not_fit_and_plans_for_what_does(tmp_path):
    plan = tmp_path / "alexnet-2.json"
    # the paper's TensorFlow 1.5 Pis hold all of AlexNet twice over: one copy per device
    r = mcdask("plan", "-w", "alexnet", "-n", "2", "--backend", "tf1.5", "-o", str(plan))
    assert r.returncode == 0, r.stderr
    assert json.loads(plan.read_text())["stages"][0]["layers"] == [0, 12]
    cluster = StockCluster(tmp_path)
    cluster.start_scheduler()
    try:
        # 1.2 GB of which Dask pauses a worker above 80 %: 960 MB usable, less than TensorFlow 2 needs
        for name in ("dev0", "dev1"):
            cluster.start_worker(name, "--memory-limit", "1.2GB")
        cluster.wait_for({"dev0", "dev1"})
        r = mcdask("run", "--scheduler", cluster.address, "-w", "alexnet", "--plan", str(plan), "--frames", "4")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        lines = [x for x in r.stderr.splitlines() if "does not fit" in x]
        assert len(lines) == 1, r.stderr
        assert "pi3-00 (worker dev0) needs 1,1" in lines[0] and "and has 960 MB" in lines[0]
        assert "597 MB runtime baseline" in lines[0] and "pi3-01 (worker dev1)" in lines[0]

        with cluster.client() as c:
            assert c.get_metadata(METADATA_KEY, None) is None, "a refused plan was deployed"

        # without --plan: the planner's plan for two 960 MB devices, which runs
        r = mcdask("run", "--scheduler", cluster.address, "-w", "alexnet", "--frames", "6", "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        assert summary["classified"] == 6 and summary["errors"] == 0
        need = summary["plan"]["predicted"]["memory_bytes"]
        assert len(need) == 2 and all(597e6 < m <= 960e6 for m in need.values()), need
    finally:
        assert not cluster.close(), "processes left behind"
