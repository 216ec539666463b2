"""Musical chairs on the emulated farm: kill, freeze and cut the sole holder of a piece, join
two devices to a two-device farm, kill the scheduler, each against a running `mcdask run`
(its own client process), through real TCP on shaped links. What comes out is counted: every
frame once, in order, equal to the unsplit model; the stream stops with exit 3 when the
scheduler dies. Speeds (gaps, recovery) are measured by `python -m bench.faults`, not here.

One farm of 6 pi3 devices at 4x speed for the module (no calibration: these tests are about
faults, not speed). Needs root and network namespaces, like test_farm.py.
"""

from __future__ import annotations

import pytest
from conftest import has_root_netns, nothing_left

ok, why = has_root_netns()
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(not ok, reason=why)]
FRAMES = 240


def test_faults_against_a_running_stream(tmp_path):
    from bench import faults

    result = faults.run(4.0, FRAMES, verify=False, out_dir=tmp_path, log=print)
    assert nothing_left() == {}
    runs = result["scenarios"]
    assert set(runs) == {"kill", "freeze", "cut", "join", "scheduler"}
    for name in ("kill", "freeze", "cut", "join"):
        r = runs[name]
        assert r["exit_code"] == 0, (name, r["stderr_lines"])
        assert r["every_frame_once_in_order"] and r["frames"] == FRAMES, (name, r)
        assert r["statuses"] == {"ok": FRAMES}, (name, r["statuses"], r["errors"], r["events"])
        assert r["equal_to_unsplit"] is True, (name, r)
        assert r["switches"] >= 1, (name, r["events"])
    assert any("lost: it left the scheduler" in e for e in runs["kill"]["events"])
    assert any("frozen or cut off" in e for e in runs["freeze"]["events"])
    assert any("frozen or cut off" in e for e in runs["cut"]["events"])
    assert sum("joined" in e for e in runs["join"]["events"]) == 2
    s = runs["scheduler"]
    assert s["exit_code"] == 3 and s["exited_after_fault_s"] < 35, s
    assert s["every_frame_once_in_order"] and set(s["statuses"]) <= {"ok", "error"}, s
    assert s["stopped"].startswith("lost the scheduler"), s
    assert any("lost the scheduler" in line for line in s["stderr_lines"])
    assert not any("Traceback" in line for line in s["stderr_lines"]), s["stderr_lines"]
