"""Bad plan and profile files: each gets one error naming the file and what is wrong, and the
CLI says it in one line without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcdask.errors import PlanError, ProfileError
from mcdask.model.kinds import homogeneous
from mcdask.model.plan import Plan
from mcdask.model.profile import Profile
from mcdask.plans import load as packaged

BIN = Path(sys.executable).parent
GOOD_PLAN = packaged("alexnet-5dev").to_dict()
GOOD_PROFILE = homogeneous("pi3", 2).to_dict()


def write(tmp_path, text: str, name: str = "f.json") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def edited(doc: dict, path: list, value) -> str:
    d = json.loads(json.dumps(doc))
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return json.dumps(d)


PLAN_CASES = {
    "a JSON list": ("[1, 2]", "holds one JSON object, got a JSON list"),
    "a JSON string": ('"plan"', "holds one JSON object, got a JSON str"),
    "not JSON": ("{plan", "not JSON"),
    "NaN": ('{"schema": NaN}', "NaN is not a number JSON allows"),
    "integer device names": (edited(GOOD_PLAN, ["devices"], [1, 2, 3, 4]), "a device name must be a non-empty string"),
    "float layer index": (edited(GOOD_PLAN, ["stages", 0, "layers"], [0, 9.0]), "a stage's end layer must be a whole"),
    "missing stages": (json.dumps({k: v for k, v in GOOD_PLAN.items() if k != "stages"}), "missing key 'stages'"),
    "a stage that is a list": (edited(GOOD_PLAN, ["stages", 0], [0, 9]), "a stage must be a JSON object, got a list"),
    "one layer bound": (edited(GOOD_PLAN, ["stages", 0, "layers"], [0]),
                        "a stage's layers must be [start, end], got [0]"),
    "a layer bound too big for a float": (edited(GOOD_PLAN, ["stages", 0, "layers"], [0, 10**400]),
                                          "a stage's end layer must be a whole number >= 0 and <= "),
}


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_bad_plan_files_say_what_is_wrong(tmp_path, case):
    text, says = PLAN_CASES[case]
    path = write(tmp_path, text)
    with pytest.raises(PlanError, match=str(path).replace(".", r"\.")) as e:
        Plan.load(path)
    assert says in str(e.value)


def test_plan_paths_that_are_not_files(tmp_path):
    with pytest.raises(PlanError, match="no such plan file"):
        Plan.load(tmp_path / "missing.json")
    with pytest.raises(PlanError, match="is a folder"):
        Plan.load(tmp_path)


PROFILE_CASES = {
    "a JSON list": ("[]", "holds one JSON object, got a JSON list"),
    "host cores that are not a number": (edited(GOOD_PROFILE, ["host_cores"], {"h": "many"}),
                                         "host_cores of h must be a finite number"),
    "NaN layer time": (json.dumps(GOOD_PROFILE).replace('"conv1": 0.', '"conv1": NaN, "x": 0.', 1),
                       "NaN is not a number JSON allows"),
    "negative layer time": (edited(GOOD_PROFILE, ["kinds", "pi3", "layer_time_s", "alexnet", "conv1"], -0.5),
                            "alexnet layer conv1 time must be a finite number >= 0 and <= 1e+15, got -0.5"),
    "a huge time (inf)": (json.dumps(GOOD_PROFILE).replace('"conv1": 0.', '"conv1": 1e999, "x": 0.', 1),
                          "must be a finite number"),
    "a time too big for a float": (edited(GOOD_PROFILE, ["kinds", "pi3", "layer_time_s", "alexnet", "conv1"], 10**400),
                                   "alexnet layer conv1 time must be a finite number >= 0 and <= 1e+15"),
    "a kind that is a list": (edited(GOOD_PROFILE, ["kinds", "pi3"], []), "a device kind must be a JSON object"),
    "layer times that are a list": (edited(GOOD_PROFILE, ["kinds", "pi3", "layer_time_s"], []),
                                    "kind pi3: layer_time_s must be a JSON object, got a list"),
    "a bandwidth below 1 B/s": (edited(GOOD_PROFILE, ["default_link", "bandwidth_Bps"], 5e-324),
                                "a link's bandwidth_Bps must be a finite number >= 1"),
    "a device's kind that is a list": (edited(GOOD_PROFILE, ["devices", 0, "kind"], ["pi3"]),
                                       "a device's kind must be a non-empty string, got ['pi3']"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_bad_profile_files_say_what_is_wrong(tmp_path, case):
    text, says = PROFILE_CASES[case]
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as e:
        Profile.load(path)
    assert str(path) in str(e.value) and says in str(e.value), str(e.value)


def test_the_cli_says_it_in_one_line(tmp_path):
    path = write(tmp_path, edited(GOOD_PLAN, ["devices"], [1, 2, 3, 4]))
    r = subprocess.run([str(BIN / "mcdask"), "plan", "--evaluate", str(path), "--profile", "pi3"],
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and "a device name must be a non-empty string, got 1" in lines[0]


def test_a_plan_for_a_workload_mcdask_does_not_know(tmp_path):
    path = write(tmp_path, edited(GOOD_PLAN, ["workload"], "resnet"))
    r = subprocess.run([str(BIN / "mcdask"), "plan", "--evaluate", str(path), "--profile", "pi3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"Error: {path}: unknown workload 'resnet'; choose one of alexnet, vgg16, action"], r.stderr


def test_a_plan_that_crossed_the_scheduler_still_reads():
    """The deployment's plan reaches the workers through msgpack, with tuples for lists."""
    def tuples(x):
        if isinstance(x, list):
            return tuple(tuples(v) for v in x)
        if isinstance(x, dict):
            return {k: tuples(v) for k, v in x.items()}
        return x

    plan = packaged("alexnet-5dev")
    assert Plan.from_dict(tuples(plan.to_dict())) == plan
