"""LoRA and LoRA+ for kerasformer models, on Keras's own LoRA layers.

LoRA (Hu et al. 2021, arXiv:2106.09685) freezes a weight ``W`` [in, out] and trains a
low-rank correction: ``W' = W + (alpha / rank) * A @ B`` with ``A`` [in, rank] (random)
and ``B`` [rank, out] (zeros, so the model is unchanged at the start). Keras 3 layers
implement it: ``Dense``/``EinsumDense``/``Embedding.enable_lora(rank, lora_alpha=...)``
add ``lora_kernel_a``/``lora_kernel_b`` (``lora_embeddings_a``/``_b`` for embeddings),
float32, and make the base kernel non-trainable. This module applies that to the layers
of a model selected by a regular expression over their *paths*, freezes everything
else, saves/loads only the LoRA matrices, and merges them back.

LoRA+ (Hayou et al. 2024, arXiv:2402.12354; kexue.fm/archives/10001 "配置不同的学习率，
LoRA还能再涨一点？"): with ``B`` zero-initialised and ``A`` random, the two matrices
should not share a learning rate; B's should be ``ratio`` (≈16) times A's.
:func:`lora_plus_lr_multipliers` gives the ``paramwise_lr_schedule`` of
:func:`kerasformer.optimizers.extend_with_parameter_wise_lr` (which scales the *update*
of matching variables, i.e. their learning rate, Adam included);
:func:`extend_with_lora_plus` wraps it as an optimizer class.

Layer paths: the Dense layers inside kerasformer's attention and feed-forward layers are
sublayers, so their paths are ``Transformer-3-MultiHeadSelfAttention/q_dense``
(``q_dense``, ``k_dense``, ``v_dense``, ``o_dense``) and ``Transformer-3-FeedForward/i0_dense``
(``i0_dense``, ``i1_dense`` when gated, ``o_dense``); embeddings are ``Embedding-Token``...

Saving: while LoRA is enabled the stored base kernel is the *unmerged* one. Keras's
``model.save_weights`` and kerasformer's ``save_weights_as_checkpoint`` both write the
merged kernel ``W + (alpha / rank) * A @ B`` (what the model computes; the model keeps
its adapters); :func:`save_lora_weights` writes only A and B, and :func:`merge_lora`
folds them in for good. Every file is written through a temporary file in the same
folder and renamed into place (:mod:`kerasformer.io_utils`).
"""
import json
import os
import re

import keras
import numpy as np
from keras import ops

from .io_utils import atomic_write
from .optimizers import extend_with_parameter_wise_lr

__all__ = [
    "DEFAULT_TARGET",
    "LORA_B_PATTERN",
    "enable_lora",
    "lora_layers",
    "lora_weights",
    "lora_merged_weights",
    "save_lora_weights",
    "load_lora_weights",
    "merge_lora",
    "lora_plus_lr_multipliers",
    "extend_with_lora_plus",
]

#: LoRA's default: the query and value projections of every attention layer
#: (arXiv:2106.09685, section 7.1).
DEFAULT_TARGET = r"(^|/)(q|v)_dense$"

#: Variable paths of the B matrices (LoRA+ gives them the larger learning rate).
LORA_B_PATTERN = r"/lora_(kernel|embeddings)_b$"

_LORA_CLASSES = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)


def _lora_variables(layer):
    if isinstance(layer, keras.layers.Embedding):
        return {"a": "lora_embeddings_a", "b": "lora_embeddings_b"}
    return {"a": "lora_kernel_a", "b": "lora_kernel_b"}


def _base_variable(layer):
    # Keras keeps the stored weight private and exposes the LoRA-merged value as the
    # public property (`kernel` / `embeddings`).
    return layer._embeddings if isinstance(layer, keras.layers.Embedding) else layer._kernel


def _layers_by_path(model):
    return [
        layer for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, _LORA_CLASSES) and getattr(layer, "path", None)
    ]


def _forget_compiled_functions(model):
    # Keras caches traced train/test/predict functions (tf.function graphs capture the
    # variables they read): a model whose layers changed must trace them again.
    for attribute in ("train_function", "test_function", "predict_function"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)


def lora_layers(model):
    """The layers of `model` with LoRA enabled, as ``{layer path: layer}``."""
    return {
        layer.path: layer for layer in _layers_by_path(model)
        if getattr(layer, "lora_enabled", False)
    }


