"""Layers of kerasformer models (all registered for `.keras` serialisation)."""
from .attention import MultiHeadAttention
from .core import Activation, AttentionMask, BiasAdd, TakeToken
from .embeddings import Embedding, PositionEmbedding
from .feedforward import FeedForward
from .normalization import LayerNormalization

__all__ = [
    "Activation",
    "AttentionMask",
    "BiasAdd",
    "Embedding",
    "FeedForward",
    "LayerNormalization",
    "MultiHeadAttention",
    "PositionEmbedding",
    "TakeToken",
]
