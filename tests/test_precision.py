"""``kerasformer.set_float32_matmul_precision`` / ``float32_matmul_precision`` set the
active backend's own setting and restore it. Read back through the backend's API
(``jax.config``, ``tf.config.experimental``), not through kerasformer's getter. The
numerical effect exists only on GPU/TPU (tests/ GPU checks); CPUs are exact either way.
"""
import keras
import pytest

import kerasformer

BACKEND = keras.backend.backend()


def backend_setting():
    """"highest" / "default" as the backend itself reports it."""
    if BACKEND == "jax":
        import jax

        return "highest" if jax.config.jax_default_matmul_precision == "highest" else "default"
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return "default" if tf.config.experimental.tensor_float_32_execution_enabled() \
            else "highest"
    pytest.skip(f"no backend precision setting checked for {BACKEND}")


@pytest.fixture(autouse=True)
def restore():
    before = kerasformer.get_float32_matmul_precision()
    yield
    kerasformer.set_float32_matmul_precision(before)


def test_set_returns_previous_and_sets_the_backend():
    kerasformer.set_float32_matmul_precision("default")
    assert backend_setting() == "default"
    assert kerasformer.set_float32_matmul_precision("highest") == "default"
    assert backend_setting() == "highest"
    assert kerasformer.get_float32_matmul_precision() == "highest"
    assert kerasformer.set_float32_matmul_precision("default") == "highest"
    assert backend_setting() == "default"


def test_context_manager_restores_also_after_an_exception():
    kerasformer.set_float32_matmul_precision("default")
    with kerasformer.float32_matmul_precision("highest"):
        assert backend_setting() == "highest"
    assert backend_setting() == "default"
    with pytest.raises(RuntimeError):
        with kerasformer.float32_matmul_precision("highest"):
            raise RuntimeError("inside")
    assert backend_setting() == "default"


def test_invalid_value_raises():
    with pytest.raises(ValueError, match=r"precision must be one of \('highest', 'default'\)"):
        kerasformer.set_float32_matmul_precision("high")
