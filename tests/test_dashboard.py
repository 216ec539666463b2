"""The swarm on the dashboard: the /mcdask page, mcdask's /metrics series, `mcdask status`, a
real browser on the page, and plan switches that remove their old resource tags.

One stock `dask scheduler` (no flag, no preload) with three stock workers named after the
plan's devices; the stream runs in a thread until the checks made during it are done.
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from distributed import Client
from helpers import items_for
from stock import StockCluster

import workloads
from mcdask.commands import default_plan, stream_through
from mcdask.dashboard.state import SwarmState
from mcdask.runtime.deploy import deploy
from mcdask.runtime.weights import WeightsSource
from mcdask.streaming.records import Item

ROOT = Path(__file__).resolve().parents[1]
W = workloads.get("alexnet")
PLAN = default_plan(W, 3)


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("dashboard")
    c = StockCluster(cwd, env={"DASK_MCDASK__WORKER__INTRA_OP_THREADS": "1"})
    c.start_scheduler()
    try:
        for d in PLAN.devices:
            c.start_worker(d)
        c.wait_for(set(PLAN.devices))
        with Client(c.address, timeout="30s", set_as_default=False) as client:
            base = client.dashboard_link.rsplit("/", 1)[0]
            yield c, client, base
    finally:
        assert not c.close(), "processes left behind"


class Endless:
    """Frames until told to stop (at most ``cap``), so checks can run while the stream does."""

    def __init__(self, cap: int = 3000):
        self.base = items_for(W, 8)
        self.stop = threading.Event()
        self.cap = cap

    def __iter__(self):
        for i in range(self.cap):
            if self.stop.is_set():
                return
            yield Item(i, inputs=self.base[i % len(self.base)].inputs)


def chromium() -> str:
    """The chromium binary, installed with apt when missing and running as root; else skip."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("needs headless Chromium: `apt-get install chromium` (root) was not possible here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, env=env,
                       timeout=600)
    if r.returncode != 0:   # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env, timeout=300)
        r = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, env=env,
                           timeout=600)
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"apt-get install chromium failed: {r.stderr[-500:]}")
    return found


def browse(binary: str, url: str, *extra: str) -> str:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--window-size=1400,1500", "--virtual-time-budget=6000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout


