"""Optimizer extensions with bert4keras's names, for Keras 3 on JAX and TensorFlow.

Each ``extend_with_*`` function takes a Keras 3 optimizer *class* (``keras.optimizers.Adam``,
``AdamW``, ``SGD``, ``Lion``... or a class already returned by another ``extend_with_*``)
and returns a subclass with one more feature, as bert4keras does (bert4keras/optimizers.py,
https://github.com/bojone/bert4keras)::

    AdamWLR = extend_with_piecewise_linear_lr(extend_with_weight_decay(keras.optimizers.Adam))
    optimizer = AdamWLR(learning_rate=2e-5, weight_decay_rate=0.01,
                        exclude_from_weight_decay=["Norm", "bias"],
                        lr_schedule={1000: 1, 10000: 0.1})

Extensions compose in any order; applying the same extension twice is an error. Every
extended class also fixes two Keras 3.15 problems (see :func:`_densify`):

- On TensorFlow, ``Embedding`` gradients are ``tf.IndexedSlices`` with one row per looked-up
  token, repeated tokens included. Keras's ``Adam``, ``AdamW``, ``RMSprop``, ``Lamb``... (any
  update non-linear in the gradient) apply element-wise ops such as ``square`` to the rows
  before duplicates are summed, so a token seen twice with gradient ``g`` each gets
  ``v += 2 g^2`` instead of ``(2 g)^2`` (its first Adam step is ``sqrt(2)`` times too large).
  Keras's ``gradient_accumulation_steps`` happens to densify (``g + accumulator``), which is
  why "accumulated" and "one big batch" disagree there: the plain update is the wrong one.
  Extended optimizers densify sparse gradients first, so both are exact.
- With ``gradient_accumulation_steps``, Keras evaluates a ``LearningRateSchedule`` at the
  micro-step counter. Extended optimizers evaluate it at the number of applied updates
  (``optimizer.iterations``), the counter every other part of the update already uses.

Counters: ``optimizer.iterations`` is the number of updates already applied (0 during the
first update), divided by the accumulation steps when gradients are accumulated.

Variables are selected by regular expressions searched (``re.search``) in the Keras variable
*path* (``"Transformer-3-FeedForward-Norm/gamma"``), not in ``variable.name`` (only
``"gamma"`` in Keras 3), so bert4keras patterns such as ``["Norm", "bias"]`` keep working.

Backends: JAX and TensorFlow (the update hooks rely on Keras calling ``update_step`` once per
variable; the torch backend swaps in fused implementations, so it is refused).
"""
import math
import re

import keras
from keras import ops

__all__ = [
    "piecewise_linear",
    "PiecewiseLinearSchedule",
    "extend_with_weight_decay",
    "extend_with_piecewise_linear_lr",
    "extend_with_gradient_accumulation",
    "extend_with_exponential_moving_average",
    "extend_with_parameter_wise_lr",
    "extend_with_layer_adaptation",
    "extend_with_lookahead",
    "layerwise_lr_decay",
]


# ---------------------------------------------------------------------------------------
# Piecewise linear schedule
# ---------------------------------------------------------------------------------------
def _normalize_schedule(schedule):
    if not isinstance(schedule, dict) or not schedule:
        raise ValueError(
            f"A piecewise linear schedule is a non-empty dict {{step: value}}; got {schedule!r}"
        )
    return {int(step): float(value) for step, value in schedule.items()}


def piecewise_linear(t, schedule, from_zero=True):
    """Piecewise linear function of a step counter (bert4keras ``backend.piecewise_linear``).

    ``schedule={1000: 1, 2000: 0.1}`` rises linearly from 0 to 1 over steps [0, 1000], falls
    linearly to 0.1 over [1000, 2000] and stays at 0.1 afterwards.

    Args:
        t: step(s), a scalar or tensor of any integer or float dtype.
        schedule: dict ``{step: value}`` (keys are converted with ``int``; string keys
            from a JSON config work).
        from_zero: if the smallest key is not 0, start from the point ``(0, 0.0)`` (the
            bert4keras default, i.e. a linear warm-up from 0).

    Returns:
        A float32 tensor shaped like ``t``. Before the first point (negative ``t``) the
        value of the first point; after the last point its value.

    Raises:
        ValueError: for an empty or non-dict schedule.
    """
    points = sorted(_normalize_schedule(schedule).items())
    if from_zero and points[0][0] != 0:
        points = [(0, 0.0)] + points
    t = ops.cast(t, "float32")
    x = ops.zeros_like(t) + points[0][1]
    for i, (t_begin, x_at_begin) in enumerate(points):
        if i + 1 < len(points):
            t_end, x_at_end = points[i + 1]
            slope = (x_at_end - x_at_begin) / (t_end - t_begin)
            segment = x_at_begin + slope * (t - t_begin)
        else:
            segment = ops.zeros_like(t) + x_at_begin
        x = ops.where(t >= t_begin, segment, x)
    return x


