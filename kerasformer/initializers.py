"""Host-side (numpy) weight initializers.

On the JAX backend Keras's random initializers compile one XLA program per weight shape
(about 0.4 s each on a 2-core CPU), which made building a 6-layer model take ~8 s before
its weights were overwritten by a checkpoint anyway. Drawing on the host with numpy costs
microseconds; reproducibility follows `keras.utils.set_random_seed` (which seeds numpy)
or an explicit `seed`.
"""
import keras
import numpy as np


@keras.saving.register_keras_serializable(package="kerasformer")
class TruncatedNormal(keras.initializers.Initializer):
    """Normal(mean, stddev) truncated to ``[mean - 2*stddev, mean + 2*stddev]`` (the BERT
    initializer; same distribution as `keras.initializers.TruncatedNormal`).

    Args:
        mean: float; stddev: float (BERT: ``initializer_range`` 0.02);
        seed: int or None (None: drawn from numpy's global generator).
    Returns (call): a float array of `shape` in `dtype`.
    """

    def __init__(self, mean=0.0, stddev=0.02, seed=None):
        self.mean = mean
        self.stddev = stddev
        self.seed = seed

    def __call__(self, shape, dtype=None):
        seed = self.seed if self.seed is not None else np.random.randint(2**31 - 1)
        rng = np.random.default_rng(seed)
        values = rng.standard_normal(shape, dtype=np.float32)
        outside = np.abs(values) > 2.0
        while outside.any():  # resample the tails, as truncation does
            values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
            outside = np.abs(values) > 2.0
        values = np.float32(self.mean) + np.float32(self.stddev) * values
        dtype = keras.backend.standardize_dtype(dtype or keras.backend.floatx())
        return keras.ops.convert_to_tensor(values.astype("float32"), dtype=dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}
