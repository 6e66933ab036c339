"""The ``kerasformer`` command: inspect and convert checkpoints.

``kerasformer info PATH [--all]``
    Format, naming convention, family guess, heads, tensor names and shapes, parameter
    count of a checkpoint (Google TF prefix, ``.safetensors``, sharded index, torch
    ``.bin``, a directory holding one, or a Keras ``.weights.h5`` of a kerasformer model).

``kerasformer convert SRC DST [--model NAME] [--config CONFIG] [--heads auto|none|LIST]
[--set KEY=VALUE ...]``
    Build the model with ``build_transformer_model`` from the config (``--config``, else
    the ``config.json`` / ``bert_config.json`` next to SRC; a copy is written next to DST
    when that folder has none; a *different* config already there is an error unless
    ``--overwrite-config``), with the heads SRC has weights for (``--heads auto``:
    one-layer probe builds), load SRC into it by name, write DST. The format of DST
    follows its name: ``*.safetensors`` -> Hugging Face names, ``*.weights.h5`` -> Keras
    weights of the built model, anything else (no extension, ``.ckpt``) -> a Google TF
    checkpoint prefix. Values pass through float32 unchanged (float16/bfloat16 sources
    are widened to float32), so chains of conversions are bitwise lossless for float32
    checkpoints, except for what a family deliberately does not keep (RoBERTa's two
    unused position-offset rows come back as zeros; Hugging Face RoFormer's sinusoidal
    buffer is not written).

``kerasformer list``
    The names of ``pretrained_configs/`` (usable as ``--config NAME``).

:func:`main` takes ``argv`` and returns the exit code (0 ok, 1 error, 2 usage), so it is
callable from Python and tests; every error is printed as one ``error: ...`` message on
stderr, never a traceback (``--debug`` or ``KERASFORMER_DEBUG=1`` re-raises). Every file
is written through a temporary file and renamed into place (:mod:`kerasformer.io_utils`):
a failed write leaves the previous file byte-identical.
"""
import argparse
import contextlib
import io
import json
import os
import re
import sys
import warnings

from .checkpoints.readers import is_bookkeeping
from .checkpoints.writers import save_keras_weights
from .io_utils import atomic_write_bytes

# Copies of a tied matrix that some formats store twice (torch state dicts): alias -> the
# tensors it may duplicate. Counted once when the values are equal.
_TIED_ALIASES = (
    (re.compile(r"(^|\.)(predictions|lm_head)\.decoder\.weight$"),
     re.compile(r"word_embeddings(\.weight)?$")),
    (re.compile(r"^lm_head\.weight$"),
     re.compile(r"(wte|tokens_embed|word_embeddings|shared|embed_tokens)\.weight$")),
    (re.compile(r"(^|\.)(en|de)coder\.embed_tokens\.weight$"), re.compile(r"^shared\.weight$")),
)
_HEAD_OPTIONS = ("with_pool", "with_nsp", "with_mlm", "with_discriminator", "with_lm")
# Hugging Face `model_type` -> kerasformer model name.
_HF_MODEL_TYPES = {
    "bert": "bert", "roberta": "roberta", "albert": "albert", "electra": "electra",
    "nezha": "nezha", "roformer": "roformer", "gpt2": "gpt2", "openai-gpt": "gpt",
    "mt5": "mt5.1.1",
}
_NOT_TF_PREFIX = (".bin", ".pt", ".pth", ".json", ".h5", ".keras", ".npz", ".npy", ".onnx",
                  ".pb", ".txt", ".zip", ".tar", ".gz", ".msgpack")
