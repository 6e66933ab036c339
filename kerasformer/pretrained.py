"""Configs of well-known pretrained checkpoints: ``pretrained_configs/<name>.json``.

Each file is a model config in the checkpoint's own vocabulary (bert4keras / Google
``bert_config.json`` keys, or Hugging Face ``config.json`` keys), so
``build_transformer_model(config_path=pretrained_config_path(name), model=...)`` reads it
directly, plus metadata keys that no model accepts and the config reader therefore drops:

* ``model``: the name to pass as ``build_transformer_model(model=...)``;
* ``source``: where the checkpoint is published (URL);
* ``licence``: the licence the publisher states for the weights;
* ``notes``: vocabulary, ``keep_tokens`` use, checkpoint format, anything special;
* ``num_parameters``: ``count`` (what the builder creates with the options in
  ``counted_with``), the ``published`` figure with its ``source``, and the ``tolerance``
  between the two (with the reason when they differ by more than rounding).

The files live in ``pretrained_configs/`` of the source checkout (they are data, not
code); set ``KERASFORMER_PRETRAINED_CONFIGS`` to a folder to use another copy.

Importing this module does not import Keras.
"""
import difflib
import json
import os

__all__ = [
    "METADATA_KEYS",
    "build_pretrained_model",
    "list_pretrained_configs",
    "load_pretrained_config",
    "pretrained_config_path",
    "pretrained_configs_dir",
]

METADATA_KEYS = ("model", "source", "licence", "notes", "num_parameters")
ENV_VAR = "KERASFORMER_PRETRAINED_CONFIGS"


def pretrained_configs_dir():
    """The folder of the pretrained config JSONs (str).

    ``$KERASFORMER_PRETRAINED_CONFIGS`` when set, else ``pretrained_configs/`` next to
    the ``kerasformer`` package (the repository root of a source or editable install).

    Raises:
        FileNotFoundError: when the folder does not exist (naming both places looked at).
    """
    override = os.environ.get(ENV_VAR)
    if override:
        folder = os.path.expanduser(override)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"${ENV_VAR} is {override!r}, which is not a folder")
        return folder
    package = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(os.path.dirname(package), "pretrained_configs")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"No pretrained_configs/ folder at {folder}: it ships with the kerasformer "
            f"source checkout; point ${ENV_VAR} at a copy of it"
        )
    return folder


def list_pretrained_configs():
    """Sorted names (file names without ``.json``) of the pretrained configs."""
    folder = pretrained_configs_dir()
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json"))


def pretrained_config_path(name):
    """Path (str) of the config JSON of the pretrained checkpoint `name`.

    Args:
        name: a name from :func:`list_pretrained_configs` (``".json"`` may be appended).

    Raises:
        ValueError: for an unknown name, with the closest known names and the full list.
    """
    stem = name[:-5] if name.endswith(".json") else name
    path = os.path.join(pretrained_configs_dir(), stem + ".json")
    if os.path.isfile(path):
        return path
    known = list_pretrained_configs()
    close = difflib.get_close_matches(stem, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"No pretrained config named {name!r}.{hint} Known: {', '.join(known)}")


def load_pretrained_config(name):
    """The JSON of `name` as a dict (architecture keys and metadata).

    Raises:
        ValueError: unknown name (see :func:`pretrained_config_path`).
    """
    with open(pretrained_config_path(name), encoding="utf-8") as f:
        return json.load(f)


def build_pretrained_model(name, checkpoint_path=None, **kwargs):
    """``build_transformer_model`` with the config and the ``model`` name of `name`.

    Args:
        name: a pretrained config name (see :func:`list_pretrained_configs`).
        checkpoint_path: the downloaded checkpoint (any format the loader detects), or
            None for random weights.
        **kwargs: passed on (``application``, heads, config overrides...); ``model``
            overrides the file's.

    Returns:
        What ``build_transformer_model`` returns (a ``keras.Model`` by default).
    """
    from .models import build_transformer_model

    config = load_pretrained_config(name)
    kwargs.setdefault("model", config["model"])
    return build_transformer_model(
        config_path=pretrained_config_path(name), checkpoint_path=checkpoint_path, **kwargs
    )