@pytest.mark.slow
def test_page_metrics_status_and_browser_during_a_stream(cluster, tmp_path):
    c, client, base = cluster
    browser = chromium()
    src = Endless()
    box: dict = {}

    def go():
        try:
            box["records"], box["summary"] = stream_through(client, PLAN, src, WeightsSource(), None, None, False)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            box["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 120
        while True:   # until the scheduler has heard a few seconds of answers
            assert "error" not in box, box.get("error")
            try:   # 404 until the deploy has registered the dashboard plugin
                snap = json.loads(get(base + "/mcdask/state.json")[1])
            except urllib.error.HTTPError:
                snap = {"streams": []}
            live = [s for s in snap["streams"] if s["live"]]
            if live and live[0]["frames"]["ok"] >= 15 and live[0]["ips"] > 0:
                break
            assert time.monotonic() < deadline, snap
            time.sleep(0.5)
        status, page = get(base + "/mcdask")
        assert status == 200
        assert all(d in page for d in PLAN.devices) and PLAN.id in page
        assert {d["device"] for d in snap["devices"]} == set(PLAN.devices)
        assert all(d["present"] and d["pieces"] for d in snap["devices"])
        assert sum(d["bottleneck"] for d in snap["devices"]) <= 1
        _, plots = get(base + "/mcdask/plots.json")
        assert {"plot-memory", "plot-util", "plot-ips"} <= set(json.loads(plots))
        _, bokehjs = get(base + "/mcdask/static/js/bokeh.min.js")
        assert len(bokehjs) > 100_000

        # a real browser runs the page's script: devices and a non-zero IPS in the DOM, a screenshot
        dom = browse(browser, base + "/mcdask", "--dump-dom")
        assert all(d in dom for d in PLAN.devices), dom[:2000]
        ips = [float(x) for x in re.findall(r'class="ips">([0-9.]+)<', dom)]
        assert ips and max(ips) > 0, dom[:3000]
        assert 'class="bk-' in dom or "bk-Figure" in dom or "bk-root" in dom or 'data-plotted="3"' in dom
        # the README's screenshot is refreshed only on request: a test run leaves the tree clean
        shot = (ROOT / "bench" / "results" / "dashboard.png" if os.environ.get("MCDASK_REFRESH_SCREENSHOT")
                else tmp_path / "dashboard.png")
        browse(browser, base + "/mcdask", f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 20_000

        r = CliRunner().invoke(_cli(), ["status", "--scheduler", c.address, "--json"])
        assert r.exit_code == 0, r.output
        st = json.loads(r.output.strip().splitlines()[-1])
        assert [d["device"] for d in st["devices"]] == list(PLAN.devices)
        assert st["streams"] and st["streams"][0]["frames"]["ok"] > 0
    finally:
        src.stop.set()
        t.join(timeout=120)
    assert "error" not in box, box.get("error")
    summary = box["summary"]
    _, metrics = get(base + "/metrics")
    ok = re.search(r'^mcdask_frames_total\{status="ok"\} ([0-9.e+]+)$', metrics, re.M)
    assert ok and float(ok.group(1)) == summary["classified"], (summary["classified"], ok and ok.group(0))
    count = re.search(r"^mcdask_frame_latency_seconds_count ([0-9.e+]+)$", metrics, re.M)
    assert count and float(count.group(1)) == summary["classified"]
    for series in ("mcdask_ips", "mcdask_frames_in_flight", "mcdask_device_utilisation{device=",
                   "mcdask_device_memory_bytes{device=", f'mcdask_devices{{plan="{PLAN.id}"}} 3.0'):
        assert series in metrics, series
    # the stream's tasks form one Dask span named after the stream
    spans = client.run_on_scheduler(lambda dask_scheduler: [list(sp.name) for sp in
                                                            dask_scheduler.extensions["spans"].spans.values()])
    assert [summary["span"]] in spans, (summary["span"], spans)


@pytest.mark.slow
def test_redeploy_keeps_one_plugin_and_removes_old_tags(cluster):
    c, client, base = cluster
    deploy(client, PLAN, WeightsSource())            # again: the plugin is registered twice, no duplicate series
    two = default_plan(W, 2)
    deploy(client, two, WeightsSource(), binding=dict(zip(two.devices, PLAN.devices[:2])), sync=list(PLAN.devices))
    # only the new plan's tags offer a slot; an old one that a task the worker still knows holds
    # (the last stream's, while the client lets go of it) stays at 0 until the next switch
    offered = {w["name"]: {t for t, n in w["resources"].items() if n > 0}
               for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    local = client.run(lambda dask_worker: {t for t, n in dask_worker.state.total_resources.items() if n > 0})
    for name, held in offered.items():
        assert all(t.startswith(f"mcdask-{two.id}-") for t in held), (name, held)
    assert not offered[PLAN.devices[2]], offered          # the third device holds nothing now
    assert all(offered[d] for d in PLAN.devices[:2]), offered
    assert all(all(t.startswith(f"mcdask-{two.id}-") for t in held) for held in local.values()), local
    _, metrics = get(base + "/metrics")
    assert f'mcdask_devices{{plan="{two.id}"}} 2.0' in metrics or "mcdask_devices{" in metrics
    r = CliRunner().invoke(_cli(), ["status", "--scheduler", c.address])
    assert r.exit_code == 0 and two.id in r.output, r.output


def test_streams_told_apart_and_bounded():
    s = SwarmState()
    for i in range(40):
        s.publish({"stream": f"s{i}", "frames": {"ok": i}, "ips": 1.0, "done": i < 30})
    s.publish({"stream": "s39", "frames": {"ok": 99}, "ips": 2.0})
    listed = s.stream_list()
    assert len(listed) <= 16 and {x["stream"] for x in listed} >= {f"s{i}" for i in range(30, 40)}
    assert next(x for x in listed if x["stream"] == "s39")["frames"]["ok"] == 99


def _cli():
    from mcdask.cli import main
    return main


def test_series_made_once_even_when_the_module_is_loaded_again():
    import importlib

    from prometheus_client import REGISTRY

    from mcdask.dashboard import metrics

    first = metrics.series()
    again = importlib.reload(metrics).series()   # a second copy of the module: no duplicate timeseries
    assert first is not None and again is not None and again["mcdask_frames"] is first["mcdask_frames"]
    before = REGISTRY.get_sample_value("mcdask_frames_total", {"status": "ok"}) or 0.0
    metrics.observe({"frames": {"ok": 5}, "new_latencies": [0.1] * 5}, {"frames": {"ok": 2}})
    assert REGISTRY.get_sample_value("mcdask_frames_total", {"status": "ok"}) == before + 3


def test_publisher_failures_never_reach_the_stream(caplog):
    import logging

    from mcdask.dashboard.publish import Publisher
    from mcdask.streaming.records import Record

    pub = Publisher(None, "alexnet", interval_s=0.05).start()   # no client: every send fails
    with caplog.at_level(logging.DEBUG, logger="mcdask.dashboard.publish"):
        for i in range(20):
            pub.record(Record(i, "ok", latency_s=0.01, done_at=time.perf_counter()))
        list(pub.reading(range(25)))
        time.sleep(0.3)
        pub.close()
    assert pub.counts["ok"] == 20 and pub.figures()["in_flight"] == 5
    assert sum("publishing stream figures failed" in r.message for r in caplog.records) == 1