_SHOWN = 30


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 1."""


# ============================================================================ reading


def open_any(path):
    """A reader for `path`: any format :func:`kerasformer.checkpoints.open_checkpoint`
    detects, or a Keras ``.weights.h5`` (:class:`~kerasformer.checkpoints.KerasWeightsReader`).

    Raises:
        CLIError: for a path that is not there or a format nothing reads.
    """
    from .checkpoints import KerasWeightsReader, open_checkpoint

    try:
        if os.fspath(path).lower().endswith(".h5"):
            return KerasWeightsReader(path)
        return open_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None


# ============================================================================ guessing


def naming_convention(names):
    """``"google"`` (TF checkpoint names with ``/``) or ``"hf"`` (dotted names)."""
    slashes = sum("/" in n for n in names)
    return "google" if slashes > len(names) / 2 else "hf"


def guess_family(names, shapes=None):
    """A guess of the model family from tensor names: ``(model name or None, reason)``.

    The model name is one to pass as ``--model`` / ``build_transformer_model(model=...)``;
    None when the names do not tell (the reason says what it might be).
    """
    shapes = shapes or {}
    joined = "\n".join(names)

    def has(pattern):
        return re.search(pattern, joined, re.MULTILINE) is not None

    if has(r"^newslm/"):
        return "gpt2_ml", "gpt2-ml names (newslm/...)"
    if has(r"^(shared/embedding|shared\.weight)$") or \
            has(r"SelfAttention[./]relative_attention_bias"):
        gated = has(r"DenseReluDense[./]wi_0")
        vocab = next((s[0] for n, s in shapes.items()
                      if n in ("shared/embedding", "shared.weight")), None)
        if not gated:
            return "t5", "T5 names with a relu FFN (DenseReluDense/wi): T5 v1.0"
        if vocab == 250112:
            return "mt5.1.1", ("T5 names with a gated FFN (wi_0/wi_1) and mT5's 250112-token "
                               "vocabulary")
        return "t5.1.1", "T5 names with a gated FFN (wi_0/wi_1): T5 v1.1"
    if has(r"(^|\.)h\.\d+\.attn\.c_attn\.weight$") and has(r"(^|\.)wte\.weight$"):
        return "gpt2", "Hugging Face GPT-2 names (wte, h.N.attn.c_attn)"
    if has(r"(^|\.)tokens_embed\.weight$"):
        return "gpt", "Hugging Face OpenAI GPT names (tokens_embed, h.N)"
    if has(r"^gpt/"):
        if has(r"^gpt/output/LayerNorm") or has(r"^gpt/transformer/ln_f"):
            return "gpt2", "bert4keras GPT-2 names (gpt/... with a final LayerNorm)"
        return "gpt", "bert4keras GPT names (gpt/...)"
    if has(r"^electra/") or has(r"(^|\.)electra\.") or has(r"^discriminator_predictions"):
        return "electra", "ELECTRA names (electra/..., discriminator_predictions)"
    if has(r"transformer/group_0/") or has(r"albert_layer_groups") or has(r"layer_shared/"):
        return "albert", ("ALBERT names (one shared block: group_0 / albert_layer_groups / "
                          "layer_shared)")
    if has(r"(^|\.)nezha\."):
        return "nezha", "Hugging Face NEZHA names (nezha.*)"
    if has(r"(^|\.)roformer\."):
        return "roformer", "Hugging Face RoFormer names (roformer.*)"
    if has(r"(^|\.)roberta\.") or has(r"^lm_head\.layer_norm"):
        return "roberta", "Hugging Face RoBERTa names (roberta.*, lm_head)"
    if has(r"^bert/encoder/layer_\d+/gau/") or has(r"/gau/i_dense"):
        return "gau_alpha", "GAU-alpha names (bert/encoder/layer_N/gau/...)"
    if has(r"^bert/encoder/layer_\d+/"):
        if not has(r"LayerNorm/gamma$") and not has(r"/bias$"):
            return "roformer_v2", "BERT names without biases or LayerNorm weights (RoFormer-V2)"
        if not has(r"^bert/embeddings/position_embeddings$"):
            vocab = shapes.get("bert/embeddings/word_embeddings", (None,))[0]
            return None, ("BERT names without a position table: NEZHA (relative positions; "
                          f"21128-token vocabulary) or RoFormer (rotary); this one has "
                          f"{vocab} tokens — pass --model nezha or --model roformer")
        return "bert", "Google BERT names (bert/...)"
    if has(r"(^|\.)encoder\.layer\.\d+\.attention\.self\.query\.weight$"):
        return "bert", "Hugging Face BERT names (encoder.layer.N...)"
    if has(r"^Transformer-\d+-|^Encoder-Transformer-|^Embedding-Token/"):
        return None, "kerasformer Keras layer names (the config tells the family)"
    return None, "no known naming pattern"


def detected_heads(names):
    """Heads present in a checkpoint, from well-known head names (display only)."""
    found = []
    patterns = (
        ("pooler", r"(^|[/.])pooler[/.]|^Pooler-Dense/"),
        ("nsp", r"seq_relationship|^NSP-Proba/"),
        ("mlm", r"(^|[/.])(predictions|lm_head)[/.](transform|dense|bias|layer_norm)"
                r"|^cls/predictions|generator_(predictions|lm_head)|Output-MLM|^MLM-"),
        ("discriminator", r"discriminator_predictions"),
        ("lm", r"^(decoder/logits|lm_head\.weight)"),
    )
    joined = "\n".join(names)
    for head, pattern in patterns:
        if re.search(pattern, joined, re.MULTILINE):
            found.append(head)
    return found


def _tied_copies(reader, names):
    """Names of tensors that are exact copies of a tied matrix stored elsewhere."""
    import numpy as np

    copies = []
    for alias, target in _TIED_ALIASES:
        for name in names:
            if not alias.search(name):
                continue
            for other in names:
                if other != name and target.search(other) and other not in copies \
                        and reader.shape(other) == reader.shape(name):
                    if np.array_equal(reader.get(other), reader.get(name)):
                        copies.append(name)
                        break
    return copies


# ============================================================================ info


def info(path, show_all=False, out=None):
    """Print what is in the checkpoint at `path` (see the module docstring) to `out`
    (default stdout); returns a dict with ``format``, ``family``, ``parameters``,
    ``tensors``."""
    out = out or sys.stdout
    with open_any(path) as reader:
        names = reader.names()
        shapes = {n: tuple(reader.shape(n)) for n in names}
        bookkeeping = [n for n in names if is_bookkeeping(n)]
        weights = [n for n in names if n not in set(bookkeeping)]
        tied = _tied_copies(reader, weights)
        counted = [n for n in weights if n not in set(tied)]
        total = sum(_size(shapes[n]) for n in counted)
        fmt = reader.format
        where = reader.path
    if fmt == "keras":
        convention = "Keras layer names"
        family, reason = guess_family(names, shapes)
    else:
        convention = "Google TF names" if naming_convention(weights) == "google" else \
            "Hugging Face names"
        family, reason = guess_family(weights, shapes)
    heads = detected_heads(weights)
    print(f"path:        {where}", file=out)
    print(f"format:      {_FORMAT_NAMES.get(fmt, fmt)} ({convention})", file=out)
    print(f"family:      {family or 'unknown'} ({reason})", file=out)
    print(f"heads:       {', '.join(heads) if heads else 'none found'}", file=out)
    print(f"tensors:     {len(names)}", file=out)
    print(f"parameters:  {total:,}", file=out)
    if bookkeeping:
        print(f"not counted: {len(bookkeeping)} bookkeeping tensors (optimizer slots, "
              f"global_step, buffers)", file=out)
    if tied:
        print(f"not counted: {len(tied)} tied copies ({', '.join(tied)})", file=out)
    shown = names if show_all else names[:_SHOWN]
    width = max((len(n) for n in shown), default=0)
    print("", file=out)
    for n in shown:
        print(f"  {n:<{width}}  {shapes[n]}", file=out)
    if len(shown) < len(names):
        print(f"  ... {len(names) - len(shown)} more (--all lists every tensor)", file=out)
    return dict(format=fmt, family=family, parameters=total, tensors=len(names))


_FORMAT_NAMES = {"tf": "tensorflow checkpoint", "safetensors": "safetensors",
                 "torch": "pytorch state dict", "keras": "keras .weights.h5"}


def _size(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ============================================================================ convert


def destination_format(dst):
    """``"hf"``, ``"keras"`` or ``"tf"`` from the name of `dst`.

    Raises:
        CLIError: for a name whose extension is none of these (``.bin``, ``.h5``
            without ``.weights``, ``.json``...).
    """
    lower = os.fspath(dst).lower()
    if lower.endswith(".safetensors"):
        return "hf"
    if lower.endswith(".weights.h5"):
        return "keras"
    ext = os.path.splitext(lower)[1]
    if ext in _NOT_TF_PREFIX or ext == ".index":
        raise CLIError(
            f"Cannot tell the output format of {dst}: use a name ending in .safetensors "
            "(Hugging Face), .weights.h5 (Keras weights) or a TF checkpoint prefix without "
            "extension (e.g. out/bert_model.ckpt)"
        )
    return "tf"


def resolve_config(config, src):
    """Path of the config to build from: `config` (a file, a folder, or the name of a
    pretrained config) or else the ``config.json`` / ``bert_config.json`` next to `src`.

    Raises:
        CLIError: when no config is given and none lies next to `src`, or `config` is
            neither a path nor a pretrained config name.
    """
    from .checkpoints import find_config

    if config is not None:
        if os.path.exists(config):
            return config
        from .pretrained import pretrained_config_path

        try:
            return pretrained_config_path(config)
        except (ValueError, FileNotFoundError) as e:
            raise CLIError(f"--config {config!r} is neither a file nor a pretrained config: "
                           f"{e}") from None
    found = find_config(src)
    if found is None:
        raise CLIError(
            f"No config.json or bert_config.json next to {src}; pass --config (a config "
            "file, or a name from `kerasformer list`)"
        )
    return found


def resolve_model(model, config_path, reader):
    """The model name: `model`, else the config's ``model`` key (pretrained configs),
    else its Hugging Face ``model_type``, else a guess from the tensor names."""
    if model:
        return model
    raw = _raw_config(config_path)
    if isinstance(raw.get("model"), str):
        return raw["model"]
    model_type = str(raw.get("model_type", "")).lower()
    if model_type == "t5":
        proj = str(raw.get("feed_forward_proj", "relu"))
        return "t5.1.1" if proj.startswith("gated") else "t5"
    if model_type in _HF_MODEL_TYPES:
        return _HF_MODEL_TYPES[model_type]
    names = reader.names()
    family, reason = guess_family(names, {n: tuple(reader.shape(n)) for n in names})
    if family is None:
        raise CLIError(f"Cannot tell the model family ({reason}); pass --model")
    return family


def _layers_with_weights(model):
    return {w.path.split("/", 1)[0] for w in model.weights}


def _build(config_path, model, overrides):
    from .models import build_transformer_model

    return build_transformer_model(
        config_path=config_path, model=model, return_keras_model=False, **overrides
    )


def _quiet():
    """Silence warnings and stdout chatter of probe builds/loads."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def choose_heads(config_path, model, src, reader, heads="auto", options=None):
    """The head options to build with so that the model holds exactly the source's
    weights.

    Args:
        heads: ``"auto"`` (probe: build the one-layer model with each head the family
            accepts and keep those whose layers all have weights in `src`), ``"none"``,
            or a comma-separated list of options (``with_pool,with_mlm``).
        options: other builder keyword arguments (``--set``), used by the probes too.

    Returns:
        dict option -> True/False.
    """
    from . import config as config_lib
    from .models import get_model_class

    options = dict(options or {})
    klass = get_model_class(model)
    accepted = config_lib.accepted_arguments(klass)
    head_options = [h for h in _HEAD_OPTIONS if h in accepted]
    if heads != "auto":
        wanted = [] if heads == "none" else [h.strip() for h in heads.split(",") if h.strip()]
        unknown = [h for h in wanted if h not in head_options]
        if unknown:
            raise CLIError(f"--heads {unknown} not accepted by {klass.__name__}; "
                           f"its head options are {head_options}")
        return {h: (h in wanted) for h in head_options}
    if not head_options:
        return {}
    small = {"num_hidden_layers": 1}
    if "num_decoder_layers" in accepted:
        small["num_decoder_layers"] = 1
    small.update(options)
    extra = _head_layers(config_path, model, tuple(head_options), small)
    with _quiet():
        if reader.format == "keras":
            available = reader.layers_with_weights()
        else:
            probe = _build(config_path, model, {**small, **{h: True for h in extra}})
            try:
                report = probe.load_weights_from_checkpoint(src, ignore_invalid_weights=True)
            except ValueError:
                report = {"loaded": []}
            available = {p.split("/", 1)[0] for p in report["loaded"]}
    return {h: bool(extra.get(h)) and extra[h] <= available for h in head_options}