@keras.saving.register_keras_serializable(package="kerasformer")
class PiecewiseLinearSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``base_lr * piecewise_linear(step, schedule)`` as a Keras ``LearningRateSchedule``.

    The same multiplier as :func:`extend_with_piecewise_linear_lr`, usable with any Keras
    optimizer: ``keras.optimizers.AdamW(PiecewiseLinearSchedule(2e-5, {1000: 1, 10000: 0.1}))``.
    Keras calls it with its update counter (0 for the first update), so the first update of
    a warm-up from 0 uses learning rate 0, as in bert4keras.

    Args:
        base_lr: float, the learning rate the multipliers scale.
        schedule: dict ``{step: multiplier}``, see :func:`piecewise_linear`.
        from_zero: see :func:`piecewise_linear`.

    Raises:
        ValueError: for an empty or non-dict schedule.
    """

    def __init__(self, base_lr, schedule, from_zero=True):
        self.base_lr = float(base_lr)
        self.schedule = _normalize_schedule(schedule)
        self.from_zero = bool(from_zero)

    def __call__(self, step):
        return self.base_lr * piecewise_linear(step, self.schedule, self.from_zero)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            # JSON object keys are strings; __init__ turns them back into ints.
            "schedule": {str(k): v for k, v in self.schedule.items()},
            "from_zero": self.from_zero,
        }


# ---------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------
def _compile_patterns(patterns, argument):
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        return [re.compile(p) for p in patterns]
    except (TypeError, re.error) as error:
        raise ValueError(f"`{argument}` must be a list of regular expressions: {error}")


def _variable_path(variable):
    return getattr(variable, "path", None) or variable.name


def _is_sparse_gradient(gradient):
    # tf.IndexedSlices / tf.SparseTensor, recognised by duck typing so that no backend is
    # imported here; JAX gradients are always dense arrays and never match.
    return hasattr(gradient, "indices") and hasattr(gradient, "dense_shape")


def _densify(gradient, variable):
    """Dense copy of a sparse (TensorFlow ``IndexedSlices``) gradient, duplicates summed.

    Keras's ``add`` of a dense tensor and ``IndexedSlices`` converts the slices with
    ``unsorted_segment_sum``, which sums rows of repeated indices; element-wise ops applied
    to the slices themselves (``square`` in Adam) would not.
    """
    if gradient is None or not _is_sparse_gradient(gradient):
        return gradient
    dtype = keras.backend.standardize_dtype(gradient.dtype)
    return ops.add(ops.zeros(tuple(variable.shape), dtype=dtype), gradient)


class _State:
    """Plain holder for Python-side settings: Keras tracks optimizer attributes (and
    would adopt model variables stored in them), a plain object it leaves alone."""

    def __init__(self):
        self.window = None  # (variable, index, learning_rate) while update_step runs
        self.lr_schedule = None
        self.paramwise_lr_schedule = None
        self.multipliers = None
        self.exclude_from_weight_decay = None
        self.decay_flags = None
        self.exclude_from_layer_adaptation = None
        self.adapt_flags = None
        self.ema_variables = None
        self.old_weights = None
        self.slow_variables = None


class _Extended:
    """Hooks shared by every extension; the feature mixins below only fill settings.

    The update of one variable is, in order: decoupled weight decay ``x -= lr * m * wd * x``
    (``m`` the parameter-wise multiplier), then the base optimizer's ``update_step`` whose
    change ``d`` to ``x`` is rescaled by the LAMB trust ratio and by ``m``; after all
    variables, the look-ahead synchronisation and then the EMA, only on steps that apply
    an update.
    """

    _kf_extensions = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._kf = _State()

    # -- gradients and learning rate ----------------------------------------------------
    def apply(self, grads, trainable_variables=None):
        variables = (
            list(trainable_variables) if trainable_variables is not None
            else getattr(self, "_trainable_variables", [])
        )
        grads = [
            _densify(g, variables[i]) if i < len(variables) else g
            for i, g in enumerate(grads)
        ]
        return super().apply(grads, trainable_variables)

    def _get_current_learning_rate(self):
        lr = self._learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.iterations)
        elif isinstance(lr, keras.Variable):
            pass
        elif callable(lr):
            lr = lr()
        state = getattr(self, "_kf", None)
        if state is not None and state.lr_schedule is not None:
            lr = ops.multiply(lr, piecewise_linear(self.iterations, state.lr_schedule))
        return lr

    # -- build --------------------------------------------------------------------------
    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        state = self._kf
        paths = [_variable_path(v) for v in variables]
        if state.paramwise_lr_schedule is not None:
            state.multipliers = []
            for path in paths:
                multiplier = 1.0
                for pattern, value in state.paramwise_lr_schedule:
                    if pattern.search(path):
                        multiplier *= value
                state.multipliers.append(multiplier)
        if state.exclude_from_weight_decay is not None:
            state.decay_flags = [
                not any(p.search(path) for p in state.exclude_from_weight_decay)
                for path in paths
            ]
        if state.exclude_from_layer_adaptation is not None:
            state.adapt_flags = [
                not any(p.search(path) for p in state.exclude_from_layer_adaptation)
                for path in paths
            ]
        if "exponential_moving_average" in self._kf_extensions:
            state.ema_variables = self.add_optimizer_variables(variables, "ema")
        if "lookahead" in self._kf_extensions:
            state.slow_variables = self.add_optimizer_variables(variables, "slow")

    # -- per-variable update ------------------------------------------------------------
    def _kf_multiplier(self, index):
        multipliers = self._kf.multipliers
        return 1.0 if multipliers is None else multipliers[index]

    def _use_weight_decay(self, variable):
        if not super()._use_weight_decay(variable):
            return False
        flags = self._kf.decay_flags
        return True if flags is None else flags[self._get_variable_index(variable)]

    def _apply_weight_decay(self, variables):
        # Decay is applied in update_step instead, where the parameter-wise multiplier is
        # known (and, on TensorFlow, inside the distribution strategy's per-variable update).
        return

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        multiplier = self._kf_multiplier(index)
        if self.weight_decay and self._use_weight_decay(variable):
            coefficient = (
                ops.cast(learning_rate, variable.dtype)
                * ops.cast(self.weight_decay * multiplier, variable.dtype)
            )
            self.assign_sub(variable, ops.multiply(variable, coefficient))
        self._kf.window = (variable, index, learning_rate)
        try:
            super().update_step(gradient, variable, learning_rate)
        finally:
            self._kf.window = None

    def _kf_in_window(self, variable):
        window = self._kf.window
        return window is not None and variable is window[0]

    def _kf_transform(self, delta):
        """Rescale the base optimizer's change ``delta`` of the variable being updated."""
        variable, index, learning_rate = self._kf.window
        flags = self._kf.adapt_flags
        delta = ops.convert_to_tensor(delta)
        if flags is not None and flags[index]:
            dtype = delta.dtype
            x_norm = ops.sqrt(ops.sum(ops.square(ops.convert_to_tensor(variable))))
            d_norm = ops.sqrt(ops.sum(ops.square(delta)))
            valid = ops.logical_and(x_norm > 0, d_norm > 0)
            # ||x|| / ||delta / lr|| (bert4keras) = ||x|| * lr / ||delta||; 1 if either is 0.
            ratio = ops.where(
                valid,
                x_norm * ops.cast(learning_rate, dtype) / ops.where(valid, d_norm, 1.0),
                ops.ones_like(x_norm),
            )
            delta = ops.multiply(delta, ratio)
        multiplier = self._kf_multiplier(index)
        if multiplier != 1.0:
            delta = ops.multiply(delta, multiplier)
        return delta

    def assign_add(self, variable, value):
        if self._kf_in_window(variable):
            value = self._kf_transform(value)
        super().assign_add(variable, value)

    def assign_sub(self, variable, value):
        if self._kf_in_window(variable):
            value = self._kf_transform(value)
        super().assign_sub(variable, value)

    def assign(self, variable, value):
        if self._kf_in_window(variable):
            current = ops.convert_to_tensor(variable)
            value = current + self._kf_transform(ops.subtract(value, current))
        super().assign(variable, value)

    # -- after all variables ------------------------------------------------------------
    def _kf_is_update_step(self):
        steps = self.gradient_accumulation_steps
        if not steps:
            return None  # every step applies an update
        return ops.equal((self._iterations + 1) % steps, 0)

    def _backend_apply_gradients(self, grads, trainable_variables):
        state = self._kf
        if state.slow_variables is not None:
            # Slow weights start at the weights of the first update (Lookahead, Alg. 1:
            # phi_0 = theta_0), read here rather than at build so that weights loaded after
            # the optimizer was built are used.
            first = ops.equal(self.iterations, 0)
            for variable, slow in zip(self._trainable_variables, state.slow_variables):
                if slow is not None:
                    slow.assign(ops.where(first, variable.value, slow.value))
        super()._backend_apply_gradients(grads, trainable_variables)
        if state.slow_variables is None and state.ema_variables is None:
            return
        is_update = self._kf_is_update_step()
        if state.slow_variables is not None:
            k, alpha = self.steps_per_slow_update, self.slow_step_size
            sync = ops.equal((self.iterations + 1) % k, 0)
            if is_update is not None:
                sync = ops.logical_and(sync, is_update)
            for variable, slow in zip(self._trainable_variables, state.slow_variables):
                if slow is not None:
                    fast, old = variable.value, slow.value
                    new_slow = ops.where(sync, old + alpha * (fast - old), old)
                    slow.assign(new_slow)
                    variable.assign(ops.where(sync, new_slow, fast))
        if state.ema_variables is not None:
            momentum = self.ema_momentum
            for variable, average in zip(self._trainable_variables, state.ema_variables):
                if average is None:
                    continue
                old = average.value
                new_average = momentum * old + (1.0 - momentum) * variable.value
                if is_update is not None:
                    new_average = ops.where(is_update, new_average, old)
                average.assign(new_average)


