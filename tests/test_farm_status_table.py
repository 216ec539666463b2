"""`mcdask farm status` lays its devices out as a rich table: one line a device, columns
aligned, nothing wrapped when the output goes to a pipe or a file."""

from __future__ import annotations

from cluster.cli import _print_status


def device(name: str, ip: str, state: str = "running", link_up: bool = True) -> dict:
    return {"name": name, "ip": ip, "state": state, "link_up": link_up, "cpu_share": 0.0183,
            "cpu_quota_now": {"quota_us": 1000, "period_us": 54644}, "device_share": 0.1183,
            "device_quota_now": {"quota_us": 11830, "period_us": 100000}, "target_alexnet_s": 0.52,
            "verified_alexnet_s": 0.5312, "memory_limit": "1GiB", "link_mbit": 62.24, "rtt_ms": 8.83}


STATUS = {"phase": "up", "mode": "netns", "scheduler": "tcp://10.77.0.1:8786", "time_scale": 1.0,
          "calibration": {"host_time_s": 0.0095, "command": "python -m mcdask.runtime.timing"},
          "devices": [device("pi3-00", "10.77.0.10"), device("tx2-cpu-11", "10.77.0.121", "frozen", False)],
          "network_shaped": True, "cpu_capped": True, "cpu_cap_applied": "19:40:00", "registered": ["pi3-00"]}


def test_farm_status_is_one_aligned_row_per_device(capsys):
    _print_status(STATUS)
    lines = capsys.readouterr().out.splitlines()
    (header,) = [line for line in lines if line.startswith("device")]
    rows = [line for line in lines if line.startswith(("pi3-00", "tx2-cpu-11"))]
    assert len(rows) == 2
    for title in ("ip", "state", "compute share", "AlexNet s target/verified", "memory", "Mbit/s", "RTT ms"):
        assert title in header
    column = header.index("ip")
    assert [row[column:].split()[0] for row in rows] == ["10.77.0.10", "10.77.0.121"]
    state = header.index("state")
    assert [row[state:].split()[0] for row in rows] == ["running", "frozen+cut"]
    rtt = header.index("RTT ms")
    assert all(row[rtt:].strip() == "8.83" for row in rows)
    assert "registered with the scheduler: pi3-00" in lines
