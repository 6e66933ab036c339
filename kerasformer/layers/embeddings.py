"""Token and position embeddings."""
import keras
from keras import ops

from .masking import KeepsFirstInputMask


@keras.saving.register_keras_serializable(package="kerasformer")
class Embedding(keras.layers.Embedding):
    """`keras.layers.Embedding` that can also act as the tied output projection.

    ``layer(token_ids)`` looks up ``[batch, seq_len] -> [batch, seq_len, output_dim]``;
    ``layer(hidden, mode="dense")`` computes ``hidden @ embeddings^T``
    (``[..., output_dim] -> [..., input_dim]``), which is how BERT's MLM head and GPT-2's
    LM head reuse the input embedding (Press & Wolf 2017, arXiv:1608.05859).

    Args (beyond `keras.layers.Embedding`):
        pad_token_id: when not None, a lookup attaches the Keras padding mask
            ``token_ids != pad_token_id`` (bool [batch, seq_len]) to its output, with the
            first position always unmasked -- bert4keras's ``Embedding-Token`` rule, so
            that T5's decoder start token (the pad id 0) counts as a real token. Keras
            carries the mask to layers that take one (pooling, CRF, GlobalPointer, loss
            layers) and to ``fit``'s losses; the dense mode passes its input's mask on.
    """

    def __init__(self, *args, pad_token_id=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad_token_id = pad_token_id
        # Keras's Embedding turns masking off unless mask_zero; the dense mode must pass
        # its input's mask on in any case.
        self.supports_masking = True

    def add_weight(self, *args, **kwargs):
        # Under mixed precision, gather from the float32 table and cast the rows (Keras's
        # autocast would cast the whole table first): the gradient is then a float32
        # scatter-add. A bfloat16 scatter-add runs as a compare-and-swap loop on GPUs;
        # with every row of a batch hitting a few table rows (segments, positions) it made
        # the bert-base bf16 backward 30x slower than float32 on an H200
        # (benchmarks/train_step_probe.py).
        kwargs.setdefault("autocast", False)
        return super().add_weight(*args, **kwargs)

    def call(self, inputs, mode="embedding"):
        if mode == "embedding":
            return super().call(inputs)
        if mode == "dense":
            kernel = ops.cast(self.embeddings, inputs.dtype)
            return ops.matmul(inputs, ops.transpose(kernel))
        raise ValueError(f"Embedding mode must be 'embedding' or 'dense', got {mode!r}")

    def compute_output_spec(self, inputs, mode="embedding"):
        if mode == "dense":
            shape = tuple(inputs.shape[:-1]) + (self.input_dim,)
        else:
            shape = tuple(inputs.shape) + (self.output_dim,)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        # compute_mask does not see `mode`: float inputs are the dense (tied head) mode,
        # whose output keeps the hidden states' mask; ids are a lookup.
        if "float" in keras.backend.standardize_dtype(inputs.dtype):
            return mask
        if self.pad_token_id is None or len(inputs.shape) != 2:
            return None
        mask = ops.not_equal(inputs, self.pad_token_id)
        first = ops.ones_like(mask[:, :1])
        return ops.concatenate([first, mask[:, 1:]], axis=1)

    def get_config(self):
        return {**super().get_config(), "pad_token_id": self.pad_token_id}


@keras.saving.register_keras_serializable(package="kerasformer")
class PositionEmbedding(KeepsFirstInputMask, keras.layers.Layer):
    """Learned absolute position embeddings, added to (or returned for) the input.

    Call with ``x`` ([batch, seq_len, dim]; positions are ``0..seq_len-1``) or with
    ``[x, position_ids]`` (``custom_position_ids=True``; int [batch, seq_len]).

    Args:
        input_dim: number of positions (``max_position_embeddings``).
        output_dim: embedding size.
        merge_mode: ``"add"`` returns ``x + P``, ``"zero"`` returns ``P`` alone.
        hierarchical: None, or alpha in (0, 1) (True means 0.4) to extend the table to
            ``input_dim**2`` positions by hierarchical decomposition
            (kexue.fm/archives/7947): ``p(i) = alpha*u[i // n] + (1-alpha)*u[i % n]`` with
            ``u = (P - alpha*P[0]) / (1 - alpha)``, so the first n positions are unchanged.
        custom_position_ids: whether position ids are given as a second input.

    Raises:
        ValueError: when the (static) sequence length exceeds the number of positions.
    """

    def __init__(self, input_dim, output_dim, merge_mode="add", hierarchical=None,
                 embeddings_initializer="zeros", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "zero"):
            raise ValueError(f"merge_mode must be 'add' or 'zero', got {merge_mode!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.hierarchical = 0.4 if hierarchical is True else hierarchical
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.custom_position_ids = custom_position_ids

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            autocast=False,  # float32 table, gathered then cast (see call)
            initializer=self.embeddings_initializer,
        )

    def _limit(self):
        return self.input_dim**2 if self.hierarchical else self.input_dim

    def call(self, inputs, position_ids=None):
        """``position_ids`` (int [batch or 1, seq_len]) overrides the default
        ``0..seq_len-1``; cached decoding passes the absolute positions of new tokens."""
        if self.custom_position_ids:
            x, position_ids = inputs
            position_ids = ops.cast(position_ids, "int32")
        elif position_ids is not None:
            x = inputs
            position_ids = ops.cast(position_ids, "int32")
        else:
            x = inputs
            seq_len = ops.shape(x)[1]
            if isinstance(seq_len, int) and seq_len > self._limit():
                raise ValueError(
                    f"Sequence length {seq_len} exceeds the {self._limit()} positions of "
                    f"{self.name} (max_position_embeddings); truncate the input"
                )
            position_ids = ops.arange(seq_len, dtype="int32")[None]
        # The float32 table, gathered then cast (see Embedding.__init__: a bfloat16
        # scatter-add in the backward is very slow on GPUs).
        table = ops.convert_to_tensor(self.embeddings)
        if self.hierarchical:
            alpha = self.hierarchical
            base = (table - alpha * table[:1]) / (1.0 - alpha)
            u = ops.take(base, position_ids // self.input_dim, axis=0)
            v = ops.take(base, position_ids % self.input_dim, axis=0)
            pos = alpha * u + (1.0 - alpha) * v
        else:
            pos = ops.take(table, position_ids, axis=0)
        pos = ops.cast(pos, self.compute_dtype)
        if self.merge_mode == "zero":
            return ops.broadcast_to(pos, tuple(ops.shape(x)[:2]) + (self.output_dim,))
        return x + ops.cast(pos, x.dtype)

    def compute_output_spec(self, inputs, position_ids=None):
        x = inputs[0] if self.custom_position_ids else inputs
        return keras.KerasTensor(tuple(x.shape[:2]) + (self.output_dim,), dtype=x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            merge_mode=self.merge_mode,
            hierarchical=self.hierarchical,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
            custom_position_ids=self.custom_position_ids,
        )
        return config
