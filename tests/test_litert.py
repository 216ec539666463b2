"""The litert backend: slices converted on the client, loaded from the device's disk cache by
LiteRT, and run without TensorFlow.

In-process: random plans of AlexNet and the action model on LiteRT equal the unsplit
TensorFlow model; batches resize the interpreter; the disk cache checks what it holds. On
stock `dask worker` processes: a litert deployment streams equal answers with no TensorFlow in
the workers, a second deployment loads from the devices' disks and sends nothing, and a corrupt
entry is found and replaced.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import dask.config
import numpy as np
import psutil
import pytest
from helpers import items_for, random_plan
from stock import StockCluster

import workloads
from mcdask.model.plan import Plan, Shard, Stage
from mcdask.runtime import local
from mcdask.runtime.flatcache import FlatCache
from mcdask.runtime.litert import LiteChain
from mcdask.runtime.pieces import SliceSpec
from mcdask.streaming.reference import reference_outputs
from mcdask.streaming.stream import Stream

#: one random plan each (seeds whose plan splits a dense layer), frames, kernels (mixed: a stage
#: with convolutions and dense layers runs as two interpreters, XNNPACK then built-in): a conversion
#: costs about 30 MB of weights a second here, so each plan converts its model once
CASES = {"alexnet": (11, 3, "mixed"), "action": (12, 36, "builtin")}


@pytest.fixture(autouse=True)
def _free_slices():
    yield
    local._CACHE.clear()


def _records(plan: Plan, items, **runtime):
    runner = local.LocalRunner(plan, backend="litert", **runtime)
    return list(Stream(runner, plan, runner.workload, depth=1).run(items))


#: LiteRT's kernels against TensorFlow's reference, relative to the output's scale. On CPUs where
#: TensorFlow turns oneDNN on by default (AVX512-BF16 here) the action model's built-in-kernel
#: answers differ by up to 1.25e-5 of the scale (its 8192-wide dense layers sum in another order)
TOLERANCE = 2e-5


def _assert_equal(records, ref, what):
    ok = [r for r in records if r.status == "ok"]
    assert [r.frame for r in ok] == sorted(ref), what
    for r in ok:
        scale = np.abs(ref[r.frame]).max()
        diff = np.abs(r.output - ref[r.frame]).max()
        assert diff <= TOLERANCE * scale, f"frame {r.frame}: max diff {diff} > {TOLERANCE} x {scale} for {what}"


@pytest.mark.parametrize("name", ["alexnet", pytest.param("action", marks=pytest.mark.slow)])
def test_a_random_plan_on_litert_equals_unsplit_model(name):
    """The fast tier (make check) runs AlexNet; make test also the action model (windows of
    (batch, window, features), 549 MB of weights to convert)."""
    w = workloads.get(name)
    seed, frames, kernels = CASES[name]
    items = items_for(w, frames)
    ref = reference_outputs(name, items)
    assert ref, "reference produced no classification"
    plan = random_plan(w, np.random.default_rng(sum(map(ord, name)) + seed), max_stages=4).validate(w)
    assert any(st.split for st in plan.stages) and any(len(sh.devices) > 1 for st in plan.stages for sh in st.shards)
    _assert_equal(_records(plan, items, kernels=kernels), ref, f"{kernels} {plan.to_json()}")
    if kernels == "mixed":   # the plan has a stage of conv5..fc1: XNNPACK's interpreter, then the built-in one
        chains = [s for s in local._CACHE.values() if isinstance(s, LiteChain)]
        assert chains and all([p.spec.kernels for p in c.parts] == ["xnnpack", "builtin"] for c in chains), chains


def test_a_batch_resizes_the_interpreter():
    """K frames per task: the interpreter's inputs are resized, and back again."""
    from mcdask.runtime.convert import flatbuffer
    from mcdask.runtime.litert import LiteSlice
    from mcdask.runtime.slices import Slice

    spec = SliceSpec("alexnet", 0, 4)
    tf_slice = Slice(spec)
    lite = LiteSlice(replace(spec, backend="litert"), content=flatbuffer(spec))
    for batch in (1, 4, 1):
        feeds = {k: np.random.default_rng(batch).random(v.shape, np.float32)
                 for k, v in lite.example_feeds(batch).items()}
        got, want = lite(feeds), tf_slice(feeds)
        for k in want:
            assert got[k].shape == want[k].shape
            assert np.abs(got[k] - want[k]).max() <= 1e-5 * np.abs(want[k]).max()