_HEAD_LAYERS = {}


def _head_layers(config_path, model, options, small):
    """``{head option: names of the layers with weights it adds}`` for the heads the
    family builds (one-layer probe builds with the kwargs `small`; cached per config
    content, model and kwargs)."""
    with open(_config_file(config_path), "rb") as f:
        key = (f.read(), model, options, json.dumps(small, sort_keys=True, default=str))
    if key not in _HEAD_LAYERS:
        off = {h: False for h in options}
        with _quiet():
            base = _layers_with_weights(_build(config_path, model, {**small, **off}).model)
            extra = {}
            for h in options:
                try:
                    built = _build(config_path, model, {**small, **off, h: True})
                except (TypeError, ValueError, NotImplementedError):
                    continue  # the family refuses this head
                extra[h] = _layers_with_weights(built.model) - base
        _HEAD_LAYERS[key] = extra
    return _HEAD_LAYERS[key]


def _config_file(config_path):
    from . import config as config_lib

    try:
        return config_lib.config_file(config_path)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None


def _raw_config(config_path):
    from . import config as config_lib

    try:
        return config_lib.read_raw_config(config_path)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None


def _expected_h5_layer_paths(model):
    """``{h5 group path: layer name}`` as Keras names the layer groups of `model` in a
    ``.weights.h5`` file (snake-case class name, ``_1``, ``_2``... for repeats)."""
    used, paths = {}, {}
    for layer in model.layers:
        name = re.sub(r"\W+", "", type(layer).__name__)
        name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
        name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        paths[f"layers/{name}"] = layer.name
    return paths


