import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def has_root_netns() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, tc, cgroups)"
    if not shutil.which("ip") or not shutil.which("tc"):
        return False, "needs iproute2 (ip, tc)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, f"ip netns unavailable: {probe.stderr.strip()}"
    return True, ""


def nothing_left():
    """Everything a farm can make, looked up directly (not through the farm's own code)."""
    sh = lambda *a: subprocess.run(a, capture_output=True, text=True).stdout  # noqa: E731
    left = {
        "netns": [l for l in sh("ip", "netns", "list").splitlines() if l.startswith("mcd-")],
        "links": [l for l in sh("ip", "-o", "link", "show").splitlines() if ": mcd" in l],
        "qdiscs": [l for l in sh("tc", "qdisc", "show").splitlines() if " dev mcd" in l],
        "cgroups": sh("find", "/sys/fs/cgroup", "-maxdepth", "5", "-name", "mcdask-farm").split(),
        "processes": [],
    }
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"MCDASK_FARM_MEMBER=" in (p / "environ").read_bytes():
                    left["processes"].append(int(p.name))
            except OSError:
                pass
    return {k: v for k, v in left.items() if v}


@pytest.fixture(scope="module", autouse=True)
def farm_to_itself(request):
    """A farm test module (marked root) has the machine's one farm to itself: it is skipped if
    another farm, or what is left of one, is there, and it must leave nothing behind."""
    if request.node.get_closest_marker("root") is None:
        yield
        return
    left = nothing_left()
    if left:
        pytest.skip(f"another farm (or its leftovers) is on this machine: {left}; run `mcdask farm down`")
    yield
    subprocess.run([sys.executable, "-m", "mcdask.cli", "farm", "down"], capture_output=True, text=True, timeout=300)
    assert nothing_left() == {}