def enable_lora(model, rank, alpha=None, target=DEFAULT_TARGET, trainable=None,
                a_initializer="he_uniform", b_initializer="zeros"):
    """Add LoRA adapters to the layers of `model` whose path matches `target`, and
    freeze every other weight.

    Args:
        model: a built ``keras.Model`` (e.g. from ``build_transformer_model``).
        rank: the LoRA rank r (positive int).
        alpha: LoRA's alpha; the correction is scaled by ``alpha / rank``
            (None: ``alpha = rank``, scale 1, Keras's default).
        target: regular expression searched (``re.search``) in each ``Dense``,
            ``EinsumDense`` and ``Embedding`` layer's path, e.g. the default
            :data:`DEFAULT_TARGET` (``q_dense`` and ``v_dense`` of every attention),
            ``r"MultiHeadSelfAttention/(q|k|v|o)_dense$"``, ``r"_dense$"`` (every
            projection, FFN included), ``r"^Embedding-Token$"``.
        trainable: optional regular expression over *variable* paths that stay
            trainable (e.g. ``r"Norm|^Classifier"`` for LayerNorms and a new head);
            everything else that is not a LoRA matrix is frozen, biases and LayerNorm
            parameters included (plain LoRA trains only A and B).
        a_initializer / b_initializer: Keras initializers of A and B (B must start at
            zero for the model to be unchanged at initialisation).
    Returns:
        the list of adapted layer paths.
    Raises:
        ValueError: if `rank` is not a positive int, if no layer matches `target`, if a
            matching layer already has LoRA, or for an unbuilt model (Keras).

    Re-compile (or build a new optimizer) after calling this: an optimizer built before
    knows the old trainable variables. Under a ``mixed_bfloat16`` policy A and B are
    float32 (Keras), the merged kernel is cast to the compute dtype.
    """
    if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
    pattern = re.compile(target)
    keep = re.compile(trainable) if trainable else None
    chosen = [layer for layer in _layers_by_path(model) if pattern.search(layer.path)]
    if not chosen:
        raise ValueError(
            f"No Dense/EinsumDense/Embedding layer path matches target {target!r}; "
            f"paths look like {[layer.path for layer in _layers_by_path(model)][:6]}"
        )
    for layer in chosen:
        if getattr(layer, "lora_enabled", False):
            raise ValueError(f"LoRA is already enabled on {layer.path}")
    lora_ids = set()
    for layer in chosen:
        layer.enable_lora(int(rank), lora_alpha=alpha, a_initializer=a_initializer,
                          b_initializer=b_initializer)
    for layer in lora_layers(model).values():
        for attribute in _lora_variables(layer).values():
            lora_ids.add(id(getattr(layer, attribute)))
    for variable in model.weights:
        if id(variable) in lora_ids:
            variable.trainable = True
        else:
            variable.trainable = bool(keep and keep.search(variable.path))
    _forget_compiled_functions(model)
    return [layer.path for layer in chosen]


def lora_weights(model):
    """The LoRA matrices of `model` as ``{variable path: numpy array}`` (float32)."""
    weights = {}
    for path, layer in lora_layers(model).items():
        for attribute in _lora_variables(layer).values():
            variable = getattr(layer, attribute)
            weights[variable.path] = ops.convert_to_numpy(variable)
    return weights


def lora_merged_weights(model):
    """``{base variable path: merged numpy array}`` for every layer with LoRA enabled:
    ``W + (alpha / rank) * A @ B`` as the layer computes it (Keras's ``kernel`` /
    ``embeddings`` property), without changing the model. Empty without LoRA.

    Used by ``save_weights_as_checkpoint`` so that an exported checkpoint holds the
    adapted weights the model computes with, not the frozen base."""
    merged = {}
    for layer in lora_layers(model).values():
        value = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
        merged[_base_variable(layer).path] = np.asarray(ops.convert_to_numpy(value))
    return merged


def _metadata(model):
    return {
        path: {"rank": int(layer.lora_rank), "alpha": float(layer.lora_alpha)}
        for path, layer in lora_layers(model).items()
    }


