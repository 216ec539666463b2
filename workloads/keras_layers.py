"""The one Keras layer mcdask adds: ``TemporalPyramid``, the max over the ranges of a temporal
pyramid of each windowed input (the action model's pooling, Ryoo et al.). Registered with Keras
as ``mcdask>TemporalPyramid``, so models that use it save and load like any other.

Imports Keras; import this module only where Keras is wanted (devices, the client's checks).
"""

from __future__ import annotations

import keras
from keras import ops

from .spec import pyramid_ranges


@keras.saving.register_keras_serializable(package="mcdask")
class TemporalPyramid(keras.layers.Layer):
    """Inputs: a list of ``(batch, window, features)`` tensors. For each, the max over each
    range of ``pyramid_ranges(window, levels)`` (1 + 2 + ... + 2**(levels-1) ranges); all of
    them concatenated along the features."""

    def __init__(self, levels: int, **kw):
        super().__init__(**kw)
        self.levels = int(levels)

    def call(self, inputs):
        parts = []
        for x in inputs:
            for a, b in pyramid_ranges(x.shape[1], self.levels):
                parts.append(ops.max(x[:, a:b, :], axis=1))
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shapes):
        ranges = 2**self.levels - 1
        return (input_shapes[0][0], ranges * sum(s[-1] for s in input_shapes))

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}
