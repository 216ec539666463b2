"""No TensorFlow, absl, oneDNN or OpenCV chatter at the default level; ``-v`` lets it through."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

#: the libraries' banners and log prefixes (absl's C++ ``I0000 00:00:...`` lines included)
CHATTER = re.compile(r"tensorflow|absl|onednn|cpu_feature_guard|rebuild TensorFlow|^[IWE]\d{4} ", re.I | re.M)

#: imports TensorFlow the way a worker does, then retraces a function (a Python-side warning)
RETRACE = """
from mcdask.runtime.quiet import quiet
quiet()
import tensorflow as tf
f = tf.function(lambda x: x * 2)
for n in range(1, 9):
    f(tf.ones((n,)))
print("done")
"""


def _env(**extra: str) -> dict[str, str]:
    """This environment without the levels the test suite sets for itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MCDASK_VERBOSE")}
    return {**env, **extra}


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_is_quiet_unless_verbose(verbose):
    env = _env(MCDASK_VERBOSE="1") if verbose else _env()
    run = subprocess.run([sys.executable, "-c", RETRACE], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "done"
    if verbose:
        assert "triggered tf.function retracing" in run.stderr
    else:
        assert not CHATTER.search(run.stderr), run.stderr
