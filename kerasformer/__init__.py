"""kerasformer: pretrained Transformers for Keras 3 (JAX and TensorFlow backends).

Public names only; see README.md for the user contract.
"""
__version__ = "0.1.0"

from .models import build_transformer_model  # noqa: E402

__all__ = ["build_transformer_model", "__version__"]