def test_the_cache_keeps_checked_entries(tmp_path):
    cache = FlatCache(tmp_path, limit_bytes=250)
    a, b = "a" * 40, "b" * 40
    path = cache.put(a, b"x" * 100)
    assert cache.missing([a, b]) == [b]
    assert cache.load(a) == path and cache.hits == 1
    raw = bytearray(path.read_bytes())
    raw[7] ^= 1
    path.write_bytes(bytes(raw))
    assert cache.missing([a]) == [a] and cache.corrupt == 1 and not path.exists()
    cache.put(a, b"x" * 100)
    cache.put(b, b"y" * 100)
    cache.put("c" * 40, b"z" * 100)       # over 250 bytes: the least recently used goes
    assert cache.evicted == 1 and cache.missing([a, b, "c" * 40]) == [a]
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(ValueError, match="content key"):
        cache.put("../etc", b"")


def test_the_cache_takes_a_flatbuffer_in_chunks_in_order_and_checks_it(tmp_path):
    import hashlib

    cache, key = FlatCache(tmp_path), "d" * 40
    data = bytes(range(256)) * 40
    sha = hashlib.sha256(data).hexdigest()
    assert cache.put_chunk(key, 0, data[:4000], len(data), sha) is None
    with pytest.raises(ValueError, match=f"flatbuffer {key}: a chunk at byte 9,000 came after 4,000 bytes"):
        cache.put_chunk(key, 9000, data[9000:], len(data), sha)
    assert cache.put_chunk(key, 4000, data[4000:8000], len(data), sha) is None
    path = cache.put_chunk(key, 8000, data[8000:], len(data), sha)
    assert path is not None and path.read_bytes() == data and cache.load(key) == path
    assert cache.put_chunk(key, 0, data[:5000], len(data), sha) is None      # offset 0 starts afresh
    spoilt = b"\0" + data[5001:]
    with pytest.raises(ValueError, match="arrived of 10,240, SHA-256"):
        cache.put_chunk(key, 5000, spoilt, len(data), sha)
    assert cache.load(key) == path and not list(tmp_path.glob(".*"))   # the entry stands; no partial left


SPLIT = Plan("alexnet", ("a", "b"), (
    Stage(0, 9, (Shard(None, ("a",)),)),
    Stage(9, 10, (Shard((0, 2048), ("a",)), Shard((2048, 4096), ("b",)))),
    Stage(10, 12, (Shard(None, ("b",)),)),
))


