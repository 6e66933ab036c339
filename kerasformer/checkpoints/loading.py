"""Name-keyed loading and saving of checkpoints into a built Transformer.

A family declares its names as data: a list of :class:`TensorMap` rows, each tying one
Keras weight path to its Google/bert4keras TF name and its Hugging Face name (with the
layout change between them). This module matches a checkpoint against those rows, reports
every problem at once, and writes the rows back out in either vocabulary.
"""
import dataclasses
import re
import warnings
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .readers import is_bookkeeping, open_checkpoint

@dataclasses.dataclass
class TensorMap:
    """One weight's names.

    Attributes:
        keras: the Keras weight path, e.g. ``Transformer-0-MultiHeadSelfAttention/q_dense/kernel``.
        google: the Google/bert4keras TF checkpoint name (None: not in that format).
        hf: the Hugging Face name without the base-model prefix, or a tuple of
            alternatives tried in order (first one is used when saving).
        google_transpose / hf_transpose: the tensor is stored transposed relative to the
            Keras layout (Dense kernels are [in, out] in Keras and TF, [out, in] in torch).
        hf_load / hf_save: extra array transforms for the HF format (e.g. RoBERTa's
            position-table offset).
        vocab: rows are indexed by token id, so ``keep_tokens`` / ``compound_tokens`` apply.
        hf_fused: the HF tensor is several Keras weights concatenated on the last axis
            (GPT-2's ``c_attn`` = q|k|v); each row's ``hf_load`` slices its part, and
            saving concatenates the rows sharing the name in row order.
    """

    keras: str
    google: Optional[str] = None
    hf: Union[str, Sequence[str], None] = None
    google_transpose: bool = False
    hf_transpose: bool = False
    hf_load: Optional[Callable] = None
    hf_save: Optional[Callable] = None
    vocab: bool = False
    hf_fused: bool = False

    def hf_names(self):
        if self.hf is None:
            return ()
        return (self.hf,) if isinstance(self.hf, str) else tuple(self.hf)


def _hf_candidates(name, prefixes):
    """Names under which an HF checkpoint may store `name`: with or without the
    base-model prefix, and with LayerNorm's `weight/bias` or legacy `gamma/beta`."""
    stems = [name]
    if "LayerNorm" in name or "layer_norm" in name or "ln_" in name:
        if name.endswith(".weight"):
            stems.append(name[: -len(".weight")] + ".gamma")
        elif name.endswith(".bias"):
            stems.append(name[: -len(".bias")] + ".beta")
    out = []
    for stem in stems:
        out.append(stem)
        out.extend(prefix + stem for prefix in prefixes)
    return out


class _Resolver:
    """Finds each row's tensor in one checkpoint, in the naming convention it uses."""

    def __init__(self, reader, rows, hf_prefixes, ignore=()):
        self.reader = reader
        self.ignore = [re.compile(p) for p in ignore]
        self.rows = rows
        self.hf_prefixes = tuple(hf_prefixes)
        names = set(reader.names())
        google_hits = sum(1 for r in rows if r.google and r.google in names)
        hf_hits = sum(1 for r in rows if self._find_hf(r, names))
        self.convention = "google" if google_hits >= hf_hits and google_hits else "hf"
        self.names = names

    def _find_hf(self, row, names):
        for alternative in row.hf_names():
            for candidate in _hf_candidates(alternative, self.hf_prefixes):
                if candidate in names:
                    return candidate
        return None

    def find(self, row):
        if self.convention == "google":
            return row.google if row.google in self.names else None
        return self._find_hf(row, self.names)

    def expected_name(self, row):
        if self.convention == "google":
            return row.google
        names = row.hf_names()
        return names[0] if names else None

    def known(self, name):
        """Whether `name` is one of the family's tensors in this convention."""
        if is_bookkeeping(name) or any(p.search(name) for p in self.ignore):
            return True
        return name in self._known_names()

    def _known_names(self):
        if not hasattr(self, "_known"):
            known = set()
            for row in self.rows:
                if self.convention == "google":
                    if row.google:
                        known.add(row.google)
                else:
                    for alternative in row.hf_names():
                        known.update(_hf_candidates(alternative, self.hf_prefixes))
            self._known = known
        return self._known


def _to_keras_layout(row, array, convention, transformer):
    if convention == "google":
        if row.google_transpose:
            array = array.T
    else:
        if row.hf_transpose:
            array = array.T
        if row.hf_load is not None:
            array = row.hf_load(array)
    if row.vocab:
        array = _apply_vocab_edits(array, transformer.keep_tokens, transformer.compound_tokens)
    return array


def _apply_vocab_edits(array, keep_tokens, compound_tokens):
    """Rows for a shrunk (`keep_tokens`) and/or extended (`compound_tokens`) vocabulary:
    kept rows in new-id order, then one row per compound token = mean of its parts."""
    full = array
    if keep_tokens is not None:
        array = full[np.asarray(keep_tokens, dtype=np.int64)]
    if compound_tokens:
        extra = [full[np.asarray(ids, dtype=np.int64)].mean(axis=0) for ids in compound_tokens]
        array = np.concatenate([array, np.stack(extra).astype(array.dtype)], axis=0)
    return array


def _weights_by_path(model):
    weights = {}
    for variable in model.weights:
        weights.setdefault(variable.path, variable)
    return weights