def _extend(BaseOptimizer, mixin, feature, name):
    if keras.backend.backend() not in ("jax", "tensorflow"):
        raise NotImplementedError(
            "kerasformer.optimizers supports the JAX and TensorFlow backends; "
            f"the active backend is {keras.backend.backend()!r}."
        )
    if not (isinstance(BaseOptimizer, type)
            and issubclass(BaseOptimizer, keras.optimizers.Optimizer)):
        raise TypeError(
            f"Expected a Keras 3 optimizer class (e.g. keras.optimizers.Adam), got "
            f"{BaseOptimizer!r}. Pass the class, not an instance."
        )
    extensions = getattr(BaseOptimizer, "_kf_extensions", ())
    if feature in extensions:
        raise ValueError(f"{BaseOptimizer.__name__} is already extended with {feature}.")
    name = name or f"{BaseOptimizer.__name__}{mixin._suffix}"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{BaseOptimizer.__name__} extended with {feature}.\n\n{mixin.__doc__}",
        "_kf_extensions": extensions + (feature,),
    }
    klass = type(BaseOptimizer)(name, (mixin, BaseOptimizer), namespace)
    # As bert4keras does: lets keras.optimizers.deserialize / load_model find the class.
    keras.saving.get_custom_objects()[name] = klass
    return klass


