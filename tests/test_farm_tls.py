"""``mcdask farm up --tls``: the emulated farm under mutual TLS (root, network namespaces)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import has_root_netns

ok, why = has_root_netns()
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(not ok, reason=why)]
BIN = Path(sys.executable).parent


def mcdask(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mcdask.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def last_json(r):
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_tls_farm_streams_equal_answers_and_admits_only_named_devices():
    st = last_json(mcdask("farm", "up", "--devices", "2", "--time-scale", "8", "--no-verify", "--host-time-s",
                          "0.01", "--tls", "--json"))
    try:
        assert st["scheduler"].startswith("tls://")
        tls = last_json(mcdask("farm", "status", "--json"))["tls"]
        assert set(tls) == {"ca_file", "cert", "key"} and all(Path(p).is_file() for p in tls.values())
        client = [a for k, v in tls.items() for a in (f"--tls-{k.replace('_', '-')}", v)]
        r = mcdask("run", "--scheduler", st["scheduler"], "--workload", "alexnet", "--frames", "10", "--check",
                   "--json", *client)
        summary = last_json(r)
        assert summary["equal"] is True and summary["checked"] == 10 and summary["devices"] == 2

        # the certificate of pi3-00, claiming another name, from the host: refused
        folder = Path(tls["ca_file"]).parent
        impostor = subprocess.run([str(BIN / "dask"), "worker", st["scheduler"], "--name", "pi3-09", "--no-nanny",
                                   "--no-dashboard", "--tls-ca-file", tls["ca_file"], "--tls-cert",
                                   str(folder / "pi3-00.crt"), "--tls-key", str(folder / "pi3-00.key")],
                                  capture_output=True, text=True, timeout=120)
        assert impostor.returncode != 0
        assert "refused by mcdask: worker 'pi3-09' presents the certificate of device 'pi3-00'" in impostor.stderr

        # a device that joins gets a certificate of its own
        added = last_json(mcdask("farm", "add", "--devices", "1", "--json"))["devices"]
        assert [d["name"] for d in added] == ["pi3-02"] and (folder / "pi3-02.crt").is_file()
        assert last_json(mcdask("farm", "status", "--check", "--json"))["registered"] == ["pi3-00", "pi3-01",
                                                                                          "pi3-02"]
    finally:
        r = mcdask("farm", "down")
        assert r.returncode == 0, r.stderr
    assert not Path(tls["ca_file"]).exists()   # the farm's CA goes with it
