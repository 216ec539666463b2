"""Plans: invariants checked when read, JSON round trip, clear errors."""

import json

import pytest

import workloads
from mcdask.errors import PlanError
from mcdask.model.plan import Plan, Shard, Stage, single_device

W = workloads.get("alexnet")


def plan(*stages, devices=None):
    devs = devices or tuple(sorted({d for st in stages for sh in st.shards for d in sh.devices}))
    return Plan("alexnet", devs, tuple(stages))


def test_round_trip(tmp_path):
    p = plan(Stage(0, 9, (Shard(None, ("a", "b")),)),
             Stage(9, 12, (Shard((0, 100), ("c",)), Shard((100, 1000), ("d",)))))
    p.validate(W)
    p.save(tmp_path / "p.json")
    q = Plan.load(tmp_path / "p.json")
    assert q == p and q.id == p.id
    assert json.loads((tmp_path / "p.json").read_text())["schema"] == "mcdask.plan/1"


@pytest.mark.parametrize("stages,message", [
    ((Stage(0, 5, (Shard(None, ("a",)),)), Stage(6, 12, (Shard(None, ("b",)),))),
     r"stage 1 \(layers \[6, 12\)\): stages must be contiguous and non-empty; expected start 5"),
    ((Stage(0, 9, (Shard(None, ("a",)),)),), r"stages cover layers \[0, 9\) of 12"),
    ((Stage(0, 8, (Shard((0, 1), ("a",)), Shard((1, 2), ("b",)))), Stage(8, 12, (Shard(None, ("c",)),))),
     "last layer 'pool5' is a pool layer; only dense layers split"),
    ((Stage(0, 10, (Shard((0, 100), ("a",)), Shard((100, 4000), ("b",)))), Stage(10, 12, (Shard(None, ("c",)),))),
     r"shard units end at 4000, layer 'fc1' has 4096"),
    ((Stage(0, 10, (Shard((0, 100), ("a",)), Shard((90, 4096), ("b",)))), Stage(10, 12, (Shard(None, ("c",)),))),
     r"must tile \[0, 4096\) in order"),
    ((Stage(0, 12, (Shard(None, ("a", "a")),)),), "lists a device twice"),
])
def test_invalid_plans_are_refused_with_the_reason(stages, message):
    with pytest.raises(PlanError, match=message):
        plan(*stages).validate(W)


def test_unknown_and_idle_devices():
    with pytest.raises(PlanError, match=r"devices \['z'\] are not in the plan's devices"):
        plan(Stage(0, 12, (Shard(None, ("z",)),)), devices=("a",)).validate(W)
    with pytest.raises(PlanError, match=r"devices \['b'\] hold no task"):
        plan(Stage(0, 12, (Shard(None, ("a",)),)), devices=("a", "b")).validate(W)


def test_windowed_layer_must_start_a_stage():
    a = workloads.get("action")
    bad = Plan("action", ("a",), (Stage(0, 14, (Shard(None, ("a",)),)),))
    with pytest.raises(PlanError, match="windowed layer 'pyramid' must start a stage"):
        bad.validate(a)
    assert len(single_device(a).validate(a).stages) == 2


def test_wrong_schema_and_workload(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(PlanError, match="not a plan of schema 'mcdask.plan/1'"):
        Plan.load(tmp_path / "p.json")
    with pytest.raises(PlanError, match="plan is for workload 'alexnet', not 'vgg16'"):
        single_device(W).validate(workloads.get("vgg16"))
