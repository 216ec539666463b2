"""Authenticated devices: certificates (``mcdask certs``), the client's TLS settings, and a TLS
cluster of stock `dask scheduler`/`dask worker` processes where only workers whose certificate
names them get work."""

import json
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import dask.config
import pytest
from stock import BIN, StockCluster

from mcdask.errors import TLSError
from mcdask.security import certs, gate, tls
from mcdask.security.gate import refusal

DEVICES = ("pi3-00", "pi3-01", "pi3-02")


def make_certs(folder: Path, devices=DEVICES) -> Path:
    certs.init_ca(folder)
    certs.issue(folder, "scheduler", "scheduler")
    certs.issue(folder, "client", "client")
    for d in devices:
        certs.issue(folder, d)
    return folder


def context(folder: Path, name: str, server: bool) -> ssl.SSLContext:
    """A context as Dask builds it (``distributed.security.Security``): mutual, no hostnames."""
    from distributed.security import Security

    sec = Security(tls_ca_file=str(folder / "ca.crt"), tls_worker_cert=str(folder / f"{name}.crt"),
                   tls_worker_key=str(folder / f"{name}.key"))
    args = sec.get_listen_args("worker") if server else sec.get_connection_args("worker")
    return args["ssl_context"]


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> dict:
    """A real TLS handshake over a socket pair; the certificate the server side verified."""
    a, b = socket.socketpair()
    seen: dict = {}

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                seen["peercert"] = s.getpeercert()
        except (ssl.SSLError, OSError) as e:
            seen["error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_side=False):
            pass
    except (ssl.SSLError, OSError) as e:
        seen.setdefault("client_error", e)
    t.join(10)
    if "error" in seen:
        raise seen["error"]
    return seen["peercert"]


# ------------------------------------------------------------------------------- certificates

def test_a_device_certificate_names_the_device_and_its_role(tmp_path):
    folder = make_certs(tmp_path)
    peer = handshake(context(folder, "scheduler", server=True), context(folder, "pi3-01", server=False))
    assert certs.identity(peer) == ("pi3-01", "device")
    assert refusal(peer, "pi3-01") is None
    assert refusal(peer, "pi3-02") == "worker 'pi3-02' presents the certificate of device 'pi3-01'"
    client = handshake(context(folder, "scheduler", server=True), context(folder, "client", server=False))
    assert certs.identity(client) == ("client", "client")
    assert "a client certificate" in refusal(client, "client")
    assert "no verified certificate" in refusal(None, "pi3-01")
    assert (folder / "pi3-01.key").stat().st_mode & 0o777 == 0o600
    assert (folder / "ca.key").stat().st_mode & 0o777 == 0o600


def test_another_cas_certificate_or_none_fails_the_handshake(tmp_path):
    ours = make_certs(tmp_path / "ours")
    theirs = make_certs(tmp_path / "theirs")
    with pytest.raises(ssl.SSLError):
        handshake(context(ours, "scheduler", server=True), context(theirs, "pi3-00", server=False))
    no_cert = ssl.create_default_context(cafile=str(ours / "ca.crt"))
    no_cert.check_hostname = False
    with pytest.raises(ssl.SSLError):
        handshake(context(ours, "scheduler", server=True), no_cert)


def test_a_client_certificate_cannot_serve(tmp_path):
    """A client certificate is for connecting only (no server use): it cannot be a device."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = make_certs(tmp_path)
    usage = lambda name: x509.load_pem_x509_certificate((folder / f"{name}.crt").read_bytes()).extensions \
        .get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH not in usage("client")
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage("pi3-00"))


def test_certificate_errors_are_one_clear_line(tmp_path):
    with pytest.raises(TLSError, match=r"no CA in .*run `mcdask certs init --dir"):
        certs.issue(tmp_path, "pi3-00")
    certs.init_ca(tmp_path)
    with pytest.raises(TLSError, match="already holds a CA"):
        certs.init_ca(tmp_path)
    with pytest.raises(TLSError, match="certificate name 'pi 3'"):
        certs.issue(tmp_path, "pi 3")
    with pytest.raises(TLSError, match="role 'admin'"):
        certs.issue(tmp_path, "pi3-00", "admin")  # type: ignore[arg-type]


def test_mcdask_certs_command(tmp_path):
    d = tmp_path / "certs"
    run = lambda *a: subprocess.run([str(BIN / "mcdask"), "certs", *a, "--dir", str(d)], capture_output=True,
                                    text=True, timeout=60)
    r = run("init")
    assert r.returncode == 0 and "CA certificate" in r.stdout, r.stderr
    r = run("issue", "pi3-00")
    assert r.returncode == 0, r.stderr
    assert f"--tls-cert {d / 'pi3-00.crt'} --tls-key {d / 'pi3-00.key'}" in r.stdout
    r = run("init")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "already holds a CA" in r.stderr


# ------------------------------------------------------------------------------- client settings

def test_client_settings_go_together_and_fall_back_to_the_config(tmp_path):
    folder = make_certs(tmp_path)
    ca, cert, key = (str(folder / f) for f in ("ca.crt", "client.crt", "client.key"))
    with dask.config.set({"mcdask.tls": {"ca-file": None, "cert": None, "key": None}}):
        assert tls.resolve() is None
        with pytest.raises(TLSError, match=r"go together; missing --tls-key \(mcdask.tls.key\)"):
            tls.resolve(ca, cert)
        with pytest.raises(TLSError, match="--tls-ca-file .*client.key: not a readable CA certificate"):
            tls.resolve(key, cert, key)
    with dask.config.set({"mcdask.tls": {"ca-file": ca, "cert": cert, "key": key}}):
        files = tls.resolve()
    assert files == tls.TLSFiles(ca, cert, key)
    assert files.dask_config()["distributed.comm.tls.client.cert"] == cert


@pytest.mark.parametrize("args, says", [
    ([], "is a TLS address but no TLS settings are given"),
    (["--tls-ca-file", "{d}/ca.crt", "--tls-cert", "{d}/client.crt", "--tls-key", "{d}/client.key",
      "--scheduler", "tcp://127.0.0.1:9"], "is not a TLS address; use tls://HOST:PORT"),
])
@pytest.mark.parametrize("command", [["status"], ["run", "--workload", "alexnet"]])
def test_a_scheduler_address_that_does_not_fit_the_settings_is_one_line(tmp_path, command, args, says):
    folder = make_certs(tmp_path)
    argv = [a.format(d=folder) for a in args]
    if "--scheduler" not in argv:
        argv += ["--scheduler", "tls://127.0.0.1:9"]
    t0 = time.monotonic()
    r = subprocess.run([str(BIN / "mcdask"), *command, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------------------- a TLS cluster

def plan_tags(names) -> dict[str, float]:
    """Every resource tag of the plan ``mcdask run`` deploys on ``names``: what an impostor
    declares to attract the stream's tasks."""
    import workloads
    from mcdask.commands import plan_book
    from mcdask.runtime.plugin import resource_tag

    plan = plan_book(workloads.get("alexnet"), None).plan_for(tuple(names))
    return {resource_tag(plan.id, si, hi): 100 for si, st in enumerate(plan.stages) for hi in range(len(st.shards))}


def wait_exit(p: subprocess.Popen, timeout_s: float) -> int:
    try:
        return p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"process {p.args[:4]} still runs after {timeout_s} s") from None


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("tls-cluster")
    folder = make_certs(cwd / "certs", DEVICES + ("pi3-03",))
    make_certs(cwd / "other-ca", ("pi3-05",))
    cluster = StockCluster(cwd, certs=folder)
    cluster.start_scheduler()
    try:
        for name in DEVICES:
            cluster.start_worker(name)
        cluster.wait_for(set(DEVICES))
        yield cluster
    finally:
        assert not cluster.close(), "processes left behind"


