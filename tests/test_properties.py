"""Properties that hold for every input, checked by hypothesis on small fake workloads: the plan
and profile readers either give an object or raise their one-line error; plans round-trip
through their file form; the planner's plans are feasible, cover every layer once and split
dense layers exactly, with finite predictions; a frame either validates or its error names the
input; and a dense layer split any way merges back to the unsplit result. Fast tier: no
cluster, no TensorFlow. Failing examples hypothesis found are kept as ``@example``s."""

from __future__ import annotations

import json
import math
import re

import numpy as np
from helpers import random_plan
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mcdask.errors import FrameError, McdaskError, PlanError, ProfileError
from mcdask.model.plan import Plan
from mcdask.model.profile import Device, DeviceKind, Link, LinkModel, Profile
from mcdask.planning.planner import plan_all
from mcdask.runtime.slices import merge, softmax
from mcdask.runtime.weights import WeightsSource, layer_weights
from mcdask.streaming.records import validate
from mcdask.streaming.sources import Feeder
from workloads.spec import Builder

FAST = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
SLOWER = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])

# conv 8x8x3 -> pool -> flatten 48 -> dense 16 -> dense 4 softmax
_b = Builder({"frame": (8, 8, 3)})
_x = _b.pool("p1", _b.conv("c1", "frame", 3, 3), 2)
_x = _b.dense("fc1", _b.flatten("flat", _x), 16)
_b.dense("fc2", _x, 4, activation="softmax")
TINY = _b.workload("tiny", 4, "a small chain for properties")
TIMES = {"c1": 0.01, "p1": 0.001, "flat": 0.0, "fc1": 0.02, "fc2": 0.001}

# ---- the readers: any JSON value parses or gets the one error type --------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10)


def _paths(doc, prefix=()):
    """Every place in a JSON document, as key/index paths (the root is ``()``)."""
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


@st.composite
def mutated(draw, doc: dict) -> dict:
    """``doc`` with one to three places replaced by any JSON value or deleted."""
    d = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(d))[1:]))
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    return d


def toy_kind(name: str, memory: int = 10**6, **extra) -> DeviceKind:
    return DeviceKind(kind=name, memory_bytes=memory, baseline_bytes=1000, layer_time_s={"tiny": dict(TIMES)}, **extra)


#: a profile that uses every optional field, so that mutations reach each of them
GOOD_PROFILE = Profile(
    {"a": toy_kind("a", shard_time_s={"tiny": {"fc1": {8: 0.01}}}, layer_memory_bytes={"tiny": {"fc1": 4000}},
                   resources={"MEM": 1e6}, task_overhead_s=0.001),
     "b": toy_kind("b", dense_fixed_s=0.001, dense_s_per_weight_byte=1e-9, weight_memory_factor=1.5)},
    (Device("d0", "a", "h"), Device("d1", "b", "h"), Device("d2", "b")),
    LinkModel(0.01, 1e6), (Link("d0", "client", LinkModel(0.02, 2e6)),), name="toy",
    host_cores={"h": 2.0}, host_task_overhead_s={"h": 0.001}, host_frame_overhead_s={"h": 0.002}).to_dict()
GOOD_PLAN = random_plan(TINY, np.random.default_rng(1)).to_dict()
#: Python's own words for a wrong type: a message that says them does not say what is wrong
PYTHON_WORDS = re.compile(r"object has no attribute|indices must be|not subscriptable|values to unpack|"
                          r"update sequence|not iterable|invalid literal|too large to convert")


def edited(doc: dict, path: tuple, value) -> dict:
    d = json.loads(json.dumps(doc))
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return d


def one_clear_line(e: Exception) -> None:
    assert "\n" not in str(e) and not PYTHON_WORDS.search(str(e)) and len(str(e)) < 400, str(e)


@FAST
@given(st.one_of(JSON, mutated(GOOD_PLAN)))
@example(edited(GOOD_PLAN, ("stages", 0), [0, 1]))                 # a stage that is a list
@example(edited(GOOD_PLAN, ("stages", 0, "layers"), [0]))          # one layer bound
@example(edited(GOOD_PLAN, ("stages", 0, "shards", 0), []))        # a shard that is a list
@example(edited(GOOD_PLAN, ("predicted",), "ab"))                  # predicted that is a string
@example(edited(GOOD_PLAN, ("stages", 0, "layers"), [0, 10**400]))  # a bound too big for any float
def test_any_json_is_a_plan_or_a_plan_error(doc):
    try:
        plan = Plan.from_dict(doc)
    except PlanError as e:
        one_clear_line(e)
        return
    assert Plan.from_dict(json.loads(plan.to_json())) == plan
    try:
        plan.validate(TINY)
    except PlanError as e:
        one_clear_line(e)


