"""Model families and `build_transformer_model` (the bert4keras entry point)."""
import importlib
import os

from .. import config as config_lib
from ..checkpoints import find_config
from .base import (
    LMMask,
    Transformer,
    UniLMMask,
    extend_with_language_model,
    extend_with_unified_language_model,
)
from .bert import BERT, RoBERTa

# Model name -> "module:class", imported on first use so one family's imports never
# slow down or break another's.
MODELS = {
    "bert": "bert:BERT",
    "roberta": "bert:RoBERTa",
    "albert": "albert:ALBERT",
    "albert_unshared": "albert:ALBERTUnshared",
    "electra": "electra:ELECTRA",
    "nezha": "nezha:NEZHA",
    "roformer": "roformer:RoFormer",
    "roformer_v2": "roformer:RoFormerV2",
    "gau_alpha": "gau_alpha:GAUAlpha",
    "gpt": "gpt:GPT",
    "gpt2": "gpt:GPT2",
    "gpt2_ml": "gpt:GPT2ML",
    "t5": "t5:T5",
    "t5_encoder": "t5:T5Encoder",
    "t5_decoder": "t5:T5Decoder",
    "t5.1.0": "t5:T5",
    "t5.1.0_encoder": "t5:T5Encoder",
    "t5.1.0_decoder": "t5:T5Decoder",
    "t5.1.1": "t5:T5V11",
    "t5.1.1_encoder": "t5:T5V11Encoder",
    "t5.1.1_decoder": "t5:T5V11Decoder",
    "mt5.1.1": "t5:T5V11",
    "mt5.1.1_encoder": "t5:T5V11Encoder",
    "mt5.1.1_decoder": "t5:T5V11Decoder",
}


def _resolve(name):
    module_name, class_name = MODELS[name].split(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, class_name)
    except (ImportError, AttributeError):
        raise ValueError(
            f"Model {name!r} is not available in this version of kerasformer"
        ) from None

APPLICATIONS = ("encoder", "lm", "unilm")

_BUILD_ARGUMENTS = (
    "layer_norm_cond",
    "layer_norm_cond_hidden_size",
    "layer_norm_cond_hidden_act",
    "additional_input_layers",
)


def get_model_class(model):
    """The builder class for a model name (case-insensitive) or a Transformer subclass.

    Raises:
        ValueError: for an unknown name, listing the known ones.
        TypeError: for anything that is neither a name nor a Transformer subclass.
    """
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise ValueError(f"Unknown model {model!r}; known models: {sorted(MODELS)}")
        return _resolve(key)
    if isinstance(model, type) and issubclass(model, Transformer):
        return model
    raise TypeError(f"model must be a model name or a Transformer subclass, got {model!r}")


def build_transformer_model(config_path=None, checkpoint_path=None, model="bert",
                            application="encoder", return_keras_model=True, **kwargs):
    """Build a pretrained Transformer as a `keras.Model` (bert4keras's entry point).

    Args:
        config_path: a bert4keras-style JSON (``bert_config.json``) or a Hugging Face
            ``config.json`` (or a directory holding one). None: looked up next to
            `checkpoint_path`, else everything comes from `kwargs`.
        checkpoint_path: a Google/bert4keras TF checkpoint prefix, a ``.safetensors``
            file, a sharded ``*.index.json``, a ``pytorch_model.bin`` or a directory
            holding one; the format is detected. None: random initialisation.
        model: a name from ``kerasformer.models.MODELS`` or a Transformer subclass.
        application: ``"encoder"`` (bidirectional), ``"lm"`` (causal mask) or
            ``"unilm"`` (UniLM seq2seq mask from segment ids); the last two turn the
            MLM head on by default, as bert4keras does.
        return_keras_model: return the `keras.Model` (True) or the builder object
            (``.model``, ``.layers``, ``.apply``, weight loading/saving, generation).
        **kwargs: override config entries (Hugging Face names such as
            ``max_position_embeddings`` are accepted) or set builder options
            (``with_pool``, ``with_mlm``, ``keep_tokens``, ``layer_norm_cond``...).

    Raises:
        TypeError: for a keyword argument no part of the model consumes (named).
        ValueError: unknown model/application, or a checkpoint that does not match
            (every missing / unexpected / wrong-shape tensor listed).
        FileNotFoundError: for a config or checkpoint path that holds nothing usable.
    """
    klass = get_model_class(model)
    application = str(application).lower()
    if application not in APPLICATIONS:
        raise ValueError(f"Unknown application {application!r}; use one of {APPLICATIONS}")
    if application == "lm":
        klass = extend_with_language_model(klass)
    elif application == "unilm":
        klass = extend_with_unified_language_model(klass)

    accepted = config_lib.accepted_arguments(klass) | set(_BUILD_ARGUMENTS)
    if checkpoint_path is not None:
        # Fail before building (and before a missing config turns this into a
        # confusing "missing vocab_size" TypeError): name the path that is not there.
        path = os.path.expanduser(os.fspath(checkpoint_path))
        if not (os.path.exists(path) or os.path.exists(path + ".index")):
            raise FileNotFoundError(f"No checkpoint at {path}: it does not exist")
    if config_path is None and checkpoint_path is not None:
        config_path = find_config(checkpoint_path)
    configs = {}
    if config_path is not None:
        from_file = config_lib.read_config_file(os.fspath(config_path))
        configs.update({k: v for k, v in from_file.items() if k in accepted})
    user = config_lib.translate(kwargs)
    unknown = sorted(k for k in kwargs if config_lib.ALIASES.get(k, k) not in accepted)
    if unknown:
        raise TypeError(
            f"build_transformer_model() got unexpected keyword argument(s) {unknown} "
            f"for model {klass.__name__}"
        )
    configs.update(user)
    build_kwargs = {k: configs.pop(k) for k in _BUILD_ARGUMENTS if k in configs}
    try:
        transformer = klass(**configs)
    except TypeError as e:
        raise TypeError(f"Cannot build {klass.__name__} from the config: {e}") from None
    transformer.build(**build_kwargs)
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(os.fspath(checkpoint_path))
    return transformer.model if return_keras_model else transformer


__all__ = [
    "BERT",
    "LMMask",
    "MODELS",
    "RoBERTa",
    "Transformer",
    "UniLMMask",
    "build_transformer_model",
    "extend_with_language_model",
    "extend_with_unified_language_model",
    "get_model_class",
]
