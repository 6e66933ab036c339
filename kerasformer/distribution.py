"""Sharding recipes for `keras.distribution` (data and model parallel training on JAX).

`get_layout_map(device_mesh, model_name)` returns a `keras.distribution.LayoutMap`
that shards a kerasformer model Megatron-style (Shoeybi et al., "Megatron-LM: Training
Multi-Billion Parameter Language Models Using Model Parallelism", arXiv:1909.08053):

* attention ``q_dense`` / ``k_dense`` / ``v_dense`` and feed-forward ``i*_dense`` kernels
  are **column-parallel** (output dim split over the ``"model"`` mesh axis), so each
  device holds whole heads / a slice of the FFN width;
* attention and feed-forward ``o_dense`` kernels are **row-parallel** (input dim split),
  so the partial products are summed by one all-reduce per sub-layer;
* word / position / segment embeddings (and the untied T5 LM head) are split on the
  **hidden** dimension, which keeps the gather local and needs no vocab-size padding;
* every norm, bias, relative-position table and anything else unmatched is replicated.

The rules use the bert4keras layer names every family shares
(``Transformer-<i>-MultiHeadSelfAttention/q_dense/kernel``,
``Encoder-Transformer-<i>-...`` / ``Decoder-Transformer-<i>-...`` for T5, the shared
``Transformer-MultiHeadSelfAttention`` of ALBERT, ``Transformer-<i>-GatedAttentionUnit``
of GAU-α), so one map serves a whole family; optimizer slots (Adam ``m``/``v``) follow
the layout of their variable automatically.

Recipe (JAX backend; TensorFlow's `keras.distribution` support is experimental and not
tested here)::

    import os
    os.environ["KERAS_BACKEND"] = "jax"
    # CPU only, to simulate 8 devices: must be set before jax is imported.
    # os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import keras, kerasformer
    from kerasformer.distribution import get_layout_map

    devices = keras.distribution.list_devices()          # 8 TPU cores on a v3-8 / v4-8

    # 1) Data parallel: weights replicated, the batch split over all devices.
    distribution = keras.distribution.DataParallel(devices=devices)

    # 2) Model parallel (tensor parallel x data parallel): a 2-D mesh; the batch is
    #    split over "batch", the weights over "model" as described above.
    mesh = keras.distribution.DeviceMesh(
        shape=(2, 4), axis_names=("batch", "model"), devices=devices)
    distribution = keras.distribution.ModelParallel(
        layout_map=get_layout_map(mesh, "bert"), batch_dim_name="batch")

    keras.distribution.set_distribution(distribution)    # or: with distribution.scope():
    model = kerasformer.build_transformer_model(config_path, checkpoint_path,
                                                model="bert", with_mlm=True)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss="sparse_categorical_crossentropy")
    model.fit(dataset, ...)    # global batch size must be divisible by the "batch" axis

Build (and load) the model *after* the distribution is set, so every variable is
created with its layout. The global batch must be divisible by the size of the
``"batch"`` axis (all devices for `DataParallel`); the sharded dimensions (hidden size,
FFN width, ``heads * head_size``) must be divisible by the size of the ``"model"`` axis.
On a multi-host TPU pod call ``keras.distribution.initialize()`` first. The same script
runs on a TPU VM and on a simulated CPU mesh: see ``examples/train_on_tpu.py``.
"""
import keras

from .models import MODELS

__all__ = ["get_layout_map", "layout_rules"]

# Optional "Encoder-" / "Decoder-" (T5) prefix and optional layer index (ALBERT shares
# one block, so it has none).
_BLOCK = r"(?:Encoder-|Decoder-)?Transformer(?:-\d+)?"
_ATTENTION = _BLOCK + r"-MultiHead(?:Self|Cross)Attention"
_FEEDFORWARD = _BLOCK + r"-FeedForward"
_GAU = _BLOCK + r"-GatedAttentionUnit"


def layout_rules(model_name="bert", model_axis="model"):
    """The sharding rules behind `get_layout_map`, as ``{regex: axes}``.

    Each regex is matched with `re.fullmatch` against a variable path (``w.path``) and
    the rules are mutually exclusive (Keras rejects a path matching two keys); ``axes``
    has one entry per variable dimension, a mesh axis name or None (not split).

    Args:
        model_name: a name from ``kerasformer.models.MODELS`` (case-insensitive).
        model_axis: the mesh axis the weights are split over.

    Returns:
        dict mapping regex (str) to tuple of axis names / None.

    Raises:
        ValueError: for an unknown model name.
    """
    key = str(model_name).lower()
    if key not in MODELS:
        raise ValueError(f"Unknown model {model_name!r}; known models: {sorted(MODELS)}")
    column = (None, model_axis)   # kernel [in, out]: split the output features
    row = (model_axis, None)      # kernel [in, out]: split the input features
    rules = {
        # Token / position / segment embeddings [rows, hidden]: split hidden. The
        # relative-position tables of T5/NEZHA ([buckets, heads]) are left replicated.
        r"Embedding-(?:Token|Position|Segment)/embeddings": column,
        # ALBERT factorised embedding projection [E, H].
        r"Embedding-Mapping/kernel": column,
        _ATTENTION + r"/[qkv]_dense/kernel": column,
        _ATTENTION + r"/o_dense/kernel": row,
        _FEEDFORWARD + r"/i\d*_dense/kernel": column,
        _FEEDFORWARD + r"/o_dense/kernel": row,
        # MLM transform [H, H]; its output feeds a norm, XLA inserts the gather.
        r"MLM-Dense/kernel": column,
        # Untied T5 LM head, an Embedding [vocab, H] used in "dense" mode.
        r"Decoder-Output-LM/embeddings": column,
    }
    if key.startswith("gau"):
        rules[_GAU + r"/i_dense/kernel"] = column
        rules[_GAU + r"/o_dense/kernel"] = row
    return rules


def get_layout_map(device_mesh, model_name="bert", model_axis="model"):
    """A `keras.distribution.LayoutMap` for Megatron-style tensor parallelism.

    Args:
        device_mesh: a `keras.distribution.DeviceMesh`, e.g. shape ``(2, 4)`` with axis
            names ``("batch", "model")``; it must have an axis named `model_axis`.
        model_name: the kerasformer family (a key of ``kerasformer.models.MODELS``:
            ``"bert"``, ``"roberta"``, ``"albert"``, ``"electra"``, ``"nezha"``,
            ``"roformer"``, ``"roformer_v2"``, ``"gpt2"``, ``"t5.1.1"``, ...).
        model_axis: the mesh axis name the weights are split over.

    Returns:
        `keras.distribution.LayoutMap`; pass it to
        ``keras.distribution.ModelParallel(layout_map=..., batch_dim_name="batch")``.
        Variables no rule matches (norms, biases) are replicated.

    Raises:
        ValueError: for an unknown model name, or a mesh without `model_axis`.
    """
    if model_axis not in device_mesh.axis_names:
        raise ValueError(
            f"The device mesh has axes {list(device_mesh.axis_names)}; "
            f"expected one named {model_axis!r} to split the weights over"
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in layout_rules(model_name, model_axis).items():
        layout_map[pattern] = axes
    return layout_map
