"""Layers of kerasformer models (all registered for `.keras` serialisation)."""
from .attention import MultiHeadAttention
from .core import Activation, AttentionMask, BiasAdd, TakeToken
from .crf import ConditionalRandomField
from .embeddings import Embedding, PositionEmbedding
from .feedforward import FeedForward
from .gau import GatedAttentionUnit
from .heads import EfficientGlobalPointer, GlobalPointer
from .loss import Loss
from .normalization import LayerNormalization

__all__ = [
    "Activation",
    "AttentionMask",
    "BiasAdd",
    "ConditionalRandomField",
    "EfficientGlobalPointer",
    "Embedding",
    "FeedForward",
    "GatedAttentionUnit",
    "GlobalPointer",
    "LayerNormalization",
    "Loss",
    "MultiHeadAttention",
    "PositionEmbedding",
    "TakeToken",
]

# Recipes (issue 14).
from .dgcnn import DGCNN, DilatedGatedConv1D  # noqa: E402
from .rotary_2d import MultiHeadAttention2DRoPE  # noqa: E402

__all__ += ["DGCNN", "DilatedGatedConv1D", "MultiHeadAttention2DRoPE"]

# `.keras` files of built models name TransformerModel: importing the layers registers it
# too (last, so the models package sees these layers defined).
from ..models.keras_model import TransformerModel  # noqa: E402,F401