@FAST
@given(st.one_of(JSON, mutated(GOOD_PROFILE)))
@example(edited(GOOD_PROFILE, ("kinds", "a", "layer_time_s", "tiny", "c1"), 10**400))  # was OverflowError
@example(edited(GOOD_PROFILE, ("kinds", "a", "memory_bytes"), 10**400))
@example(edited(GOOD_PROFILE, ("kinds", "a"), []))                         # a kind that is a list
@example(edited(GOOD_PROFILE, ("kinds", "a", "layer_time_s"), []))
@example(edited(GOOD_PROFILE, ("kinds", "a", "resources"), [1]))
@example(edited(GOOD_PROFILE, ("kinds", "a", "shard_time_s", "tiny", "fc1"), {"eight": 0.1}))
@example(edited(GOOD_PROFILE, ("default_link",), None))
@example(edited(GOOD_PROFILE, ("devices", 0), True))
@example(edited(GOOD_PROFILE, ("devices", 0, "kind"), ["a"]))               # was read as the kind "['a']"
def test_any_json_is_a_profile_or_a_profile_error(doc):
    try:
        profile = Profile.from_dict(doc)
    except ProfileError as e:
        one_clear_line(e)
        return
    assert Profile.from_dict(json.loads(profile.to_json())) == profile


@SLOWER
@given(mutated(GOOD_PROFILE))
@example(edited(GOOD_PROFILE, ("default_link", "bandwidth_Bps"), 5e-324))   # was a prediction of 0 IPS
@example(edited(GOOD_PROFILE, ("kinds", "b", "layer_time_s", "tiny", "c1"), 1.7e308))  # sums overflowed
def test_a_profile_that_reads_plans_or_says_why(doc):
    """Whatever a profile file says, planning with it gives finite predictions or an mcdask error."""
    try:
        profile = Profile.from_dict(doc)
        results = plan_all(TINY, profile)
    except McdaskError as e:
        one_clear_line(e)
        return
    for r in results:
        if r.feasible:
            assert math.isfinite(r.cost.ips) and r.cost.ips > 0 and math.isfinite(r.cost.latency_s), r


def test_plan_files_with_any_text_say_what_is_wrong(tmp_path):
    """The file form: text that is no plan is one PlanError naming the file."""
    @FAST
    @given(st.text(max_size=40) | JSON.map(json.dumps))
    def check(text):
        path = tmp_path / "p.json"
        path.write_text(text)
        try:
            Plan.load(path)
        except PlanError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
    check()


# ---- valid plans round-trip ----------------------------------------------------------------

@FAST
@given(st.integers(0, 2**32 - 1), st.sampled_from(["alexnet", "vgg16", "action", "tiny"]))
def test_a_valid_plan_round_trips_through_its_file_form(seed, name):
    import workloads

    w = TINY if name == "tiny" else workloads.get(name)
    plan = random_plan(w, np.random.default_rng(seed)).validate(w)
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again == plan and again.id == plan.id and again.to_dict() == plan.to_dict()


# ---- the planner on random valid profiles --------------------------------------------------

@st.composite
def kinds(draw, name: str) -> DeviceKind:
    times = {l: draw(st.floats(1e-4, 2.0)) for l in TIMES}
    dense = draw(st.booleans())
    return DeviceKind(kind=name, memory_bytes=draw(st.integers(20_000, 10**6)),
                      baseline_bytes=draw(st.integers(0, 10_000)), layer_time_s={"tiny": times},
                      weight_memory_factor=draw(st.floats(0.5, 4.0)),
                      dense_fixed_s=draw(st.floats(0, 0.01)) if dense else None,
                      dense_s_per_weight_byte=draw(st.floats(1e-10, 1e-6)) if dense else None,
                      task_overhead_s=draw(st.floats(0, 0.01)))


@st.composite
def profiles(draw) -> Profile:
    ks = {k.kind: k for k in draw(st.lists(st.sampled_from("ab"), min_size=1, max_size=2, unique=True)
                                  .flatmap(lambda names: st.tuples(*(kinds(n) for n in names))))}
    devices = tuple(Device(f"d{i}", draw(st.sampled_from(sorted(ks)))) for i in range(draw(st.integers(1, 4))))
    link = LinkModel(draw(st.floats(0, 0.05)), draw(st.floats(1e4, 1e9)))
    return Profile(ks, devices, link, name="random")


