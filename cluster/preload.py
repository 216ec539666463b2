"""``dask worker --preload cluster.preload``: make a farm device ready before it joins.

Runs in the worker process before it registers with the scheduler: imports TensorFlow and
Keras, sets TensorFlow's intra-op threads to ``$MCDASK_TF_THREADS`` (default 1: the farm's
CPU calibration is a one-thread measurement; a real Pi 3 wants 4) and one inter-op thread,
and runs a few small ops so kernels are initialised. Then it puts TensorFlow's threads under
the device's compute quota (``cluster.compute_threads``); every Python thread (Dask's and the
task thread that calls the model) stays in the device cgroup. The farm applies the CPU quotas only after
every worker has registered, because importing TensorFlow under a 2-3 % share of a core
takes minutes.
"""

from __future__ import annotations

import os
import time


def dask_setup(worker) -> None:  # noqa: ARG001 - dask's preload signature
    from mcdask.runtime.slices import ensure_tf

    t0 = time.perf_counter()
    ensure_tf(int(os.environ.get("MCDASK_TF_THREADS", "1")))
    import keras  # noqa: F401 - imported now so the first slice does not pay for it
    import tensorflow as tf

    @tf.function
    def warm(x, k, w):
        y = tf.nn.relu(tf.nn.conv2d(x, k, strides=1, padding="SAME"))
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
        return tf.nn.softmax(tf.matmul(tf.reshape(y, (1, -1)), w))

    x = tf.random.uniform((1, 32, 32, 3))
    k = tf.random.uniform((3, 3, 3, 8))
    w = tf.random.uniform((16 * 16 * 8, 10))
    for _ in range(3):
        warm(x, k, w).numpy()
    from cluster import compute_threads

    placed = compute_threads.place_model_threads()
    worker.log_event("mcdask-farm", {"action": "preloaded", "seconds": time.perf_counter() - t0,
                                     "compute_threads": placed})