@pytest.mark.slow
def test_a_litert_deployment_on_stock_workers(tmp_path):
    from mcdask.commands import check_against_reference, stream_through
    from mcdask.runtime.deploy import deploy, worker_addresses
    from mcdask.runtime.weights import WeightsSource

    w = workloads.get("alexnet")
    items = items_for(w, 4)
    # defined here, so Dask sends them by value (a worker cannot import this test module)
    _tensorflow_loaded = lambda: sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    _status = lambda dask_worker: dask_worker.plugins["mcdask-slices"].status()
    cluster = StockCluster(tmp_path)
    try:
        cluster.start_scheduler()
        for name in ("d0", "d1"):
            cluster.start_worker(name, "--local-directory", str(tmp_path / name))
        cluster.wait_for({"d0", "d1"})
        with cluster.client() as client:
            addr = worker_addresses(client)
            home, swapped = {"a": "d0", "b": "d1"}, {"a": "d1", "b": "d0"}

            def stream_and_check(dep):
                records, _ = stream_through(client, SPLIT, items, WeightsSource(), None, None, False,
                                            deployment=dep, keep="outputs")
                check = check_against_reference(w, items, records, WeightsSource())
                assert check["equal"] and check["checked"] == len(items), check

            # a flatbuffer larger than a chunk reaches a device a chunk at a time: its resident
            # memory never holds the whole (fc2..fc3, 84 MB, before it is deployed below)
            from mcdask.profiling.worker import peak_rss_bytes, reset_peak
            from mcdask.runtime.convert import CHUNK_BYTES, content_key, flatbuffer_path, send

            tail = SliceSpec("alexnet", 10, 12, backend="litert")
            pid, rss = cluster.procs["d1"].pid, psutil.Process(cluster.procs["d1"].pid).memory_info().rss
            reset_peak(pid)
            sent = send(client, addr["d1"], content_key(tail), flatbuffer_path(tail))
            assert sent > 4 * CHUNK_BYTES and peak_rss_bytes(pid) - rss < 3 * CHUNK_BYTES, (peak_rss_bytes(pid), rss)
            # every step of a send waits at most the deployment's deadline, and says for what
            from mcdask.errors import DeploymentError
            from mcdask.runtime.convert import _on

            with dask.config.set({"mcdask.controller.deploy-timeout": "1s"}), pytest.raises(DeploymentError) as e:
                _on(client, addr["d1"], "nap", lambda dask_worker: time.sleep(2))
            assert str(e.value) == f"device {addr['d1']} did not nap within 1 s (mcdask.controller.deploy-timeout)"

            first = deploy(client, SPLIT, binding=home, backend="litert")
            assert first.backend == "litert" and first.shipped_bytes + sent > 0.9 * w.param_bytes
            stream_and_check(first)
            assert client.run(_tensorflow_loaded) == {addr["d0"]: [], addr["d1"]: []}
            # auto kernels on workers with no memory limit: the dense layers on XNNPACK too
            assert {a: st["kernels"] for a, st in client.run(_status).items()} == {
                addr["d0"]: ["xnnpack"], addr["d1"]: ["xnnpack"]}

            moved = deploy(client, SPLIT, binding=swapped, backend="litert")   # each needs the other's pieces
            assert 0 < moved.shipped_bytes < 1.1 * w.param_bytes
            again = deploy(client, SPLIT, binding=home, backend="litert")      # both on disk now
            assert again.shipped_bytes == 0
            stream_and_check(again)
            st = client.run(_status)[addr["d0"]]
            (cache,) = st["cache"]
            assert st["backends"] == ["litert"] and cache["hits"] >= 2 and cache["corrupt"] == 0

            # spoil the entry of a piece d0 loads under the swapped binding (fc2..fc3, b's last piece)
            entries = sorted(Path(cache["dir"]).glob("*.tflite"), key=lambda p: p.stat().st_size)
            spoilt = [p for p in entries if p.stat().st_size > 60e6][-1]
            raw = bytearray(spoilt.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            spoilt.write_bytes(bytes(raw))
            fixed = deploy(client, SPLIT, binding=swapped, backend="litert")
            assert fixed.shipped_bytes == len(raw)
            st = client.run(_status)[addr["d0"]]
            assert st["cache"][0]["corrupt"] == 1 and spoilt.exists() and spoilt.read_bytes() != bytes(raw)
            stream_and_check(fixed)
            assert client.run(_tensorflow_loaded) == {addr["d0"]: [], addr["d1"]: []}

            # a restarted device loads its pieces from its disk before it takes a task, with no client
            cluster.signal("d0", signal.SIGTERM)
            cluster.procs["d0"].wait(timeout=30)
            cluster.start_worker("d0", "--local-directory", str(tmp_path / "d0"))
            cluster.wait_for({"d0", "d1"})
            d0 = worker_addresses(client)["d0"]
            deadline = time.monotonic() + 60
            while (st := client.run(_status, workers=[d0])[d0])["deployment"] != fixed.id:
                assert time.monotonic() < deadline, f"the restarted device did not take up the deployment: {st}"
                time.sleep(0.5)
            assert not st["error"] and len(st["slices"]) == 2
            assert st["cache"][0]["hits"] == 2 and st["cache"][0]["stored"] == 0
            stream_and_check(fixed)
    finally:
        assert not cluster.close(), "processes left behind"


@pytest.mark.parametrize("command", ["run", "demo", "batch"])
def test_a_backend_mcdask_does_not_have_is_one_clear_line(command):
    from click.testing import CliRunner

    from mcdask.cli import main

    args = {"run": ["-s", "tcp://127.0.0.1:9", "-w", "alexnet"], "demo": [],
            "batch": ["-s", "tcp://127.0.0.1:9", "-w", "alexnet", "--source", "synthetic", "-o", "x.jsonl"]}[command]
    result = CliRunner().invoke(main, [command, *args, "--backend", "foo"])
    assert result.exit_code == 2
    assert "Invalid value for '--backend': 'foo' is not one of 'tensorflow', 'litert'." in result.output


def test_auto_kernels_put_dense_weights_on_xnnpack_only_where_their_copy_fits():
    """A device on auto kernels loads its new slices' dense layers on XNNPACK when what it holds
    plus 2.15x their weights fits what it may use, else on the built-in kernels (mixed)."""
    from mcdask.runtime.litert import LiteChain, load
    from mcdask.runtime.plugin import fast_dense_fits

    w = workloads.get("alexnet")
    whole = SliceSpec("alexnet", 0, len(w.layers), backend="litert", kernels="auto")
    weights = sum(layer.param_bytes for layer in w.layers)
    assert fast_dense_fits([whole], 100_000_000, 100_000_000 + round(2.15 * weights) + 1)
    assert not fast_dense_fits([whole], 100_000_000, 100_000_000 + round(2.15 * weights) - 1_000_000)
    stage = SliceSpec("alexnet", 6, 10, (0, 1024), backend="litert", kernels="auto")   # conv5..fc1[0:1024]
    from mcdask.runtime.convert import flatbuffer_path

    for fast, kernels in ((True, ["xnnpack", "xnnpack"]), (False, ["xnnpack", "builtin"])):
        s = load(stage, flatbuffer_path, fast_dense=fast)
        assert isinstance(s, LiteChain) and [p.spec.kernels for p in s.parts] == kernels
        assert [(p.spec.start, p.spec.end, p.spec.units) for p in s.parts] == [(6, 9, None), (9, 10, (0, 1024))]


def test_a_backend_in_the_config_is_checked_at_deploy():
    import dask

    from mcdask.errors import DeploymentError
    from mcdask.runtime.deploy import backend_of

    assert backend_of("litert") == ("litert", "auto")
    with dask.config.set({"mcdask.worker.backend": "tflite"}), pytest.raises(DeploymentError) as e:
        backend_of()
    assert str(e.value) == "backend 'tflite': choose one of tensorflow, litert (mcdask.worker.backend)"
    with dask.config.set({"mcdask.worker.litert-kernels": "gpu"}), pytest.raises(DeploymentError) as e:
        backend_of("litert")
    assert str(e.value) == ("litert kernels 'gpu': choose one of auto, mixed, xnnpack, builtin "
                            "(mcdask.worker.litert-kernels)")


def test_a_litert_device_installs_no_tensorflow():
    from test_packaging import required

    litert = required("mcdask", frozenset({"litert"}))
    assert "ai-edge-litert" in litert
    assert litert & {"tensorflow", "tensorflow-cpu", "keras"} == set()
    test = required("mcdask", frozenset({"test"}))
    assert "ai-edge-litert" in test and test & {"tensorflow", "tensorflow-cpu"}