# ---------------------------------------------------------------------------------------
# Feature mixins
# ---------------------------------------------------------------------------------------
class _WeightDecay(_Extended):
    """Decoupled weight decay (AdamW, arXiv:1711.05101; bert4keras extend_with_weight_decay).

    Extra arguments:
        weight_decay_rate: float (default 0.01). Each update first does
            ``x -= lr * weight_decay_rate * x`` (times the parameter-wise multiplier),
            with ``lr`` the current (scheduled) learning rate. Stored as Keras's
            ``weight_decay``; do not pass both.
        exclude_from_weight_decay: list of regular expressions searched in variable
            paths; matching variables are not decayed (e.g. ``["Norm", "bias"]``).
            Keras's ``optimizer.exclude_from_weight_decay(var_list, var_names)`` method is
            honoured as well.
    """

    _suffix = "WithWeightDecay"

    def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=None,
                 **kwargs):
        if kwargs.get("weight_decay") is not None:
            raise ValueError(
                "Pass `weight_decay_rate` (bert4keras) to an optimizer extended with weight "
                "decay, not Keras's `weight_decay`."
            )
        kwargs["weight_decay"] = float(weight_decay_rate)
        patterns = _compile_patterns(exclude_from_weight_decay, "exclude_from_weight_decay")
        super().__init__(*args, **kwargs)
        self._kf.exclude_from_weight_decay = patterns

    @property
    def weight_decay_rate(self):
        return self.weight_decay

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config["weight_decay_rate"] = self.weight_decay
        config["exclude_from_weight_decay"] = [
            p.pattern for p in self._kf.exclude_from_weight_decay
        ]
        return config


class _PiecewiseLinearLR(_Extended):
    """Piecewise linear learning-rate multiplier (bert4keras extend_with_piecewise_linear_lr).

    Extra arguments:
        lr_schedule: dict ``{step: multiplier}`` (default ``{0: 1}``), e.g.
            ``{1000: 1, 2000: 0.1}``: warm up linearly from 0 over 1000 updates, decay
            linearly to 0.1 by update 2000, then stay. The learning rate is
            ``learning_rate(step) * piecewise_linear(step, lr_schedule)`` with ``step`` the
            number of updates already applied. See also :class:`PiecewiseLinearSchedule`.
    """

    _suffix = "WithPiecewiseLinearLR"

    def __init__(self, *args, lr_schedule=None, **kwargs):
        schedule = _normalize_schedule({0: 1} if lr_schedule is None else lr_schedule)
        super().__init__(*args, **kwargs)
        self._kf.lr_schedule = schedule

    @property
    def lr_schedule(self):
        return dict(self._kf.lr_schedule)

    def get_config(self):
        config = super().get_config()
        config["lr_schedule"] = {str(k): v for k, v in self._kf.lr_schedule.items()}
        return config


class _GradientAccumulation(_Extended):
    """Gradient accumulation (bert4keras extend_with_gradient_accumulation).

    Extra arguments:
        grad_accum_steps: int >= 2 (default 2). Gradients of ``grad_accum_steps``
            consecutive batches are averaged and applied once, so ``k`` micro-batches of
            size ``b`` give the update of one batch of ``k * b`` (for a loss that is a mean
            over the batch). Built on Keras's ``gradient_accumulation_steps`` (which
            already applies weight decay, clipping and ``optimizer.iterations`` per real
            update); sparse TensorFlow gradients are densified first and learning-rate
            schedules, EMA and look-ahead count real updates (see the module docstring).
    """

    _suffix = "WithGradientAccumulation"

    def __init__(self, *args, grad_accum_steps=2, **kwargs):
        given = kwargs.pop("gradient_accumulation_steps", None)
        if given is not None and given != grad_accum_steps:
            raise ValueError(
                "Pass `grad_accum_steps` (bert4keras), not Keras's "
                "`gradient_accumulation_steps`."
            )
        if not isinstance(grad_accum_steps, int) or grad_accum_steps < 2:
            raise ValueError(f"`grad_accum_steps` must be an int >= 2, got {grad_accum_steps!r}")
        kwargs["gradient_accumulation_steps"] = grad_accum_steps
        super().__init__(*args, **kwargs)

    @property
    def grad_accum_steps(self):
        return self.gradient_accumulation_steps

    def get_config(self):
        config = super().get_config()
        config.pop("gradient_accumulation_steps", None)
        config["grad_accum_steps"] = self.gradient_accumulation_steps
        return config