def save_lora_weights(model, path):
    """Save only the LoRA matrices (and each layer's rank/alpha) of `model`.

    Args:
        model: a model with LoRA enabled (:func:`enable_lora`).
        path: ``*.safetensors`` (safetensors, metadata in the header) or anything
            else (NumPy ``.npz``; ``np.savez`` adds ``.npz`` to a name without it).
            Keys are variable paths, e.g.
            ``Transformer-0-MultiHeadSelfAttention/q_dense/lora_kernel_a``.
    Returns:
        the path written (str).
    Raises:
        ValueError: when the model has no LoRA layer.
        OSError: when the file cannot be written; the previous file at `path` is then
            left byte-identical (temporary file + rename) and no temporary file remains.
    """
    weights = lora_weights(model)
    if not weights:
        raise ValueError("The model has no LoRA layer; call enable_lora first")
    meta = json.dumps(_metadata(model))
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from .checkpoints.writers import save_safetensors

        return save_safetensors(weights, path, metadata={"kerasformer_lora": meta})
    if not path.endswith(".npz"):
        path += ".npz"  # what np.savez does to a name; kept for compatibility
    with atomic_write(path) as temp:
        with open(temp, "wb") as f:  # a file object: np.savez adds no extension
            np.savez(f, __kerasformer_lora__=np.array(meta), **weights)
    return path


def _read(path):
    path = os.fspath(path)
    if not os.path.exists(path) and not os.path.exists(path + ".npz"):
        raise FileNotFoundError(f"No LoRA file at {path}")
    try:
        return _read_unchecked(path)
    except Exception as e:  # BadZipFile, SafetensorError, JSON errors: name the file
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"Cannot read the LoRA file {path} (truncated or not written by "
            f"save_lora_weights): {type(e).__name__}: {text}"
        ) from None


def _read_unchecked(path):
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(path, framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("kerasformer_lora", "{}"))
        return load_file(path), meta
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    with np.load(path) as data:
        weights = {k: data[k] for k in data.files if k != "__kerasformer_lora__"}
        meta = json.loads(str(data["__kerasformer_lora__"])) if (
            "__kerasformer_lora__" in data.files) else {}
    return weights, meta


