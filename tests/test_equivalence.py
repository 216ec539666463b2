"""The central correctness test: a split model answers exactly as the unsplit model.

Random valid plans (1..6 stages, fc shards k = 2..4, replicas 1..3) run in-process through the
same slices, merges and windows the workers use; tests/test_dask_runtime.py runs plans on real
Dask workers.
"""

import numpy as np
import pytest
from helpers import items_for, random_plan

import workloads
from mcdask.model.plan import single_device
from mcdask.runtime import local
from mcdask.streaming.reference import reference_outputs, run_local

CASES = {"alexnet": (10, 4), "vgg16": (8, 2), "action": (5, 40)}   # plans, frames (seeded: the same plans each run)
#: the fast tier (make check) runs AlexNet; make test runs all three
TIERED = [pytest.param(n, marks=[] if n == "alexnet" else [pytest.mark.slow]) for n in ("alexnet", "vgg16", "action")]


@pytest.fixture(autouse=True)
def _free_slices():
    yield
    local._CACHE.clear()


@pytest.mark.parametrize("name", TIERED)
def test_random_plans_equal_unsplit_model(name):
    w = workloads.get(name)
    n_plans, frames = CASES[name]
    items = items_for(w, frames)
    ref = reference_outputs(name, items)
    assert ref, "reference produced no classification"
    rng = np.random.default_rng(sum(map(ord, name)))
    splits = 0
    for _ in range(n_plans):
        plan = random_plan(w, rng).validate(w)
        splits += sum(st.split for st in plan.stages)
        local._CACHE.clear()          # one plan's slices at a time in this process
        records = run_local(plan, items)
        ok = [r for r in records if r.status == "ok"]
        assert [r.frame for r in ok] == sorted(ref), plan.to_json()
        for r in ok:
            scale = np.abs(ref[r.frame]).max()
            diff = np.abs(r.output - ref[r.frame]).max()
            assert diff <= 1e-5 * scale, f"frame {r.frame}: max diff {diff} > 1e-5 x {scale} for plan {plan.to_json()}"
    assert splits > 0, "the random plans never split a dense layer"


def test_outputs_depend_on_input():
    """Guard against a degenerate model: different frames give different answers."""
    w = workloads.get("alexnet")
    ref = reference_outputs("alexnet", items_for(w, 3))
    assert np.abs(ref[0] - ref[1]).max() > 1e-4


def test_action_windows_and_warmup():
    """Flow needs 10 frame pairs, the pyramid 25 temporal features: frame 34 is the first answer."""
    w = workloads.get("action")
    records = run_local(single_device(w), items_for(w, 37))
    status = [r.status for r in records]
    assert status[:34] == ["warmup"] * 34
    assert status[34:] == ["ok"] * 3
    assert all(r.output.shape == (1, 51) for r in records[34:])


def test_pyramid_takes_the_max_over_ranges():
    from mcdask.runtime.slices import Slice, SliceSpec

    w = workloads.get("action")
    i = w.index["pyramid"]
    s = Slice(SliceSpec("action", i, i + 1))
    rng = np.random.default_rng(3)
    sp = rng.standard_normal((1, 15, 256)).astype(np.float32)
    tp = rng.standard_normal((1, 25, 256)).astype(np.float32)
    out = s({"spatial_fc": sp, "temporal_fc": tp})["pyramid"]
    expect = []
    for x, win in ((sp, 15), (tp, 25)):
        for a, b in workloads.pyramid_ranges(win, 4):
            expect.append(x[:, a:b].max(axis=1))
    assert out.shape == (1, 7680)
    np.testing.assert_array_equal(out, np.concatenate(expect, axis=-1))


@pytest.mark.parametrize("name", TIERED)
def test_unsplit_model_equals_keras_own_model(name):
    """An oracle independent of mcdask's slicing: the workload's own Keras model (TimeDistributed
    streams and the whole pyramid window for action), given the same weights by layer name, and
    run by Keras's ``predict`` alone."""
    from mcdask.streaming.reference import against_keras, with_weights

    w = workloads.get(name)
    items = items_for(w, 40 if w.max_window > 1 else 3)
    records = run_local(single_device(w), items)
    local._CACHE.clear()
    check = against_keras(with_weights(workloads.keras_model_of(name), w), w, items, records)
    assert check["checked"] == sum(r.status == "ok" for r in records) > 0
    assert check["equal"], check


def test_built_in_facts_are_read_from_the_keras_models():
    """facts/NAME.json is what ``from_keras`` reads from each model file (`python -m workloads`)."""
    for name in workloads.NAMES:
        assert workloads.derive(name) == workloads.get(name), f"run `python -m workloads`: {name} facts are stale"


def test_every_replica_of_a_piece_answers_its_turn_of_frames():
    """The in-process runner holds one copy of a piece per device, as the workers do, and the
    replicas take frames in turn: spoil one replica's copy and exactly its frames go wrong."""
    from mcdask.model.plan import Plan, Shard, Stage
    from mcdask.runtime.local import LocalRunner
    from mcdask.streaming.stream import Stream

    w = workloads.get("alexnet")
    cut = w.index["fc1"]
    plan = Plan("alexnet", ("a", "b", "c", "d"), (Stage(0, cut, (Shard(None, ("a", "b", "c")),)),
                                                  Stage(cut, len(w.layers), (Shard(None, ("d",)),))))
    items = items_for(w, 6)
    ref = reference_outputs("alexnet", items)
    runner = LocalRunner(plan.validate(w))
    copies = runner.copies[0, 0]
    assert len(copies) == 3 and len({id(c) for c in copies}) == 3
    spoilt = copies[1]
    import tensorflow as tf

    spoilt._fn = lambda *xs: [tf.zeros((1, *w.layer("flatten").output_shape))]
    records = list(Stream(runner, plan, w, depth=1).run(items))
    assert [r.status for r in records] == ["ok"] * 6, [r.error for r in records]
    wrong = [r.frame for r in records if np.abs(r.output - ref[r.frame]).max() > 1e-6]
    assert wrong == [1, 4]