def load_checkpoint_into(transformer, checkpoint_path, ignore_invalid_weights=False):
    """Load `checkpoint_path` into `transformer.model` by name (see
    `Transformer.load_weights_from_checkpoint`). Returns a dict with the lists
    ``loaded``, ``missing``, ``mismatched`` and ``unexpected``."""
    model = transformer.model
    weights = _weights_by_path(model)
    prefix = transformer.prefix
    rows = [dataclasses.replace(r, keras=prefix + r.keras) for r in transformer.variable_mapping()]
    with open_checkpoint(checkpoint_path) as reader:
        resolver = _Resolver(reader, rows, getattr(transformer, "hf_prefixes", ()),
                             getattr(transformer, "checkpoint_ignore", ()))
        loaded, missing, mismatched, assignments, consumed = [], [], [], [], set()
        non_finite = []
        for row in rows:
            variable = weights.get(row.keras)
            if variable is None:
                continue  # a head this model was not built with
            name = resolver.find(row)
            if name is None:
                missing.append(
                    f"{resolver.expected_name(row)} -> {row.keras} {tuple(variable.shape)}"
                )
                continue
            consumed.add(name)
            array = _to_keras_layout(row, reader.get(name), resolver.convention, transformer)
            if tuple(array.shape) != tuple(variable.shape):
                mismatched.append(
                    f"{name}: checkpoint {tuple(array.shape)} vs model {tuple(variable.shape)}"
                    f" ({row.keras})"
                )
                continue
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                non_finite.append(name)
            assignments.append((variable, array))
            loaded.append(row.keras)
        if non_finite:
            # Real weights are finite: NaN/Inf means corrupted bytes (or a diverged
            # run) and would only surface later as NaN outputs.
            raise ValueError(
                f"Checkpoint {reader.path} holds NaN or Inf values in "
                f"{len(non_finite)} tensor(s): {', '.join(non_finite[:20])}"
                + (" ..." if len(non_finite) > 20 else "")
                + "; the file is corrupt (or saved from a diverged run); nothing was loaded"
            )
        unexpected = sorted(n for n in reader.names() if n not in consumed and not resolver.known(n))
        message = ""
        if missing or mismatched or unexpected:
            message = _report(reader, resolver.convention, missing, mismatched, unexpected)
            if not ignore_invalid_weights:
                raise ValueError(
                    message + "\nPass ignore_invalid_weights=True to load the matching "
                    "tensors anyway."
                )
            warnings.warn(message, stacklevel=3)
        if not assignments:
            raise ValueError(
                f"No tensor of {reader.path} matches the model; is it a checkpoint of "
                f"this family ({type(transformer).__name__})?\n" + message
            )
        for variable, array in assignments:
            variable.assign(array.astype(np.dtype(variable.dtype)))
    return dict(loaded=loaded, missing=missing, mismatched=mismatched, unexpected=unexpected)


def _report(reader, convention, missing, mismatched, unexpected):
    naming = "Google TF" if convention == "google" else "Hugging Face"
    lines = [f"Checkpoint {reader.path} ({reader.format}, {naming} names) does not match "
             f"the model:"]
    for title, items in (("missing", missing), ("wrong shape", mismatched),
                         ("unexpected", unexpected)):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items)
    return "\n".join(lines)


def checkpoint_tensors(transformer, format="tf"):
    """The model's weights as ``{checkpoint name: numpy array}`` in `format`
    (``"tf"``: Google names and layout; ``"hf"``: Hugging Face names and layout).

    Layers with LoRA enabled (:mod:`kerasformer.lora`) contribute their merged weight
    ``W + (alpha / rank) * A @ B`` (the model itself is not changed); the A/B matrices
    are not written (``lora.save_lora_weights`` saves them separately)."""
    if format not in ("tf", "hf"):
        raise ValueError(f"format must be 'tf' or 'hf', got {format!r}")
    weights = _weights_by_path(transformer.model)
    rows = [dataclasses.replace(r, keras=transformer.prefix + r.keras)
            for r in transformer.variable_mapping()]
    hf_prefix = transformer.hf_save_prefix() if hasattr(transformer, "hf_save_prefix") else ""
    from ..lora import lora_merged_weights

    # With LoRA enabled, the stored kernel is the frozen base: write W + (alpha/r) A B,
    # what the model computes (as Keras's own save_weights does).
    merged = lora_merged_weights(transformer.model)
    tensors = {}
    for row in rows:
        variable = weights.get(row.keras)
        if variable is None:
            continue
        array = merged[row.keras] if row.keras in merged else np.asarray(variable.numpy())
        if format == "tf":
            if row.google is None:
                raise ValueError(f"{row.keras} has no Google TF checkpoint name")
            tensors[row.google] = array.T if row.google_transpose else array
        else:
            names = row.hf_names()
            if not names:
                raise ValueError(f"{row.keras} has no Hugging Face checkpoint name")
            if row.hf_save is not None:
                array = row.hf_save(array)
            array = array.T if row.hf_transpose else array
            name = names[0]
            top_level = getattr(transformer, "hf_top_level", ())
            if not any(name.startswith(t) for t in top_level):
                name = hf_prefix + name
            if row.hf_fused and name in tensors:
                array = np.concatenate([tensors[name], array], axis=-1)
            tensors[name] = np.require(array, requirements="C")
    return tensors


def save_checkpoint_from(transformer, path, format="tf"):
    """Write `transformer`'s weights to a Google TF checkpoint prefix (``format="tf"``)
    or a Hugging Face ``.safetensors`` file (``format="hf"``). Returns the path."""
    from .writers import save_safetensors, save_tf_checkpoint

    tensors = checkpoint_tensors(transformer, format)
    if format == "tf":
        save_tf_checkpoint(tensors, path)
    else:
        save_safetensors(tensors, path)
    return path