def _check_keras_weights_match(model, reader):
    """Keras restores ``.weights.h5`` by layer position and class, not by name: make sure
    every layer of `model` meets the layer of the same name in the file."""
    expected = _expected_h5_layer_paths(model)
    with_weights = _layers_with_weights(model)
    wrong = []
    for path, name in expected.items():
        stored = reader.layer_paths.get(path)
        if name in with_weights and stored != name:
            wrong.append(f"{path}: file holds {stored!r}, model expects {name!r}")
    missing = sorted(with_weights - reader.layers_with_weights())
    unexpected = sorted(reader.layers_with_weights() - with_weights)
    if wrong or missing or unexpected:
        lines = [f"{reader.path} does not match the model built from the config:"]
        lines += [f"  missing layers: {missing}"] if missing else []
        lines += [f"  unexpected layers: {unexpected}"] if unexpected else []
        lines += [f"  {w}" for w in wrong[:20]]
        raise CLIError("\n".join(lines))


def convert(src, dst, model=None, config=None, heads="auto", options=None, out=None,
            overwrite_config=False):
    """Convert the checkpoint `src` into `dst` (see the module docstring).

    Args:
        src / dst: paths; model: family name or None (guessed); config: config path,
            folder or pretrained config name, or None (next to `src`); heads: see
            :func:`choose_heads`; options: extra ``build_transformer_model`` kwargs;
            overwrite_config: replace a different ``config.json`` / ``bert_config.json``
            already in the folder of `dst` (else that is an error, raised before
            anything is written).

    Returns:
        dict with ``model``, ``heads`` (the options built with), ``format`` of `dst`,
        ``parameters`` (of the built model).

    Raises:
        CLIError: unknown destination extension, missing config, a different config
            already next to `dst`, family not guessable, a checkpoint that does not
            match (every mismatched tensor listed), a destination that cannot be
            written (the previous file there is then left byte-identical).
    """
    out = out or sys.stdout
    dst_format = destination_format(dst)
    config_path = resolve_config(config, src)
    folder = os.path.dirname(os.path.abspath(dst))
    config_target = _config_to_write(config_path, folder, overwrite_config)
    with open_any(src) as reader:
        model = resolve_model(model, config_path, reader)
        try:
            chosen = choose_heads(config_path, model, src, reader, heads, options)
            with _quiet():
                transformer = _build(config_path, model, {**chosen, **(options or {})})
        except (TypeError, ValueError) as e:
            raise CLIError(f"Cannot build model {model!r} from {config_path}: {e}") from None
        keras_model = transformer.model
        if reader.format == "keras":
            _check_keras_weights_match(keras_model, reader)
            reader.close()
            keras_model.load_weights(src)
        else:
            try:
                transformer.load_weights_from_checkpoint(src)
            except ValueError as e:
                raise CLIError(str(e)) from None
    try:
        if dst_format == "keras":
            save_keras_weights(keras_model, dst)
        else:
            transformer.save_weights_as_checkpoint(dst, format=dst_format)
    except (ValueError, OSError) as e:
        raise CLIError(f"Cannot write {dst}: {_one_line(e)}") from None
    wrote_config = None
    if config_target is not None:
        with open(_config_file(config_path), "rb") as f:
            atomic_write_bytes(config_target, f.read())
        wrote_config = config_target
    parameters = sum(_size(w.shape) for w in keras_model.weights)
    on = [h for h, v in chosen.items() if v]
    names = {"hf": "safetensors (Hugging Face names)", "tf": "TF checkpoint (Google names)",
             "keras": "Keras .weights.h5"}
    print(f"converted {src} -> {dst}", file=out)
    print(f"  model {model}, heads: {', '.join(on) if on else 'none'}; "
          f"{parameters:,} parameters; written as {names[dst_format]}", file=out)
    if wrote_config:
        print(f"  wrote {wrote_config}", file=out)
    return dict(model=model, heads=chosen, format=dst_format, parameters=parameters)