class _ExponentialMovingAverage(_Extended):
    """Exponential moving average of the weights (bert4keras
    extend_with_exponential_moving_average).

    Extra arguments:
        ema_momentum: float in [0, 1] (default 0.999). After each update
            ``ema = ema_momentum * ema + (1 - ema_momentum) * weights``, starting from
            ``ema = 0``.

    Methods:
        apply_ema_weights(bias_correction=True): back up the current weights and load the
            averages, divided by ``1 - ema_momentum ** t`` (``t`` = updates applied, the
            bias correction of Adam, arXiv:1412.6980) unless ``bias_correction=False``.
        reset_old_weights(): restore the weights backed up by ``apply_ema_weights``.

    Differences from Keras's ``use_ema=True`` (which cannot be combined with this): Keras
    starts the average at the first updated weights without bias correction, updates it on
    every micro-step under gradient accumulation, and swaps weights only through
    ``ema_overwrite_frequency`` / ``finalize_variable_values``. Here the average moves once
    per real update and ``apply_ema_weights`` / ``reset_old_weights`` swap explicitly (e.g.
    around evaluation), as in bert4keras.
    """

    _suffix = "WithEMA"

    def __init__(self, *args, ema_momentum=0.999, **kwargs):
        if kwargs.get("use_ema"):
            raise ValueError(
                "extend_with_exponential_moving_average keeps its own average; do not also "
                "pass Keras's `use_ema=True`."
            )
        if not 0.0 <= float(ema_momentum) <= 1.0:
            raise ValueError(f"`ema_momentum` must be in [0, 1], got {ema_momentum!r}")
        # Stored as Keras's `ema_momentum` (already in the base config); Keras uses it only
        # when use_ema=True, which is refused above.
        super().__init__(*args, ema_momentum=float(ema_momentum), **kwargs)

    @property
    def ema_weights(self):
        """The (uncorrected) moving averages, one per trainable variable (None before build)."""
        return self._kf.ema_variables

    def apply_ema_weights(self, bias_correction=True):
        """Back up the model's weights, then set them to their moving averages.

        Raises:
            ValueError: if the optimizer has not applied an update yet.
        """
        steps = int(ops.convert_to_numpy(self.iterations)) if self.built else 0
        if steps == 0:
            raise ValueError("apply_ema_weights(): the optimizer has not applied any update yet.")
        scale = 1.0 - self.ema_momentum ** steps if bias_correction else 1.0
        variables = self._trainable_variables
        self._kf.old_weights = [ops.convert_to_numpy(v) for v in variables]
        for variable, average in zip(variables, self._kf.ema_variables):
            if average is not None:
                variable.assign(ops.convert_to_numpy(average) / scale)

    def reset_old_weights(self):
        """Restore the weights saved by the last :meth:`apply_ema_weights`.

        Raises:
            ValueError: if ``apply_ema_weights`` was not called before.
        """
        if self._kf.old_weights is None:
            raise ValueError("reset_old_weights(): call apply_ema_weights() first.")
        for variable, value in zip(self._trainable_variables, self._kf.old_weights):
            variable.assign(value)
        self._kf.old_weights = None


class _ParameterWiseLR(_Extended):
    """Parameter-wise learning-rate multipliers (bert4keras extend_with_parameter_wise_lr).

    Extra arguments:
        paramwise_lr_schedule: dict ``{regex: multiplier}``. The *update* of a variable
            whose path matches (``re.search``) is multiplied by ``multiplier`` (the product
            when several match), weight decay included. The gradient is left alone:
            Adam-type updates do not change when a gradient is rescaled. See
            :func:`layerwise_lr_decay`.
    """

    _suffix = "WithParameterWiseLR"

    def __init__(self, *args, paramwise_lr_schedule=None, **kwargs):
        schedule = dict(paramwise_lr_schedule or {})
        try:
            compiled = [(re.compile(k), float(v)) for k, v in schedule.items()]
        except (TypeError, ValueError, re.error) as error:
            raise ValueError(
                f"`paramwise_lr_schedule` must map regular expressions to floats: {error}"
            )
        super().__init__(*args, **kwargs)
        self._kf.paramwise_lr_schedule = compiled

    @property
    def paramwise_lr_schedule(self):
        return {p.pattern: v for p, v in self._kf.paramwise_lr_schedule}

    def get_config(self):
        config = super().get_config()
        config["paramwise_lr_schedule"] = self.paramwise_lr_schedule
        return config


class _LayerAdaptation(_Extended):
    """Layer-wise adaptive update size, LAMB's trust ratio (arXiv:1904.00962; bert4keras
    extend_with_layer_adaptation).

    Each variable's update ``d`` from the base optimizer is rescaled to
    ``d * ||x|| * lr / ||d||`` (1 if ``||x||`` or ``||d||`` is 0), i.e. its norm becomes
    ``lr * ||x||``; with Adam this is LAMB. Decoupled weight decay is applied separately
    before the update (as Keras's ``Lamb`` does), not inside the trust ratio.

    Extra arguments:
        exclude_from_layer_adaptation: list of regular expressions searched in variable
            paths; matching variables keep the base optimizer's update.
    """

    _suffix = "WithLayerAdaptation"

    def __init__(self, *args, exclude_from_layer_adaptation=None, **kwargs):
        patterns = _compile_patterns(exclude_from_layer_adaptation,
                                     "exclude_from_layer_adaptation")
        super().__init__(*args, **kwargs)
        self._kf.exclude_from_layer_adaptation = patterns

    def get_config(self):
        config = super().get_config()
        config["exclude_from_layer_adaptation"] = [
            p.pattern for p in self._kf.exclude_from_layer_adaptation
        ]
        return config


class _Lookahead(_Extended):
    """Lookahead (arXiv:1907.08610; bert4keras extend_with_lookahead).

    The base optimizer's weights are the fast weights; slow weights start at the weights
    before the first update; after every ``steps_per_slow_update`` updates,
    ``slow += slow_step_size * (fast - slow)`` and ``fast = slow``. (bert4keras starts the
    slow weights at zero; this follows the paper.)

    Extra arguments:
        steps_per_slow_update: int >= 1, the paper's ``k`` (default 5).
        slow_step_size: float in (0, 1], the paper's ``alpha`` (default 0.5).
    """

    _suffix = "WithLookahead"

    def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
        if not isinstance(steps_per_slow_update, int) or steps_per_slow_update < 1:
            raise ValueError(
                f"`steps_per_slow_update` must be an int >= 1, got {steps_per_slow_update!r}"
            )
        super().__init__(*args, **kwargs)
        self.steps_per_slow_update = steps_per_slow_update
        self.slow_step_size = float(slow_step_size)

    def get_config(self):
        config = super().get_config()
        config["steps_per_slow_update"] = self.steps_per_slow_update
        config["slow_step_size"] = self.slow_step_size
        return config


