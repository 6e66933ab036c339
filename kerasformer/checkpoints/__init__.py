"""Checkpoint I/O: reading and writing tensors in TF / safetensors / PyTorch formats.

This package is the *format* layer (names, shapes, numpy arrays); mapping
checkpoint names onto Keras weights is built on top of it.
"""
from kerasformer.checkpoints.readers import (
    CheckpointReader,
    KerasWeightsReader,
    SafetensorsReader,
    ShardedReader,
    TFCheckpointReader,
    TorchBinReader,
    find_config,
    is_bookkeeping,
    open_checkpoint,
)
from kerasformer.checkpoints.writers import (
    save_keras_weights,
    save_safetensors,
    save_tf_checkpoint,
)

__all__ = [
    "CheckpointReader",
    "TFCheckpointReader",
    "SafetensorsReader",
    "ShardedReader",
    "TorchBinReader",
    "KerasWeightsReader",
    "is_bookkeeping",
    "open_checkpoint",
    "find_config",
    "save_tf_checkpoint",
    "save_safetensors",
    "save_keras_weights",
]