def _config_to_write(config_path, folder, overwrite=False):
    """Where to copy the config next to the output (``folder/config.json``), or None
    when the folder already holds the same config.

    A folder holding a *different* config is refused (the weights would be loaded with
    the stale config next to them) unless `overwrite`, which writes ``config.json``
    (found before ``bert_config.json``). Called before anything is written.

    Raises:
        CLIError: naming both files.
    """
    from .config import config_file_in

    target = os.path.join(folder, "config.json")
    existing = config_file_in(folder) if os.path.isdir(folder) else None
    if existing is None:
        return target
    source = _config_file(config_path)
    if os.path.exists(source) and os.path.samefile(existing, source):
        return None
    try:
        same = _raw_config(existing) == _raw_config(source)
    except CLIError:
        same = False  # an unreadable config there is not the one we built from
    if same:
        return None
    if overwrite:
        return target
    raise CLIError(
        f"{existing} differs from the config the model is built from ({source}); the "
        "converted weights would sit next to a stale config. Pass --overwrite-config to "
        "replace it with this one, or write to another folder"
    )


# ============================================================================ main


def _parser():
    parser = argparse.ArgumentParser(
        prog="kerasformer",
        description="Inspect and convert Transformer checkpoints (Google TF, Hugging Face "
                    "safetensors, Keras .weights.h5).",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: KERASFORMER_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="format, family guess, tensors and parameter count")
    p.add_argument("path", help="checkpoint file, TF prefix, or directory")
    p.add_argument("--all", action="store_true",
                   help=f"list every tensor (default: the first {_SHOWN})")
    p = sub.add_parser("convert", help="convert between TF checkpoint, safetensors, .weights.h5")
    p.add_argument("src", help="checkpoint to read (any format `info` reads)")
    p.add_argument("dst", help="output: *.safetensors, *.weights.h5, or a TF checkpoint prefix")
    p.add_argument("--model", help="model family (bert, roberta, albert, gpt2, t5...); "
                                    "default: from the config or the tensor names")
    p.add_argument("--config", help="config JSON (or its folder, or a pretrained config name); "
                                    "default: config.json / bert_config.json next to SRC")
    p.add_argument("--heads", default="auto",
                   help="head options to build with: auto (those SRC has weights for), none, "
                        "or a list such as with_pool,with_mlm")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra build_transformer_model argument (VALUE read as JSON when it "
                        "parses, e.g. --set shared_segment_embeddings=true); repeatable")
    p.add_argument("--overwrite-config", action="store_true",
                   help="replace a different config.json / bert_config.json already in the "
                        "folder of DST (default: refuse)")
    sub.add_parser("list", help="names of the bundled pretrained configs")
    return parser


