"""kerasformer: pretrained Transformers for Keras 3 (JAX and TensorFlow backends).

Public names only; see README.md for the user contract. Importing a submodule that does
not need Keras (``kerasformer.tokenizers``, ``kerasformer.snippets``) does not import it.
"""
__version__ = "0.1.0"

__all__ = [
    "build_transformer_model",
    "float32_matmul_precision",
    "get_float32_matmul_precision",
    "set_float32_matmul_precision",
    "__version__",
]

_PRECISION_NAMES = ("float32_matmul_precision", "get_float32_matmul_precision",
                    "set_float32_matmul_precision")


def __getattr__(name):
    if name == "build_transformer_model":
        from .models import build_transformer_model

        return build_transformer_model
    if name in _PRECISION_NAMES:
        from . import precision

        return getattr(precision, name)
    raise AttributeError(f"module 'kerasformer' has no attribute {name!r}")
