import os
import shutil
import subprocess

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