def _parse_settings(settings):
    """``["key=value", ...]`` -> dict; values parsed as JSON when they parse."""
    options = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _one_line(error):
    """An exception as one line: its message's first line (class name if empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _message(error):
    """What `main` prints after ``error: ``. Our own errors and the readers' / loader's
    ValueErrors are written for users (a mismatch report keeps its indented list);
    anything else is shown on one line with its type."""
    if isinstance(error, (CLIError, ValueError, TypeError)):
        return str(error).strip() or type(error).__name__
    if isinstance(error, (OSError, ImportError)):
        return _one_line(error)
    return f"{type(error).__name__}: {_one_line(error)}"


def main(argv=None):
    """Run the command line `argv` (default ``sys.argv[1:]``); returns the exit code:
    0 ok, 1 error (printed as ``error: ...`` on stderr, no traceback unless
    ``--debug`` or ``KERASFORMER_DEBUG=1``), 2 usage error, 130 interrupted."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    debug = args.debug or os.environ.get("KERASFORMER_DEBUG", "") not in ("", "0")
    try:
        if args.command == "info":
            info(args.path, show_all=args.all)
        elif args.command == "convert":
            convert(args.src, args.dst, model=args.model, config=args.config, heads=args.heads,
                    options=_parse_settings(args.set), overwrite_config=args.overwrite_config)
        else:
            from .pretrained import list_pretrained_configs, load_pretrained_config

            for name in list_pretrained_configs():
                print(f"{name:<40} model={load_pretrained_config(name)['model']}")
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure is one readable message, not a traceback
        if debug:
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