# ---------------------------------------------------------------------------------------
# Public factories
# ---------------------------------------------------------------------------------------
def extend_with_weight_decay(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` with decoupled weight decay.

    Adds ``weight_decay_rate`` (default 0.01) and ``exclude_from_weight_decay`` (regexes
    searched in variable paths). Source: bert4keras; AdamW (arXiv:1711.05101). Keras's own
    ``exclude_from_weight_decay(var_names=...)`` only sees ``variable.name`` (``"gamma"``,
    ``"bias"``), so ``"Norm"`` would not match a LayerNorm; this matches the full path.

    Args:
        BaseOptimizer: a Keras 3 optimizer class.
        name: class name (default ``<Base>WithWeightDecay``), registered as a Keras
            custom object.

    Raises:
        TypeError: if ``BaseOptimizer`` is not a Keras optimizer class.
        ValueError: if it already has this extension.
    """
    return _extend(BaseOptimizer, _WeightDecay, "weight_decay", name)


def extend_with_piecewise_linear_lr(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` with a piecewise linear lr multiplier.

    Adds ``lr_schedule={step: multiplier}`` (bert4keras semantics, see
    :func:`piecewise_linear`). Same arguments and errors as :func:`extend_with_weight_decay`.
    """
    return _extend(BaseOptimizer, _PiecewiseLinearLR, "piecewise_linear_lr", name)


def extend_with_gradient_accumulation(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` that accumulates ``grad_accum_steps`` gradients.

    Exact on both backends, ``Embedding`` included (see the module docstring). Same
    arguments and errors as :func:`extend_with_weight_decay`.
    """
    return _extend(BaseOptimizer, _GradientAccumulation, "gradient_accumulation", name)


def extend_with_exponential_moving_average(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` keeping an EMA of the weights.

    Adds ``ema_momentum`` and the methods ``apply_ema_weights()`` / ``reset_old_weights()``
    (bert4keras names). Same arguments and errors as :func:`extend_with_weight_decay`.
    """
    return _extend(BaseOptimizer, _ExponentialMovingAverage, "exponential_moving_average",
                   name)


def extend_with_parameter_wise_lr(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` with ``paramwise_lr_schedule={regex: multiplier}``.

    The multiplier scales each matching variable's update (bert4keras semantics). Same
    arguments and errors as :func:`extend_with_weight_decay`.
    """
    return _extend(BaseOptimizer, _ParameterWiseLR, "parameter_wise_lr", name)


def extend_with_layer_adaptation(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` with LAMB's layer-wise trust ratio.

    Adds ``exclude_from_layer_adaptation`` (regexes). ``extend_with_layer_adaptation(Adam)``
    is LAMB (arXiv:1904.00962). Same arguments and errors as
    :func:`extend_with_weight_decay`.
    """
    return _extend(BaseOptimizer, _LayerAdaptation, "layer_adaptation", name)


def extend_with_lookahead(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` wrapped in Lookahead (arXiv:1907.08610).

    Adds ``steps_per_slow_update`` (k) and ``slow_step_size`` (alpha). Same arguments and
    errors as :func:`extend_with_weight_decay`.
    """
    return _extend(BaseOptimizer, _Lookahead, "lookahead", name)


_LAYER_INDEX = re.compile(r"(?:^|/)Transformer-(\d+)-")


def layerwise_lr_decay(model, decay, num_layers=None):
    """Layer-wise learning-rate decay for a bert4keras-named encoder, as a
    ``paramwise_lr_schedule`` for :func:`extend_with_parameter_wise_lr`.

    Layer ``i`` of ``L`` (``Transformer-i-*``, 0-based) gets ``decay ** (L - i)``, the
    embeddings (``Embedding-*``: token, segment, position, norm, mapping) get
    ``decay ** (L + 1)``, everything else (pooler, MLM/NSP and task heads) keeps 1; the
    top layer is thus ``decay`` times the head's rate. Sources: layer-wise decreasing
    learning rates in Sun et al., "How to Fine-Tune BERT for Text Classification?"
    (arXiv:1905.05583) and ELECTRA (arXiv:2003.10555).

    Args:
        model: a ``keras.Model`` built by kerasformer (or None when ``num_layers`` is
            given); its variable paths are used to find / check the layer count.
        decay: float in (0, 1].
        num_layers: number of Transformer blocks; inferred from ``model`` when None.

    Returns:
        dict ``{regex: multiplier}``.

    Raises:
        ValueError: if neither ``model`` nor ``num_layers`` is given, if ``model`` has no
            ``Transformer-<i>-`` layers (e.g. ALBERT, whose blocks share one set of
            weights), or if ``num_layers`` disagrees with the model.
    """
    if not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"`decay` must be in (0, 1], got {decay!r}")
    if model is not None:
        indices = set()
        for variable in model.weights:
            match = _LAYER_INDEX.search(_variable_path(variable))
            if match:
                indices.add(int(match.group(1)))
        if not indices:
            raise ValueError(
                "layerwise_lr_decay: the model has no `Transformer-<i>-` layers (layer-wise "
                "decay needs one set of weights per block; ALBERT shares them)."
            )
        found = max(indices) + 1
        if num_layers is None:
            num_layers = found
        elif int(num_layers) != found:
            raise ValueError(
                f"layerwise_lr_decay: num_layers={num_layers} but the model has {found} "
                "Transformer blocks."
            )
    elif num_layers is None:
        raise ValueError("layerwise_lr_decay: pass a model or num_layers.")
    num_layers = int(num_layers)
    schedule = {r"(?:^|/)Embedding-": float(decay) ** (num_layers + 1)}
    for i in range(num_layers):
        schedule[r"(?:^|/)Transformer-%d-" % i] = float(decay) ** (num_layers - i)
    return schedule


# ---------------------------------------------------------------------------------------
# bert4keras's base optimizers (their defaults and formulas)
# ---------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="kerasformer")
class Adam(keras.optimizers.Optimizer):
    """bert4keras's ``Adam``: Adam (Kingma & Ba, arXiv:1412.6980) with epsilon 1e-6 and a
    ``bias_correction`` switch; the base class the ``extend_with_*`` functions extend.

    Per variable, with ``t`` the update number (1 for the first update)::

        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        if bias_correction: m, v = m / (1 - beta_1**t), v / (1 - beta_2**t)
        x -= lr * m / (sqrt(v) + epsilon)

    This is the paper's algorithm with ``epsilon`` added to the bias-corrected ``sqrt(v)``
    (``keras.optimizers.Adam`` adds it before the correction, a different step for small
    ``v``); with ``bias_correction=False`` neither moment is corrected.

    Args:
        learning_rate: float or ``LearningRateSchedule`` (default 1e-3).
        beta_1, beta_2: floats (0.9, 0.999).
        epsilon: float (1e-6, bert4keras's default; Keras's is 1e-7).
        bias_correction: bool (True).
        name: str (default ``"Adam"``); other keyword arguments go to
            ``keras.optimizers.Optimizer`` (``clipnorm``, ``weight_decay``...).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 bias_correction=True, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name or "Adam", **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon) if epsilon else keras.config.epsilon()
        self.bias_correction = bool(bias_correction)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._velocities = self.add_optimizer_variables(
            variables, ["m", "v"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        # 1 - beta in Python floats: in float32, 1 - 0.999 is off by 1.3e-5 (relative).
        self.assign(m, self.beta_1 * m + ops.cast(1.0 - self.beta_1, dtype) * gradient)
        self.assign(v, self.beta_2 * v + ops.cast(1.0 - self.beta_2, dtype) * ops.square(gradient))
        m_t, v_t = ops.convert_to_tensor(m), ops.convert_to_tensor(v)
        if self.bias_correction:
            step = ops.cast(self.iterations + 1, "float32")
            # 1 - beta**t = -expm1(t log beta), without the cancellation of 1 - pow.
            m_t = m_t / ops.cast(-ops.expm1(step * math.log(self.beta_1)), dtype)
            v_t = v_t / ops.cast(-ops.expm1(step * math.log(self.beta_2)), dtype)
        self.assign_sub(variable, lr * m_t / (ops.sqrt(v_t) + ops.cast(self.epsilon, dtype)))

    def get_config(self):
        config = super().get_config()
        config.update({
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "bias_correction": self.bias_correction,
        })
        return config


@keras.saving.register_keras_serializable(package="kerasformer")
class Lion(keras.optimizers.Lion):
    """bert4keras's ``Lion`` (Chen et al., arXiv:2302.06675): ``keras.optimizers.Lion``
    (same update) with bert4keras's defaults ``learning_rate=3e-4, beta_1=0.95,
    beta_2=0.98`` and ``name="Lion"``."""

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         name=name or "Lion", **kwargs)


__all__ += ["Adam", "Lion"]

# bert4keras's tf.keras variants had a `_v2` suffix; Keras 3 has one optimizer API.
extend_with_weight_decay_v2 = extend_with_weight_decay
extend_with_layer_adaptation_v2 = extend_with_layer_adaptation
extend_with_piecewise_linear_lr_v2 = extend_with_piecewise_linear_lr
extend_with_gradient_accumulation_v2 = extend_with_gradient_accumulation
extend_with_lookahead_v2 = extend_with_lookahead
extend_with_exponential_moving_average_v2 = extend_with_exponential_moving_average
extend_with_parameter_wise_lr_v2 = extend_with_parameter_wise_lr
__all__ += [name + "_v2" for name in (
    "extend_with_weight_decay", "extend_with_layer_adaptation",
    "extend_with_piecewise_linear_lr", "extend_with_gradient_accumulation",
    "extend_with_lookahead", "extend_with_exponential_moving_average",
    "extend_with_parameter_wise_lr",
)]


# ---------------------------------------------------------------------------------------
# ChildTuning (recipes)
# ---------------------------------------------------------------------------------------
__all__ += ["extend_with_child_tuning"]


class _ChildTuning(_Extended):
    """ChildTuning: update only a "child network" by masking gradients (Xu et al. 2021,
    "Raise a Child in Large Language Model", arXiv:2109.05687; kexue.fm/archives/8764),
    as the authors' ``ChildTuningAdamW`` does: the gradient is masked before the base
    optimizer sees it (moments, clipping and weight decay are the base optimizer's).

    Extra arguments:
        child_tuning_mode: ``"F"`` (task-free): each update draws a fresh Bernoulli(p)
            mask per gradient entry and uses ``g * mask / p`` (unbiased); ``"D"``
            (task-driven): a fixed 0/1 mask, chosen before training from the Fisher
            information (see :func:`kerasformer.child_tuning.child_tuning_masks`), gives
            ``g * mask`` (no rescaling, as in the authors' code).
        reserve_p: float in (0, 1], ``p_F`` of mode ``"F"`` (default 0.3).
        gradient_masks: mode ``"D"``: dict ``{variable path: 0/1 array of its shape}``;
            variables without an entry are updated normally. Stored as (non-trainable)
            optimizer variables, so they are saved and restored with the optimizer.
        child_tuning_seed: int seed of mode ``"F"``'s masks (None: random).

    With an optimizer that has momentum (Adam), an entry masked in this step still moves
    by its earlier momentum; under mode ``"D"`` a masked entry has a zero gradient from the
    start, so it never moves (except by decoupled weight decay, as in the paper's code).
    Under gradient accumulation each micro-batch gradient is masked.

    Raises:
        ValueError: unknown mode, ``reserve_p`` out of range, mode ``"D"`` without masks,
            a mask for a path that is not a trainable variable or of the wrong shape.
    """

    _suffix = "WithChildTuning"

    def __init__(self, *args, child_tuning_mode="F", reserve_p=0.3, gradient_masks=None,
                 child_tuning_seed=None, child_tuning_masked_paths=None, **kwargs):
        import numpy as np

        if child_tuning_mode not in ("F", "D"):
            raise ValueError(f"child_tuning_mode must be 'F' or 'D', got {child_tuning_mode!r}")
        if not 0.0 < float(reserve_p) <= 1.0:
            raise ValueError(f"reserve_p must be in (0, 1], got {reserve_p!r}")
        masks = {str(k): np.asarray(v) for k, v in (gradient_masks or {}).items()}
        # From a saved config: the mask values come back with the optimizer's variables.
        paths = list(masks) or list(child_tuning_masked_paths or [])
        if child_tuning_mode == "D" and not paths:
            raise ValueError("ChildTuning-D needs gradient_masks {variable path: 0/1 mask}")
        super().__init__(*args, **kwargs)
        self.child_tuning_mode = child_tuning_mode
        self.reserve_p = float(reserve_p)
        self.child_tuning_seed = child_tuning_seed
        self._kf.child_tuning = {"masks": masks, "paths": paths, "variables": None,
                                 "seed": None}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        state = self._kf.child_tuning
        if self.child_tuning_mode == "F":
            state["seed"] = keras.random.SeedGenerator(self.child_tuning_seed)
            # Tracked as an optimizer variable so that compiled JAX steps thread it.
            self._track_variable(state["seed"].state)
            return
        by_path = {_variable_path(v): i for i, v in enumerate(variables)}
        unknown = [p for p in state["paths"] if p not in by_path]
        if unknown:
            raise ValueError(f"ChildTuning-D: masks for unknown variables {unknown}; "
                             f"trainable variables are {sorted(by_path)}")
        state["variables"] = [None] * len(variables)
        for path in state["paths"]:
            variable = variables[by_path[path]]
            mask = self.add_variable(tuple(variable.shape), initializer="ones",
                                     dtype=variable.dtype, name="child_tuning_mask")
            if path in state["masks"]:
                value = state["masks"][path]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(f"ChildTuning-D: mask of {path} has shape {value.shape}, "
                                     f"the variable {tuple(variable.shape)}")
                mask.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
            state["variables"][by_path[path]] = mask
        state["masks"] = {}  # now held by the optimizer variables

    def apply(self, grads, trainable_variables=None):
        variables = (list(trainable_variables) if trainable_variables is not None
                     else self._trainable_variables)
        if not self.built:
            with keras.name_scope(self.name):
                self.build(variables)
            self.built = True
        state = self._kf.child_tuning
        masked = []
        for i, gradient in enumerate(grads):
            gradient = _densify(gradient, variables[i])
            if gradient is not None and self.child_tuning_mode == "F":
                keep = keras.random.uniform(ops.shape(gradient), seed=state["seed"]) < self.reserve_p
                gradient = ops.where(keep, gradient / self.reserve_p, ops.zeros_like(gradient))
            elif gradient is not None and state["variables"][i] is not None:
                gradient = gradient * ops.cast(state["variables"][i], gradient.dtype)
            masked.append(gradient)
        return super().apply(masked, trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(child_tuning_mode=self.child_tuning_mode, reserve_p=self.reserve_p,
                      child_tuning_seed=self.child_tuning_seed,
                      child_tuning_masked_paths=list(self._kf.child_tuning["paths"]))
        return config


def extend_with_child_tuning(BaseOptimizer, name=None):
    """Return a subclass of ``BaseOptimizer`` with ChildTuning-F or ChildTuning-D
    (arXiv:2109.05687): adds ``child_tuning_mode``, ``reserve_p``, ``gradient_masks``,
    ``child_tuning_seed`` (see the class docstring). ``extend_with_child_tuning(
    extend_with_weight_decay(keras.optimizers.Adam))`` is the paper's ChildTuningAdamW.
    Same arguments and errors as :func:`extend_with_weight_decay`.
    """
    return _extend(BaseOptimizer, _ChildTuning, "child_tuning", name)
