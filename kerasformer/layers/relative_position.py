"""T5's bucketed relative position bias (Raffel et al. 2019, arXiv:1910.10683, sec. 2.1)."""
import math

import keras
import numpy as np
from keras import ops

from .masking import DropsMask


def t5_bucket_table(num_buckets=32, max_distance=128, bidirectional=True):
    """Bucket of each distance ``0, 1, ..., n-1`` for one direction of T5's relative bias.

    Distances below ``max_exact`` (half of the one-direction buckets) get a bucket each;
    larger ones share logarithmically wider buckets up to ``max_distance``; everything
    beyond falls in the last bucket, which ``table[-1]`` is (so callers clamp distances
    to ``len(table) - 1``).

    The table is computed once on the host with the float32 steps of Mesh TensorFlow /
    Hugging Face's ``T5Attention._relative_position_bucket`` (float32 division, a
    correctly rounded float32 log, float32 multiply, truncation). Evaluating that
    formula at run time instead would make a bucket boundary (e.g. distance 16 with the
    default sizes, where the exact value is an integer) depend on the backend's log
    implementation; a lookup table is the same on every backend.

    Args:
        num_buckets: total buckets (HF ``relative_attention_num_buckets``).
        max_distance: distance from which all share the last bucket
            (``relative_attention_max_distance``).
        bidirectional: True for the encoder (half of the buckets per direction).
    Returns:
        int32 numpy array [n]: bucket of distance d within one direction (the bucket
        offset of positive distances in the bidirectional case is *not* added).
    Raises:
        ValueError: when the sizes leave no logarithmic buckets to fill.
    """
    if bidirectional:
        num_buckets //= 2
    max_exact = num_buckets // 2
    if max_exact < 1 or max_distance <= max_exact:
        raise ValueError(
            f"T5 relative position needs num_buckets >= {4 if bidirectional else 2} and "
            f"max_distance > {max_exact}; got num_buckets={num_buckets * (1 + bidirectional)}"
            f", max_distance={max_distance}"
        )
    log_ratio = np.float32(math.log(max_distance / max_exact))
    log_buckets = np.float32(num_buckets - max_exact)
    table = []
    distance = 0
    while True:
        if distance < max_exact:
            bucket = distance
        else:
            scaled = np.float32(distance) / np.float32(max_exact)
            value = np.float32(math.log(float(scaled))) / log_ratio
            value = np.float32(value) * log_buckets
            bucket = min(max_exact + int(value), num_buckets - 1)
        table.append(bucket)
        # Buckets grow with distance, so once the last one is reached it stays.
        if bucket == num_buckets - 1 and distance >= max_exact:
            break
        distance += 1
    return np.asarray(table, dtype="int32")


def t5_relative_position_bucket(relative_position, bidirectional=True, num_buckets=32,
                                max_distance=128):
    """Hugging Face's ``T5Attention._relative_position_bucket`` on `keras.ops`.

    Args:
        relative_position: int tensor of any shape, ``key_position - query_position``.
        bidirectional: encoder (True) or causal decoder (False; positive distances, i.e.
            future keys, all map to bucket 0).
        num_buckets / max_distance: as in :func:`t5_bucket_table`.
    Returns:
        int32 tensor of the same shape, values in ``[0, num_buckets)``.
    """
    table = t5_bucket_table(num_buckets, max_distance, bidirectional)
    relative_position = ops.cast(relative_position, "int32")
    if bidirectional:
        offset = ops.where(relative_position > 0, num_buckets // 2, 0)
        distance = ops.abs(relative_position)
    else:
        offset = 0
        distance = -ops.minimum(relative_position, 0)
    distance = ops.minimum(distance, len(table) - 1)
    return ops.take(ops.convert_to_tensor(table), distance, axis=0) + offset


@keras.saving.register_keras_serializable(package="kerasformer")
class RelativePositionBiasT5(DropsMask, keras.layers.Layer):
    """T5's learned relative position bias: one scalar per head and distance bucket,
    added to the attention logits (arXiv:1910.10683; bert4keras
    ``RelativePositionEmbeddingT5``). Only the first block of a T5 stack owns the table;
    every block adds the same bias.

    Weights: ``embeddings`` [num_buckets, heads] (Hugging Face's
    ``relative_attention_bias.weight`` layout; Google checkpoints store it transposed).

    Call: ``layer([query, key], cache_index=None)``

        - query: [batch, q_len, ...], key: [batch, k_len, ...]; only their lengths are
          used (the queries are at positions ``0..q_len-1``, keys at ``0..k_len-1``).
        - cache_index: int scalar; with a KV cache the queries are at the absolute
          positions ``cache_index + i`` and ``key`` is the cache (all its slots).

    Returns:
        float bias [1, heads, q_len, k_len] in the compute dtype.

    Args:
        heads: attention heads; num_buckets / max_distance: bucketing (HF
        ``relative_attention_num_buckets`` / ``relative_attention_max_distance``);
        bidirectional: encoder True, decoder False.
    """

    def __init__(self, heads, num_buckets=32, max_distance=128, bidirectional=True,
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        # Validates the sizes early, at construction.
        t5_bucket_table(num_buckets, max_distance, bidirectional)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_buckets, self.heads),
            autocast=False,  # read as float32 (see call)
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs, cache_index=None):
        query, key = inputs
        query_positions = ops.arange(ops.shape(query)[1], dtype="int32")
        if cache_index is not None:
            query_positions = query_positions + ops.cast(cache_index, "int32")
        key_positions = ops.arange(ops.shape(key)[1], dtype="int32")
        relative = key_positions[None, :] - query_positions[:, None]
        buckets = t5_relative_position_bucket(
            relative, self.bidirectional, self.num_buckets, self.max_distance
        )
        # Gather from the float32 table, then cast: a bfloat16 scatter-add (the gradient
        # of a gather from a cast table) is very slow on GPUs (see layers.Embedding).
        values = ops.cast(ops.take(self.embeddings, buckets, axis=0), self.compute_dtype)
        return ops.transpose(values, (2, 0, 1))[None]

    def compute_output_spec(self, inputs, cache_index=None):
        query, key = inputs
        return keras.KerasTensor(
            (1, self.heads, query.shape[1], key.shape[1]), dtype=self.compute_dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads, num_buckets=self.num_buckets, max_distance=self.max_distance,
            bidirectional=self.bidirectional,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