def load_lora_weights(model, path, trainable=None):
    """Load LoRA matrices saved by :func:`save_lora_weights` into `model`.

    Layers of the file that do not have LoRA yet get it first (with the saved rank and
    alpha, and everything else frozen as in :func:`enable_lora`), so a freshly built
    base model can be given an adapter directly.

    Args:
        model: the base model (same architecture and layer names as when saved).
        path: the ``.safetensors`` / ``.npz`` file.
        trainable: as in :func:`enable_lora`, for layers enabled here.
    Raises:
        ValueError: listing missing / unexpected / wrong-shape matrices, or a rank or
            alpha that differs from an already-enabled layer's; naming the file when
            it cannot be read (truncated, not an adapter file).
        FileNotFoundError: when `path` does not exist.
    """
    weights, meta = _read(path)
    layers = {layer.path: layer for layer in _layers_by_path(model)}
    unknown = sorted(p for p in meta if p not in layers)
    if unknown:
        raise ValueError(f"LoRA file {path} names layers the model lacks: {unknown}")
    existing = lora_layers(model)
    for layer_path, settings in meta.items():
        layer = layers[layer_path]
        if layer_path in existing:
            if (layer.lora_rank, float(layer.lora_alpha)) != (
                    settings["rank"], settings["alpha"]):
                raise ValueError(
                    f"{layer_path} has LoRA rank {layer.lora_rank}, alpha "
                    f"{layer.lora_alpha}; the file has {settings}"
                )
            continue
        enable_lora(model, settings["rank"], alpha=settings["alpha"],
                    target="^" + re.escape(layer_path) + "$", trainable=trainable)
    variables = {}
    for layer in lora_layers(model).values():
        for attribute in _lora_variables(layer).values():
            variable = getattr(layer, attribute)
            variables[variable.path] = variable
    missing = sorted(set(variables) - set(weights))
    unexpected = sorted(set(weights) - set(variables))
    shapes = [
        f"{k}: model {tuple(variables[k].shape)}, file {tuple(weights[k].shape)}"
        for k in sorted(set(weights) & set(variables))
        if tuple(variables[k].shape) != tuple(weights[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"LoRA weights in {path} do not match the model: missing {missing}, "
            f"unexpected {unexpected}, wrong shape {shapes}"
        )
    for key, variable in variables.items():
        variable.assign(weights[key])


def merge_lora(model):
    """Fold every LoRA correction into its base weight and remove the adapters:
    ``W <- W + (alpha / rank) * A @ B`` (computed in float32, stored in ``W``'s dtype),
    then ``A``/``B`` are deleted and the layer is a plain layer again.

    The merged weights become trainable again; other weights keep their trainable
    flags (``model.trainable = True`` unfreezes everything). Re-compile afterwards.
    Outputs are unchanged (to float rounding of the sum).

    Returns:
        the list of merged layer paths.
    Raises:
        NotImplementedError: for quantized layers (Keras merges those on save).
    """
    merged = []
    for path, layer in lora_layers(model).items():
        if layer.quantization_mode is not None:
            raise NotImplementedError(f"merge_lora does not handle quantized layer {path}")
        names = _lora_variables(layer)
        a, b = getattr(layer, names["a"]), getattr(layer, names["b"])
        base = _base_variable(layer)
        scale = layer.lora_alpha / layer.lora_rank
        delta = scale * ops.matmul(ops.cast(a, "float32"), ops.cast(b, "float32"))
        value = ops.cast(base, "float32") + ops.reshape(delta, tuple(base.shape))
        base.assign(ops.cast(value, base.dtype))
        # Layer.__delattr__ untracks the variables, so model.weights drops them.
        delattr(layer, names["a"])
        delattr(layer, names["b"])
        layer.lora_enabled = False
        layer.lora_rank = None
        base.trainable = True
        merged.append(path)
    _forget_compiled_functions(model)
    return merged


# --------------------------------------------------------------------------- LoRA+


def lora_plus_lr_multipliers(ratio=16.0):
    """LoRA+ learning-rate multipliers (arXiv:2402.12354; kexue.fm/archives/10001):
    ``{LORA_B_PATTERN: ratio}``, the ``paramwise_lr_schedule`` of an optimizer from
    :func:`kerasformer.optimizers.extend_with_parameter_wise_lr`: the update of every
    ``B`` matrix (``lora_kernel_b``/``lora_embeddings_b``) is multiplied by `ratio`, so
    B learns `ratio` times faster than A (the paper's λ = η_B / η_A, default 16).

    Raises:
        ValueError: for a non-positive ratio.
    """
    ratio = float(ratio)
    if not ratio > 0:
        raise ValueError(f"LoRA+ ratio must be positive, got {ratio}")
    return {LORA_B_PATTERN: ratio}


def extend_with_lora_plus(BaseOptimizer, name=None):
    """Return a subclass of the Keras optimizer class `BaseOptimizer` taking
    ``lora_plus_ratio=16``: LoRA B matrices get `lora_plus_ratio` × the learning rate
    (arXiv:2402.12354), through :func:`extend_with_parameter_wise_lr` (an extra
    ``paramwise_lr_schedule`` is combined with it; multipliers of several matching
    patterns multiply). Use with the JAX or TensorFlow backend::

        AdamLoRAPlus = extend_with_lora_plus(keras.optimizers.AdamW)
        model.compile(AdamLoRAPlus(learning_rate=2e-4, lora_plus_ratio=16), loss)

    Raises:
        TypeError / ValueError / NotImplementedError: as
            :func:`~kerasformer.optimizers.extend_with_parameter_wise_lr`.
    """
    extensions = getattr(BaseOptimizer, "_kf_extensions", ())
    if "lora_plus" in extensions:
        raise ValueError(f"{BaseOptimizer.__name__} is already extended with LoRA+.")
    if "parameter_wise_lr" in extensions:
        ParamWise = BaseOptimizer
    else:
        ParamWise = extend_with_parameter_wise_lr(BaseOptimizer)
    name = name or f"{BaseOptimizer.__name__}WithLoRAPlus"

    def __init__(self, *args, lora_plus_ratio=16.0, paramwise_lr_schedule=None, **kwargs):
        schedule = dict(paramwise_lr_schedule or {})
        schedule.update(lora_plus_lr_multipliers(lora_plus_ratio))
        ParamWise.__init__(self, *args, paramwise_lr_schedule=schedule, **kwargs)
        self._kf.lora_plus_ratio = float(lora_plus_ratio)

    def get_config(self):
        config = ParamWise.get_config(self)
        config["lora_plus_ratio"] = self._kf.lora_plus_ratio
        config["paramwise_lr_schedule"] = {
            k: v for k, v in config["paramwise_lr_schedule"].items() if k != LORA_B_PATTERN
        }
        return config

    klass = type(ParamWise)(name, (ParamWise,), {
        "__init__": __init__,
        "get_config": get_config,
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{BaseOptimizer.__name__} with LoRA+ learning rates.\n\n"
                   f"{extend_with_lora_plus.__doc__}",
        "_kf_extensions": ParamWise._kf_extensions + ("lora_plus",),
        "lora_plus_ratio": property(lambda self: self._kf.lora_plus_ratio),
    })
    keras.saving.get_custom_objects()[name] = klass
    return klass