@SLOWER
@given(profiles(), st.sampled_from(["optimal", "paper"]))
def test_the_planners_plans_are_feasible_and_exact(profile, strategy):
    from mcdask.planning.costmodel import evaluate

    for r in plan_all(TINY, profile, strategy=strategy):
        if not r.feasible:
            assert r.reason and "\n" not in r.reason
            continue
        plan = r.plan.validate(TINY)
        assert len(plan.devices) == r.devices
        covered = [i for st_ in plan.stages for i in range(st_.start, st_.end)]
        assert covered == list(range(len(TINY.layers)))
        for stage in plan.stages:
            if stage.split:
                units = [u for sh in stage.shards for u in range(*sh.units)]
                assert units == list(range(TINY.layers[stage.end - 1].units))
        cost = evaluate(TINY, plan, profile)
        assert cost.fits, cost.over_memory
        assert math.isfinite(cost.ips) and cost.ips > 0
        assert math.isfinite(cost.latency_s) and cost.latency_s > 0
        # a plan keeps its prediction to 6 decimal places (Cost.summary): half a millionth either way
        assert math.isclose(plan.predicted["ips"], cost.ips, rel_tol=1e-5, abs_tol=5e-7)
        assert math.isclose(plan.predicted["latency_s"], cost.latency_s, rel_tol=1e-5, abs_tol=5e-7)


# ---- frames ----------------------------------------------------------------------------------

_two = Builder({"frame": (4, 4, 3), "flow": (4, 4, 2)})
_two.dense("fc", _two.flatten("flat", "frame"), 2)
TWO_INPUTS = _two.workload("two", 2, "two inputs")
DTYPES = [np.uint8, np.float32, np.float64, np.float16, np.int32, np.bool_, np.complex64]


@st.composite
def arrays(draw, shape: tuple[int, ...]):
    """An array of the right shape (with or without the batch axis) or of any small shape, of
    any of several dtypes, with any values (NaN and infinities included)."""
    shapes = st.sampled_from([shape, (1,) + shape, (2,) + shape]) | hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)
    return draw(hnp.arrays(st.sampled_from(DTYPES), shapes))


@FAST
@given(st.dictionaries(st.sampled_from(["frame", "flow", "extra"]), arrays((4, 4, 3)), max_size=3)
       | arrays((4, 4, 3)))
@example({"frame": np.full((4, 4, 3), 1e300), "flow": np.zeros((4, 4, 2), np.float32)})  # was inf as float32
@example({"frame": np.zeros((4, 4, 3), np.uint8), "flow": np.zeros((4, 4, 2)), 1: 0, "x": 0})  # mixed names
def test_a_frame_validates_or_its_error_names_the_input(inputs):
    try:
        out = validate(TWO_INPUTS, inputs)
    except FrameError as e:
        given_names = set(inputs) if isinstance(inputs, dict) else {"frame"}
        assert any(repr(n) in str(e) for n in given_names | {"flow"}), str(e)
        assert "\n" not in str(e)
        return
    assert set(out) == set(TWO_INPUTS.inputs)
    for name, x in out.items():
        assert x.shape == (1,) + TWO_INPUTS.inputs[name]
        assert x.dtype in (np.uint8, np.float32) and np.isfinite(x.astype(np.float64)).all()


@FAST
@given(arrays((8, 8, 3)), st.integers(0, 10**6))
def test_a_source_frame_becomes_an_input_or_an_error_record(raw, index):
    item = Feeder(TINY).item(index, raw)
    if item.error is not None:
        assert item.error.startswith(f"frame {index}: ") and item.inputs is None
        return
    assert item.inputs is not None
    validate(TINY, item.inputs)


# ---- a dense layer split any way merges back ----------------------------------------------

def _dense_out(x, kernel, bias, activation: str) -> np.ndarray:
    z = x @ kernel + bias
    return np.maximum(z, 0) if activation == "relu" else softmax(z) if activation == "softmax" else z


@st.composite
def splits(draw):
    units = draw(st.integers(2, 40))
    k = draw(st.integers(2, min(units, 6)))
    edges = sorted(draw(st.lists(st.integers(1, units - 1), min_size=k - 1, max_size=k - 1, unique=True)))
    return units, [0, *edges, units]


@FAST
@given(splits(), st.integers(1, 12), st.sampled_from(["relu", "linear", "softmax"]), st.integers(0, 2**31),
       st.integers(0, 2**31))
def test_any_split_of_a_dense_layer_merges_to_the_unsplit_result(split, fan_in, activation, seed, xseed):
    units, edges = split
    b = Builder({"x": (fan_in,)})
    b.dense("fc", "x", units, activation=activation)
    layer = b.workload("d", units, "one dense layer").layers[0]
    x = np.random.default_rng(xseed).standard_normal((1, fan_in)).astype(np.float32)
    source = WeightsSource(seed)
    whole = _dense_out(x, *layer_weights(layer, source), activation)
    shard_act = activation if activation != "softmax" else "linear"   # softmax runs at the merge
    parts = [_dense_out(x, *layer_weights(layer, source, (a, e)), shard_act) for a, e in zip(edges, edges[1:])]
    np.testing.assert_allclose(merge(layer, parts), whole, rtol=1e-5, atol=1e-6)
