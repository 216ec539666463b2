"""Faults and membership changes on a running emulated farm, checked against the system and
the scheduler (not against the farm's own bookkeeping).

One farm of 3 pi3 devices at 4x speed for the whole module (no verification, a given host
AlexNet time: these tests are about faults, not speed). The tests run in file order and each
leaves the farm as the next expects: pi3-00 is frozen and thawed, pi3-01 cut and healed,
pi3-02 killed and removed, pi3-03/pi3-04 added, pi3-03 removed, and `farm down` takes the
rest, frozen and cut, at the end. Needs root and network namespaces, like test_farm.py.
"""

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import has_root_netns, nothing_left
from test_farm import last_json, mcdask

ok, why = has_root_netns()
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(not ok, reason=why)]
SCALE = 4
FREEZER = Path("/sys/fs/cgroup/freezer")


def farm(*args):
    return mcdask("farm", *args, timeout=300)


def assert_one_line_error(r, *needles):
    """The command failed with one line on stderr that says each of ``needles``."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_commands_say_when_no_farm_is_up():
    for args in (("kill", "pi3-00"), ("thaw", "pi3-00"), ("add", "--devices", "1"), ("remove", "pi3-00")):
        assert_one_line_error(farm(*args), "no farm is up", "mcdask farm up")


@pytest.fixture(scope="module")
def farm3():
    st = last_json(farm("up", "--devices", "3", "--time-scale", str(SCALE), "--no-verify", "--host-time-s", "0.02",
                        "--json"))
    yield st
    r = farm("down")
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def client(farm3):
    from distributed import Client

    with Client(farm3["scheduler"], timeout="30s", set_as_default=False) as c:
        yield c


def workers(client) -> dict[str, dict]:
    """What the scheduler lists now, by worker name."""
    return {w["name"]: {**w, "address": a} for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def device(name) -> dict:
    return next(d for d in last_json(farm("status", "--json"))["devices"] if d["name"] == name)


def cpu_seconds(pid) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def cgroups_of(pid) -> dict[str, str]:
    """``{controller: cgroup path}`` of a process (cgroup v1)."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        out.update({c: path for c in controllers.split(",") if c})
    return out


def wait_for(what, done, timeout_s):
    t0 = time.monotonic()
    while not done():
        assert time.monotonic() - t0 < timeout_s, f"waited {timeout_s} s for {what}"
        time.sleep(0.1)
    return time.monotonic() - t0


def assert_gone(pid):
    """The process is gone: dead at once, and reaped by init (as a zombie) soon after."""
    assert (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists()
            else "Z") == "Z"
    wait_for(f"pid {pid} to be reaped", lambda: not Path(f"/proc/{pid}").exists(), 10)


def connects(ip, port, timeout_s=1.0) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout_s)
        return s.connect_ex((ip, port)) == 0


def test_unknown_device_is_one_line_naming_the_known_ones(farm3):
    for action in ("kill", "freeze", "cut", "remove"):
        assert_one_line_error(farm(action, "pi3-99"), "no device 'pi3-99'", "pi3-00, pi3-01, pi3-02")


def test_freeze_stops_every_thread_and_thaw_resumes(farm3, client):
    dev = device("pi3-00")
    pid = dev["pid"]
    d = last_json(farm("freeze", "pi3-00", "--json"))
    assert d["state"] == "frozen" and d["frozen_by"] == "freezer cgroup (v1)"
    assert (FREEZER / "mcdask-farm" / "pi3-00" / "freezer.state").read_text().strip() == "FROZEN"
    assert str(pid) in (FREEZER / "mcdask-farm" / "pi3-00" / "cgroup.procs").read_text().split()
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    assert tasks and all((t / "stat").read_text().rsplit(")", 1)[1].split()[0] in "DT" for t in tasks)
    seen, cpu = workers(client)["pi3-00"]["last_seen"], cpu_seconds(pid)
    time.sleep(3)  # a running worker heartbeats about once a second
    assert workers(client)["pi3-00"]["last_seen"] == seen and cpu_seconds(pid) == cpu
    assert_one_line_error(farm("freeze", "pi3-00"), "already frozen")

    d = last_json(farm("thaw", "pi3-00", "--json"))
    assert d["state"] == "running" and d["frozen_by"] is None
    wait_for("pi3-00's heartbeat after thaw", lambda: workers(client)["pi3-00"]["last_seen"] > seen, 15)
    assert_one_line_error(farm("thaw", "pi3-00"), "it is running, not frozen")


