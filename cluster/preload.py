"""``dask worker --preload cluster.preload``: make a farm device ready before it joins.

Runs in the worker process before it registers with the scheduler, for the runtime the device
is set up for (``mcdask.worker.backend``; the farm sets it from ``farm up --backend``):

* ``tensorflow``: imports TensorFlow and Keras, sets TensorFlow's intra-op threads to
  ``$MCDASK_TF_THREADS`` (default 1: the farm's CPU calibration is a one-thread measurement; a
  real Pi 3 wants 4) and one inter-op thread, runs a few small ops so kernels are initialised,
  then puts TensorFlow's threads (``tf_*``) under the device's compute quota
  (``cluster.compute_threads``).
* ``litert``: imports LiteRT's interpreter, never TensorFlow, and puts the process's model
  thread (``mcdask.runtime.model_thread``, where every LiteRT kernel runs) under the compute quota.

Every other Python thread (Dask's, and the task thread that calls the model) stays in the device
cgroup. The farm applies the CPU quotas only after every worker has registered, because
importing TensorFlow under a 2-3 % share of a core takes minutes.
"""

from __future__ import annotations

import os
import time


def dask_setup(worker) -> None:  # noqa: ARG001 - dask's preload signature
    import dask.config

    t0 = time.perf_counter()
    backend = dask.config.get("mcdask.worker.backend")
    placed = _litert_ready() if backend == "litert" else _tensorflow_ready()
    worker.log_event("mcdask-farm", {"action": "preloaded", "backend": backend,
                                     "seconds": time.perf_counter() - t0, "compute_threads": placed})


def _tensorflow_ready() -> list[int]:
    from mcdask.runtime.slices import ensure_tf

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

    return compute_threads.place_model_threads()


def _litert_ready() -> list[int]:
    from ai_edge_litert import interpreter  # noqa: F401 - imported now so the first slice does not pay for it

    from cluster import compute_threads
    from mcdask.runtime import model_thread

    placed: list[int] = []
    model_thread.on_start(lambda tid: placed.extend(compute_threads.place([tid])))
    model_thread.thread_id()
    return placed
