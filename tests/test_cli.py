"""The `mcdask` command as a user runs it: machine-readable output is part of the contract."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_quiet import CHATTER
from test_quiet import _env as quiet_env

import workloads
from mcdask.errors import SourceError
from mcdask.streaming.sources import BadFrame, Feeder, open_source

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quiet_demo_json_last_line():
    """`-q demo --json`: no note, and the last stdout line is the summary as JSON."""
    r = subprocess.run([str(BIN / "mcdask"), "-q", "demo", "--devices", "3", "--frames", "10", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "local cluster" not in r.stdout + r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("workload", "devices", "frames", "ips", "latency_p50_s", "latency_p99_s", "max_abs_diff", "plan"):
        assert key in summary, key
    assert summary["workload"] == "alexnet" and summary["devices"] == 3 and summary["frames"] == 10
    assert summary["equal"] is True and summary["max_abs_diff"] <= 1e-5 * summary["output_scale"]
    assert summary["latency_p50_s"] <= summary["latency_p99_s"]


@pytest.mark.slow
def test_make_demo_replicates_and_splits_with_no_library_chatter():
    """`make demo` (its devices' memory as the Makefile gives it; the default backend): the plan
    replicates AlexNet's convolutions and splits fc1, says so in words, and passes its check; no
    TensorFlow, absl or oneDNN line on the way (with this environment's own log levels taken out)."""
    memory = re.search(r"mcdask demo --device-memory (\S+)", (ROOT / "Makefile").read_text())
    assert memory, "the Makefile's demo target names its devices' memory"
    r = subprocess.run([str(BIN / "mcdask"), "demo", "--device-memory", memory[1], "--frames", "8"],
                       capture_output=True, text=True, env=quiet_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "conv1..pool5 replicated on 2 devices" in r.stdout and "8 of 8 frames classified" in r.stdout
    assert "fc1 split by output units across 2 devices" in r.stdout and "EQUAL" in r.stdout
    for line in (r.stdout + r.stderr).splitlines():
        assert not CHATTER.search(line), line


def test_help_lists_commands_without_importing_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from mcdask.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.output); "
            "print('TF' if 'tensorflow' in sys.modules else 'light')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    for cmd in ("demo", "run", "plan", "profile", "farm", "bench"):
        assert cmd in r.stdout
    assert r.stdout.strip().endswith("light")


def test_unusable_sources_say_what_is_wrong(tmp_path):
    w = workloads.get("alexnet")
    with pytest.raises(SourceError, match="camera source must be camera:INDEX, got 'camera:x'"):
        open_source("camera:x", w)
    with pytest.raises(SourceError, match="cannot open camera 97"):
        next(open_source("camera:97", w))
    (tmp_path / "one.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match="is one image; pass the folder"):
        open_source(str(tmp_path / "one.png"), w)
    bad = next(open_source(str(tmp_path), w))     # one bad image is one bad frame, not a dead stream
    assert isinstance(bad, BadFrame) and bad.reason == "cannot decode image one.png"
    bad_video = tmp_path / "clip.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="cannot open video"):
        next(open_source(str(bad_video), w))


def test_feeder_reports_non_rgb_frames():
    w = workloads.get("alexnet")
    item = Feeder(w).item(3, [[1, 2], [3, 4]])
    assert item.error and "frame 3: expected an RGB uint8 image" in item.error


def test_a_command_that_cannot_load_says_why(monkeypatch):
    from click.testing import CliRunner

    from mcdask import cli

    monkeypatch.setitem(cli.COMMANDS, "ghost", ("mcdask.no_such_module:cmd", "A command."))
    r = CliRunner().invoke(cli.main, ["ghost"])
    assert r.exit_code != 0
    assert "'ghost' is not available in this installation: No module named 'mcdask.no_such_module'" in r.output


@pytest.mark.parametrize("address, says", [
    ("foo", "--scheduler 'foo' is not a scheduler address"),
    ("tcp://127.0.0.1:1", "no scheduler answers at tcp://127.0.0.1:1"),
    ("tls://127.0.0.1:1", "is a TLS address but no TLS settings are given"),
])
def test_a_scheduler_that_is_not_there_is_one_line(address, says):
    import os
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([str(Path(sys.executable).parent / "mcdask"), "run", "--scheduler", address, "--workload",
                        "alexnet"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert says in lines[0]
