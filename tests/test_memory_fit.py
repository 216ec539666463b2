"""Plans meet the live devices' memory before anything is deployed: `mcdask run` plans for
what the workers have, and refuses a plan file that would run one out of memory, naming it."""

import json
import re
import subprocess
import time
from contextlib import contextmanager

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
        # what TensorFlow takes in a worker here, before any slice: 600-760 MB, by what the page cache holds
        baseline = _measured_baseline(cluster)
        # usable memory (80 % of the limit, where Dask pauses a worker) between what the planner's plan
        # needs (the baseline + 146 MB of slices at their build peak) and all of AlexNet (+ 198 MB)
        usable = baseline + 172_000_000
        for name in ("dev0", "dev1"):
            cluster.start_worker(name, "--memory-limit", str(int(usable / 0.8) + 1))
        cluster.wait_for({"dev0", "dev1"})
        # on the tensorflow backend, whose baseline the workers above are sized on
        r = mcdask("run", "--scheduler", cluster.address, "-w", "alexnet", "--plan", str(plan), "--frames", "4",
                   "--backend", "tensorflow")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        lines = [x for x in r.stderr.splitlines() if "does not fit" in x]
        assert len(lines) == 1, r.stderr
        m = re.search(r"pi3-00 \(worker dev0\) needs ([\d,]+) MB \(([\d,]+) MB runtime baseline \+ ([\d,]+) MB of "
                      r"slices at their build peak\) and has ([\d,]+) MB", lines[0])
        assert m and "pi3-01 (worker dev1)" in lines[0], lines[0]
        need, base, slices, has = (int(g.replace(",", "")) for g in m.groups())
        assert abs(has - usable / 1e6) <= 1 and need > has, lines[0]
        assert slices == 198 and abs(base - max(baseline, 602.4e6) / 1e6) < 25, (lines[0], baseline)

        with cluster.client() as c:
            assert c.get_metadata(METADATA_KEY, None) is None, "a refused plan was deployed"

        # without --plan: the planner's plan for what the two devices have, which runs
        r = mcdask("run", "--scheduler", cluster.address, "-w", "alexnet", "--frames", "6", "--json",
                   "--backend", "tensorflow")
        assert r.returncode == 0, r.stderr[-3000:] + _logs(tmp_path)
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        assert summary["classified"] == 6 and summary["errors"] == 0
        need = summary["plan"]["predicted"]["memory_bytes"]
        assert len(need) == 2 and all(baseline < m <= usable for m in need.values()), (need, usable)
    finally:
        assert not cluster.close(), "processes left behind"


def _measured_baseline(cluster) -> int:
    """A worker's resident bytes with TensorFlow loaded, measured as `mcdask run` measures it; the
    worker then leaves."""
    from mcdask.profiling.worker import runtime_baseline_bytes

    probe = cluster.start_worker("probe")
    cluster.wait_for({"probe"})
    with cluster.client() as c:
        (baseline,) = c.run(runtime_baseline_bytes, "tensorflow").values()
        probe.terminate()
        probe.wait(30)
        deadline = time.monotonic() + 30
        while c.scheduler_info(n_workers=-1)["workers"]:
            assert time.monotonic() < deadline, "the probe worker did not leave within 30 s"
            time.sleep(0.2)
    del cluster.procs["probe"]
    return baseline


def _logs(folder) -> str:
    return "".join(f"\n--- {p.name}:\n" + p.read_text()[-1500:] for p in sorted(folder.glob("dev*.log")))


def test_a_worker_dask_does_not_pause_keeps_the_recorded_baseline_and_loads_nothing(tmp_path):
    """Without a memory limit Dask never pauses a worker on its resident size: the kernel drops
    clean library pages first, so `mcdask run` neither loads the runtime there nor counts it."""
    import sys

    from mcdask.streaming.fit import live_baseline

    with one_worker(tmp_path, "0") as c:
        assert live_baseline(c, "tensorflow") == 0
        assert list(c.run(lambda: "tensorflow" in sys.modules).values()) == [False]


def test_a_worker_dask_paused_is_named_with_its_memory(tmp_path):
    """A frame that goes unanswered says why where Dask has paused a worker of the plan: its
    resident memory passed the pause fraction of its limit, and it starts no task until it drops."""
    from mcdask.runtime.deploy import paused_workers

    with one_worker(tmp_path, "500MB") as c:
        assert paused_workers(c) is None

        def hold(n):   # 400 MB written, kept: the worker passes 80 % of 500 MB
            import builtins

            import numpy as np

            builtins._mcdask_test_hold = np.ones(n, np.uint8)

        c.run(hold, 400_000_000)
        deadline = time.monotonic() + 30
        while (line := paused_workers(c)) is None:
            assert time.monotonic() < deadline, "Dask did not pause a worker holding 400 of its 500 MB"
            time.sleep(0.2)
        assert re.search(r"Dask has paused dev0 \([\d,]+ MB resident of a 500 MB limit\): a worker above 80% "
                         r"of its memory limit starts no task", line), line


@contextmanager
def one_worker(tmp_path, memory_limit: str):
    """A stock scheduler and one stock worker, dev0, with ``--memory-limit``; a client of them."""
    cluster = StockCluster(tmp_path)
    cluster.start_scheduler()
    try:
        cluster.start_worker("dev0", "--memory-limit", memory_limit)
        cluster.wait_for({"dev0"})
        with cluster.client() as c:
            yield c
    finally:
        assert not cluster.close(), "processes left behind"
