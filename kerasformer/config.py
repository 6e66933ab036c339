"""Reading model configs: bert4keras-style JSON and Hugging Face ``config.json``.

Both vocabularies map onto the builder's argument names. Keys of a config *file* that no
part of the model uses are bookkeeping (``architectures``, ``transformers_version``...)
and are dropped; keyword arguments given by the user must all be consumed.
"""
import inspect
import json
import os

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


def read_config_file(config_path):
    """Load a JSON config (a file, or a directory holding ``config.json`` /
    ``bert_config.json``) and translate its keys to builder argument names.

    Raises:
        FileNotFoundError: naming the path when no config is there.
        ValueError: when the file is not a JSON object.
    """
    if os.path.isdir(config_path):
        for name in ("config.json", "bert_config.json"):
            candidate = os.path.join(config_path, name)
            if os.path.isfile(candidate):
                config_path = candidate
                break
        else:
            raise FileNotFoundError(
                f"No config.json or bert_config.json in the directory {config_path}"
            )
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"Config file {config_path} does not exist")
    with open(config_path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Config file {config_path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"Config file {config_path} must hold a JSON object")
    return translate(raw)


def translate(raw):
    """Map a raw config dict onto builder names; canonical keys win over aliases."""
    config = {}
    for key, value in raw.items():
        target = ALIASES.get(key, key)
        if target != key and target in raw:
            continue
        config.setdefault(target, value)
    model_type = str(raw.get("model_type", "")).lower()
    if model_type in _OFFSET_POSITION_MODELS and "max_position_embeddings" in raw \
            and "max_position" not in raw:
        config["max_position"] = raw["max_position_embeddings"] - raw.get("pad_token_id", 1) - 1
    if config.get("pad_token_id") is None:
        config.pop("pad_token_id", None)
    return config


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