def test_cut_stops_packets_both_ways_and_heal_keeps_the_same_worker(farm3, client):
    dev = device("pi3-01")
    port = int(dev["address"].rsplit(":", 1)[1])
    assert connects(dev["ip"], port)
    t0 = time.monotonic()
    d = last_json(farm("cut", "pi3-01", "--json"))
    assert d["state"] == "cut" and not d["link_up"]
    assert not connects(dev["ip"], port)  # host -> device
    ns_to_host = subprocess.run(["ip", "netns", "exec", dev["netns"], "bash", "-c",
                                 "exec 3<>/dev/tcp/10.77.0.1/8786"], capture_output=True, timeout=30)
    assert ns_to_host.returncode != 0  # device -> host
    assert_one_line_error(farm("cut", "pi3-01"), "already cut")
    time.sleep(max(0.0, 5 - (time.monotonic() - t0)))  # a 5 s cut

    d = last_json(farm("heal", "pi3-01", "--json"))
    assert d["state"] == "running" and d["link_up"]
    assert connects(dev["ip"], port)
    assert workers(client)["pi3-01"]["address"] == dev["address"]  # the same worker, still registered
    assert client.submit(lambda x: x + 1, 1, workers=[dev["address"]], pure=False).result(timeout=60) == 2
    qdisc = subprocess.run(["tc", "qdisc", "show", "dev", dev["taps"][0]], capture_output=True, text=True).stdout
    assert "htb" in qdisc  # the shaping survives the cut
    assert_one_line_error(farm("heal", "pi3-01"), "nothing to heal")


def test_kill_ends_the_worker_and_the_scheduler_drops_it(farm3, client):
    dev = device("pi3-02")
    d = last_json(farm("kill", "pi3-02", "--json"))
    assert d["state"] == "killed"
    assert_gone(dev["pid"])
    wait_for("the scheduler to drop pi3-02", lambda: "pi3-02" not in workers(client), 30)
    assert_one_line_error(farm("kill", "pi3-02"), "killed", "farm remove pi3-02")
    r = farm("remove", "pi3-02", "--json")
    assert last_json(r)["state"] == "removed"
    assert "pi3-02" not in [d["name"] for d in last_json(farm("status", "--json"))["devices"]]


def test_add_joins_capped_devices_in_their_own_namespaces(farm3, client):
    ref = device("pi3-00")
    new = last_json(farm("add", "--devices", "2", "--json"))["devices"]
    # numbering continues after every device the farm ever had (pi3-02 was removed)
    assert [d["name"] for d in new] == ["pi3-03", "pi3-04"]
    listed = workers(client)
    for d in new:
        assert d["state"] == "running"
        assert listed[d["name"]]["address"] == d["address"] and d["address"].startswith(f"tcp://{d['ip']}:")
        netns = subprocess.run(["ip", "netns", "identify", str(d["pid"])], capture_output=True, text=True).stdout
        assert netns.strip() == f"mcd-{d['name']}"
        assert {c: p for c, p in cgroups_of(d["pid"]).items() if p.endswith(f"/mcdask-farm/{d['name']}")}.keys() \
            >= {"cpu", "memory", "freezer"}
        cpu = Path(f"/sys/fs/cgroup/cpu/mcdask-farm/{d['name']}")
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == ref["device_quota_us"]
        assert int((cpu / "compute" / "cpu.cfs_quota_us").read_text()) == ref["cpu_quota_us"]
        assert d["cpu_share"] == ref["cpu_share"] and d["memory_limit_bytes"] == 2**30 - 64 * 2**20
        assert "htb" in subprocess.run(["tc", "qdisc", "show", "dev", d["taps"][0]], capture_output=True,
                                       text=True).stdout


def test_remove_leaves_nothing_of_the_device(farm3, client):
    dev = device("pi3-03")
    d = last_json(farm("remove", "pi3-03", "--json"))
    assert d["state"] == "removed" and "retired" in d["leave"]
    assert "pi3-03" not in workers(client)
    assert_gone(dev["pid"])
    assert "mcd-pi3-03" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not any(f": {tap}:" in links or f": {tap}@" in links for tap in dev["taps"])
    assert subprocess.run(["find", "/sys/fs/cgroup", "-maxdepth", "5", "-name", "pi3-03"],
                          capture_output=True, text=True).stdout == ""
    names = [x["name"] for x in last_json(farm("status", "--json"))["devices"]]
    assert names == ["pi3-00", "pi3-01", "pi3-04"]
    assert_one_line_error(farm("thaw", "pi3-03"), "was removed")


def test_down_removes_frozen_cut_and_added_devices(farm3, client):
    assert last_json(farm("freeze", "pi3-00", "--json"))["state"] == "frozen"
    assert last_json(farm("cut", "pi3-01", "--json"))["state"] == "cut"
    assert_one_line_error(farm("remove", "pi3-00"), "frozen", "farm thaw pi3-00")
    state = json.loads(Path(farm3["state_file"]).read_text())
    assert {p["name"] for p in state["resources"]["pids"] if p["role"] == "linkd"} == {"linkd", "linkd-3"}
    # the module's client goes first: left connected, it would keep reconnecting to an address
    # that no longer exists (where a transparent proxy may answer with HTTP)
    client.close()
    r = farm("down")
    assert r.returncode == 0, r.stderr
    assert nothing_left() == {}