def mcdask_tls(cluster: StockCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mcdask"), *args, "--scheduler", cluster.address,
                           *cluster.tls_args("client")], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_only_workers_whose_certificate_names_them_get_work(tls_cluster, tmp_path):
    """A worker with a valid device certificate that registers under another device's name,
    declaring every resource tag of the plan, is removed before the deployment and gets no
    task; one that tries to join later is refused; the stream equals the unsplit model."""
    cluster = tls_cluster
    tags = ",".join(f"{k}={v}" for k, v in plan_tags(DEVICES).items())
    impostor = cluster.start_worker("pi3-04", "--resources", tags, cert="pi3-03")
    cluster.wait_for({"pi3-04"})   # a stock scheduler, no gate yet: it registered
    with cluster.client() as c:
        c.get_task_stream()         # start recording every task from here
        t0 = time.time()
        addresses = {str(w["name"]): a for a, w in c.scheduler_info(n_workers=-1)["workers"].items()}

    r = mcdask_tls(cluster, "run", "--workload", "alexnet", "--frames", "20", "--check", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["equal"] is True and summary["checked"] == 20
    assert sorted(summary["binding"].values()) == list(DEVICES)
    assert wait_exit(impostor, 60) is not None   # the scheduler closed it

    late = cluster.start_worker("pi3-06", "--resources", tags, cert="pi3-03")
    assert wait_exit(late, 120) != 0             # refused at registration
    with cluster.client() as c:
        tasks = c.get_task_stream(start=t0)
        refused = c.run_on_scheduler(gate.refused)
        there = sorted(str(w["name"]) for w in c.scheduler_info(n_workers=-1)["workers"].values())
    per_worker: dict[str, int] = {}
    for t in tasks:
        per_worker[t["worker"]] = per_worker.get(t["worker"], 0) + 1
    assert per_worker.get(addresses["pi3-04"], 0) == 0
    assert set(per_worker) <= {addresses[d] for d in DEVICES} and sum(per_worker.values()) >= 20
    assert there == list(DEVICES)
    assert [(x["worker"], x["reason"]) for x in refused] == [
        ("pi3-04", "worker 'pi3-04' presents the certificate of device 'pi3-03'"),
        ("pi3-06", "worker 'pi3-06' presents the certificate of device 'pi3-03'")]


@pytest.mark.slow
def test_a_worker_without_a_certificate_or_with_another_cas_cannot_join(tls_cluster):
    """Plain TCP to the TLS port, and a certificate of another CA (trusting ours): both
    fail the handshake and exit; neither is ever registered."""
    cluster = tls_cluster
    plain = cluster._spawn("pi3-07", [str(BIN / "dask"), "worker", cluster.address.replace("tls://", "tcp://"),
                                      "--name", "pi3-07", "--no-nanny", "--no-dashboard", "--death-timeout", "15"])
    theirs = cluster.cwd / "other-ca"
    other = cluster.start_worker("pi3-05", "--death-timeout", "15", "--tls-ca-file", str(cluster.certs / "ca.crt"),
                                 "--tls-cert", str(theirs / "pi3-05.crt"), "--tls-key", str(theirs / "pi3-05.key"),
                                 cert="")
    assert wait_exit(plain, 120) != 0
    assert wait_exit(other, 120) != 0
    with cluster.client() as c:
        there = {str(w["name"]) for w in c.scheduler_info(n_workers=-1)["workers"].values()}
    assert not {"pi3-05", "pi3-07"} & there
    log = (cluster.cwd / "scheduler.log").read_text()
    assert "TLS handshake failed" in log and "CERTIFICATE_VERIFY_FAILED" in log
