"""How the `mcdask` command ends (run as a user runs it): an error no subcommand expected is one
line and exit status 1, ``--debug`` / ``MCDASK_DEBUG=1`` shows its traceback, click's usage
errors keep status 2 and its messages, a stopped stream is status 3 (``mcdask.errors``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mcdask import cli
from mcdask.errors import EXIT_ERROR, EXIT_STOPPED, EXIT_USAGE, PlanError, StreamStopped

BIN = Path(sys.executable).parent


def mcdask(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "MCDASK_DEBUG"} | (env or {})
    return subprocess.run([str(BIN / "mcdask"), *args], capture_output=True, text=True, timeout=120, env=environ)


def unwritable(tmp_path) -> str:
    return str(tmp_path / "no-such-folder" / "plan.json")


def test_an_unexpected_error_is_one_line_and_status_1(tmp_path):
    r = mcdask("plan", "-w", "alexnet", "-n", "2", "-o", unwritable(tmp_path))
    assert r.returncode == EXIT_ERROR
    assert r.stderr.splitlines() == [f"mcdask: error: {unwritable(tmp_path)}: No such file or directory "
                                     "(--debug shows the traceback)"], r.stderr


@pytest.mark.parametrize("how", ["--debug", "MCDASK_DEBUG=1"])
def test_debug_shows_the_traceback(tmp_path, how):
    args = ("plan", "-w", "alexnet", "-n", "2", "-o", unwritable(tmp_path))
    r = mcdask("--debug", *args) if how == "--debug" else mcdask(*args, env={"MCDASK_DEBUG": "1"})
    assert r.returncode == EXIT_ERROR
    assert r.stderr.startswith("Traceback (most recent call last):") and "mcdask: error" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("FileNotFoundError: [Errno 2] No such file or directory")


def test_mcdask_debug_0_is_off(tmp_path):
    r = mcdask("plan", "-w", "alexnet", "-n", "2", "-o", unwritable(tmp_path), env={"MCDASK_DEBUG": "0"})
    assert r.returncode == EXIT_ERROR and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1


def test_usage_errors_keep_status_2_and_clicks_message():
    r = mcdask("plan", "--no-such-option")
    assert r.returncode == EXIT_USAGE and "Error: No such option '--no-such-option'" in r.stderr
    assert "mcdask: error" not in r.stderr and "Traceback" not in r.stderr


def test_a_plan_to_evaluate_that_is_neither_packaged_nor_a_file_is_a_usage_error(tmp_path):
    r = mcdask("plan", "--evaluate", str(tmp_path / "nope.json"))
    assert r.returncode == EXIT_USAGE and "Traceback" not in r.stderr
    assert f"Invalid value for --evaluate: '{tmp_path / 'nope.json'}' is neither a packaged plan" in r.stderr


def test_a_known_error_keeps_its_message_and_debug_adds_its_cause(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text('{"schema": "mcdask.plan/1", "workload": "alexnet", "devices": [1], "stages": []}')
    r = mcdask("plan", "--evaluate", str(bad), "--profile", "pi3")
    assert r.returncode == EXIT_ERROR and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"Error: {bad}: malformed plan: a device name must be a non-empty string, got 1"]
    r = mcdask("--debug", "plan", "--evaluate", str(bad), "--profile", "pi3")
    assert r.returncode == EXIT_ERROR and r.stderr.startswith("Traceback")
    assert "mcdask.errors.PlanError" in r.stderr and r.stderr.strip().endswith("non-empty string, got 1")


@pytest.mark.parametrize("error, status, line", [
    (StreamStopped("the scheduler is gone"), EXIT_STOPPED, "mcdask: error: the scheduler is gone"),
    (PlanError("plan has no stages"), EXIT_ERROR, "mcdask: error: plan has no stages"),
    (KeyError("conv1"), EXIT_ERROR, "mcdask: error: KeyError: 'conv1'"),
    (RuntimeError("two\nlines"), EXIT_ERROR, "mcdask: error: RuntimeError: two lines"),
], ids=["stream stopped", "an mcdask error", "a KeyError", "two lines"])
def test_each_error_gets_its_status(monkeypatch, error, status, line):
    @click.command()
    def boom():
        raise error

    monkeypatch.setattr(sys.modules[__name__], "boom", boom, raising=False)
    monkeypatch.setitem(cli.COMMANDS, "boom", (f"{__name__}:boom", "Fails."))
    r = CliRunner().invoke(cli.main, ["boom"])
    assert r.exit_code == status
    assert r.output.splitlines() == [f"{line} (--debug shows the traceback)"]


@pytest.mark.parametrize("command", ["run", "demo", "status", "profile", "plan", "bench", "farm", "certs"])
def test_every_commands_help_is_status_0(command):
    r = mcdask(command, "--help")
    assert r.returncode == 0 and r.stdout.startswith(f"Usage: mcdask {command}"), (r.returncode, r.stderr[-500:])


@pytest.mark.slow
def test_the_scheduler_defaults_to_dasks_setting_and_is_named_when_missing():
    r = mcdask("status", env={"DASK_SCHEDULER_ADDRESS": ""})
    assert r.returncode == EXIT_USAGE and "no scheduler: give --scheduler" in r.stderr
    r = mcdask("status", env={"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:9"})   # nothing listens on port 9
    assert r.returncode == EXIT_ERROR and "127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr
