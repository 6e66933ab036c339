"""Reading model configs: bert4keras-style JSON and Hugging Face ``config.json``.

Both vocabularies map onto the builder's argument names. Keys of a config *file* that no
part of the model uses are bookkeeping (``architectures``, ``transformers_version``...)
and are dropped; keyword arguments given by the user must all be consumed.
"""
import inspect
import json
import os

import numpy as np

# Hugging Face / Google names -> builder argument names.
ALIASES = {
    # BERT family
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "layer_norm_eps": "layer_norm_epsilon",
    # GPT-2
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_inner": "intermediate_size",
    "n_positions": "max_position",
    "activation_function": "hidden_act",
    "resid_pdrop": "dropout_rate",
    "attn_pdrop": "attention_dropout_rate",
    # T5
    "d_model": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "d_ff": "intermediate_size",
    "d_kv": "attention_head_size",
}

# Model types whose Hugging Face position table starts at pad_token_id + 1.
_OFFSET_POSITION_MODELS = ("roberta", "xlm-roberta", "camembert")


#: Config file names looked for in a folder, in this order (the one lookup that
#: loading, finding and the CLI share).
CONFIG_NAMES = ("config.json", "bert_config.json")


def config_file_in(folder):
    """The path of ``config.json``, else ``bert_config.json``, in `folder`, or None."""
    for name in CONFIG_NAMES:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def config_file(config_path):
    """`config_path` itself, or the config file inside it when it is a folder.

    Raises:
        FileNotFoundError: naming the path when no config is there.
    """
    config_path = os.fspath(config_path)
    if os.path.isdir(config_path):
        found = config_file_in(config_path)
        if found is None:
            raise FileNotFoundError(
                f"No config.json or bert_config.json in the directory {config_path}"
            )
        return found
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"Config file {config_path} does not exist")
    return config_path


def read_raw_config(config_path):
    """The JSON object of a config file (or of the config inside a folder), untranslated.

    Raises:
        FileNotFoundError: naming the path when no config is there.
        ValueError: naming the file when it is not UTF-8, not JSON, or not an object.
    """
    config_path = config_file(config_path)
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f"Config file {config_path} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"Config file {config_path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"Config file {config_path} must hold a JSON object")
    return raw


def read_config_file(config_path):
    """Load a JSON config (a file, or a directory holding ``config.json`` /
    ``bert_config.json``) and translate its keys to builder argument names.

    Raises:
        FileNotFoundError: naming the path when no config is there.
        ValueError: when the file is not UTF-8, not JSON, not a JSON object, or holds
            conflicting / out-of-range values (see :func:`translate`).
        TypeError: a value of the wrong type (see :func:`translate`).
    """
    raw = read_raw_config(config_path)
    return translate(raw, source=f"config file {config_file(config_path)}")


def translate(raw, source="keyword arguments"):
    """Map a raw config dict onto builder names and check the values of known keys.

    Args:
        raw: dict of config keys (either vocabulary) -> values.
        source: where `raw` comes from, for error messages.

    Raises:
        ValueError: two keys of `raw` name the same setting with different values
            (``n_embd`` and ``hidden_size``, ``max_position`` and
            ``max_position_embeddings``...: both keys named; equal values are fine);
            a size, rate or epsilon out of range (see :data:`CHECKS`).
        TypeError: a value of the wrong type (``"768"`` for ``hidden_size``).

    Keyword arguments override a config file by design; within one source there is
    no silent winner.
    """
    config, origin = {}, {}
    for key, value in raw.items():
        target = ALIASES.get(key, key)
        if target in config and not _same(config[target], value):
            raise ValueError(
                f"Conflicting {source}: {origin[target]!r}={config[target]!r} and "
                f"{key!r}={value!r} both set {target}; keep one"
            )
        config.setdefault(target, value)
        origin.setdefault(target, key)
    for target, key in origin.items():
        _check_value(key, target, config[target], source)
    model_type = str(raw.get("model_type", "")).lower()
    if model_type in _OFFSET_POSITION_MODELS and "max_position_embeddings" in raw \
            and "max_position" not in raw:
        config["max_position"] = raw["max_position_embeddings"] - raw.get("pad_token_id", 1) - 1
    if config.get("pad_token_id") is None:
        config.pop("pad_token_id", None)
    return config


def _same(a, b):
    return type(a) is type(b) and a == b or (
        _is_number(a) and _is_number(b) and a == b)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value):
    return _is_int(value) or isinstance(value, (float, np.floating))


# Builder argument -> (kind, None allowed). Kinds: "positive" int >= 1, "count" int >= 0,
# "rate" float in [0, 1), "epsilon" float > 0.
CHECKS = {
    "vocab_size": ("positive", False),
    "hidden_size": ("positive", False),
    "num_hidden_layers": ("positive", False),
    "num_attention_heads": ("positive", False),
    "intermediate_size": ("positive", True),
    "attention_head_size": ("positive", True),
    "attention_key_size": ("positive", True),
    "embedding_size": ("positive", True),
    "max_position": ("positive", True),
    "num_decoder_layers": ("positive", True),
    "num_key_value_heads": ("positive", True),
    "relative_attention_num_buckets": ("positive", True),
    "relative_attention_max_distance": ("positive", True),
    "segment_vocab_size": ("count", True),
    "dropout_rate": ("rate", True),
    "attention_dropout_rate": ("rate", True),
    "layer_norm_epsilon": ("epsilon", True),
}
_ALLOWED = {
    "positive": "an int >= 1",
    "count": "an int >= 0",
    "rate": "a float in [0, 1)",
    "epsilon": "a float > 0",
}


def _check_value(key, target, value, source):
    """Raise TypeError / ValueError naming the key, the value and the allowed range."""
    if target not in CHECKS:
        return
    kind, optional = CHECKS[target]
    if value is None and optional:
        return
    name = key if key == target else f"{key} ({target})"
    allowed = _ALLOWED[kind]
    if kind in ("positive", "count"):
        ok_type = _is_int(value)
    else:
        ok_type = _is_number(value)
    if not ok_type:
        raise TypeError(
            f"{name}={value!r} in the {source}: must be {allowed}, got "
            f"{type(value).__name__}"
        )
    ok = {
        "positive": value >= 1,
        "count": value >= 0,
        "rate": 0 <= value < 1,
        "epsilon": value > 0 and np.isfinite(value),
    }[kind]
    if not ok:
        raise ValueError(f"{name}={value!r} in the {source}: must be {allowed}")


def accepted_arguments(*callables):
    """Names of the keyword arguments of the given functions, following ``**kwargs``
    up the MRO for ``__init__`` methods of classes."""
    names = set()
    for fn in callables:
        if inspect.isclass(fn):
            for klass in fn.__mro__:
                init = klass.__dict__.get("__init__")
                if init is not None:
                    names.update(_named_parameters(init))
        else:
            names.update(_named_parameters(fn))
    return names


def _named_parameters(fn):
    return [
        p.name for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
