"""Every use of private Keras API in effnet_keras and hub_export, in one place.

Each function below is one touch of Keras internals (a `keras.src` module or an
underscore attribute of a Keras object), with the reason no public API does the
job. All of them were checked against Keras 3.15.0 and 3.15.1 (TensorFlow 2.21
for the TensorFlow-only ones); `effnet_keras.training` refuses other versions
(`check_keras_version`), since its training loop depends on most of them. The
model builders use none of the training-only ones and work on any Keras 3.

Two private hooks are *overridden* by methods of ours, which cannot move here; their
names live here (`OPTIMIZER_EMA_HOOK`, `IMAGE_TRANSFORM_HOOK`) and
`check_private_hooks` fails loudly if a Keras renamed them (an override of a
method Keras no longer calls would silently stop doing its job).

This module is a leaf: it imports only keras and the standard library, and
imports TensorFlow-backend modules lazily, inside the functions that need them.
Keep it that way: it is imported by the model builders, which run on any backend.
"""

import re

import keras

SUPPORTED_KERAS = ">=3.15,<3.16"
_SUPPORTED_RANGE = ((3, 15), (3, 16))  # [low, high), the same range as SUPPORTED_KERAS

# The base optimizer's EMA step: `apply()` calls it after each update when use_ema is
# set. optim._RecipeMixin overrides it (automl's EMA warm-up; the public knob
# `ema_momentum` is a constant). Keras 3.15: BaseOptimizer._update_model_variables_moving_average.
OPTIMIZER_EMA_HOOK = "_update_model_variables_moving_average"
# The geometric preprocessing layers' image warp, given the drawn transformation.
# data.fast_layers overrides it (a faster nearest-neighbour warp); the public
# `transform_images` would also need the affine matrix, which only private helpers build.
IMAGE_TRANSFORM_HOOK = "_transform_images"


# ---------------------------------------------------------------- version


def _version_tuple(version):
    """'3.15.1' -> (3, 15, 1); '3.16.0rc1' / '3.15.1.dev2024' -> (3, 16, 0) / (3, 15, 1)."""
    parts = []
    for piece in str(version).split(".")[:3]:
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def keras_version_supported(version=None):
    version = _version_tuple(keras.__version__ if version is None else version)
    low, high = _SUPPORTED_RANGE
    return low <= version[:2] < high if len(version) >= 2 else False


def check_keras_version():
    """ImportError (one line) unless the installed Keras is in SUPPORTED_KERAS."""
    if not keras_version_supported():
        raise ImportError(
            f"effnet_keras.training supports Keras {SUPPORTED_KERAS} (its training loop uses Keras internals "
            f"checked on those versions); found keras {keras.__version__}. Install keras~=3.15.0, or use the "
            "model builders only (effnet_keras without .training), which work on any Keras 3."
        )


def check_private_hooks():
    """RuntimeError if a private method we override or call is missing from this Keras."""
    missing = []
    if not hasattr(keras.optimizers.Optimizer, OPTIMIZER_EMA_HOOK):
        missing.append(f"keras.optimizers.Optimizer.{OPTIMIZER_EMA_HOOK}")
    for cls in (keras.layers.RandomRotation, keras.layers.RandomShear, keras.layers.RandomTranslation):
        if not hasattr(cls, IMAGE_TRANSFORM_HOOK):
            missing.append(f"keras.layers.{cls.__name__}.{IMAGE_TRANSFORM_HOOK}")
    if missing:
        raise RuntimeError(
            f"keras {keras.__version__} lacks the private hooks {missing} that effnet_keras overrides "
            f"(checked on Keras {SUPPORTED_KERAS}); its EMA / fast augmentation would silently not run."
        )


# ---------------------------------------------------------------- TensorFlow trainer


def _tf_trainer_module():
    # keras.src.backend.tensorflow.trainer: not exported; imported lazily (needs TensorFlow).
    from keras.src.backend.tensorflow import trainer

    return trainer


def reduce_per_replica(values, strategy, reduction="auto"):
    """Keras' reduction of a step's per-replica outputs (logs) to single values.

    Why private: the trainer's own multi-step loop (trainer._install_multi_step) must
    reduce its step outputs exactly as Keras' fit() does, and Keras exports no such
    function. Looked up at call time, so a replacement installed with
    `set_reduce_per_replica` applies here too.
    """
    return _tf_trainer_module().reduce_per_replica(values, strategy, reduction)


def get_reduce_per_replica():
    return _tf_trainer_module().reduce_per_replica


def set_reduce_per_replica(function):
    """Replace the function Keras' TF trainer reduces step outputs with (module global).

    Why private: Keras 3.15's reduction fails under MultiWorkerMirroredStrategy
    (tensorflow/tensorflow#72388) and has no public hook; strategy.fix_keras_multi_worker_reduction
    installs a corrected one. Keras' train/test functions look the name up at trace time.
    """
    _tf_trainer_module().reduce_per_replica = function


def build_compiled_state_once(model, data_batch):
    """Build a compiled model's loss/metric state from `data_batch` now, and stop fit() rebuilding it.

    Why private: Keras 3.15's TF fit() calls `_maybe_symbolic_build` on every call, which pulls
    a batch from a new iterator (an extra pipeline start per epoch for a per-epoch fit loop)
    and fails under MultiWorkerMirroredStrategy; no public API builds the compiled metrics or
    turns that off. Returns False (and does nothing) on a Keras without these methods.
    """
    if not hasattr(model, "_maybe_symbolic_build") or not hasattr(model, "_symbolic_build"):
        return False
    model._symbolic_build(data_batch=data_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    return True


def install_train_function(model, make):
    """Have fit() use `make()` (a function iterator -> logs) as the model's train function.

    Why: `make_train_function` is public but what fit() does with it (calls it, then
    `model.train_function(iterator)` per execution) is Keras' internal contract; Keras
    3.15's own multi-step loop fails under MirroredStrategy, and there is no public
    way to supply another loop. Instance attribute: the model's class is untouched.
    """

    def make_train_function(force=False):
        if model.train_function is not None and not force:
            return model.train_function
        model.train_function = make()
        return model.train_function

    model.make_train_function = make_train_function


def seed_generator_states(model):
    """The state variables of the SeedGenerators of `model` and all its sublayers (dropout masks etc.).

    Why private: a resumed run must draw the same masks, so the states go into the
    checkpoint; tf.train.Checkpoint does not reach them through the model, and Keras
    lists them publicly only mixed into `model.variables` (with no way to tell them
    apart but by name). `_flatten_layers` / `_seed_generators`: Keras 3.15 Layer.
    """
    return [g.state for layer in model._flatten_layers() for g in getattr(layer, "_seed_generators", [])]


# ---------------------------------------------------------------- optimizer


def optimizer_trainable_variables(optimizer):
    """The variables an optimizer was built for, in the order `apply()` pairs gradients with.

    Why private: `apply(grads)` without variables uses this list; a subclass adding to the
    gradients in `apply` needs it, and the public `variables` are the optimizer's own slots.
    """
    return optimizer._trainable_variables


def ema_averages(optimizer):
    """The optimizer's EMA copies, aligned with the model's trainable variables ([] when EMA is off).

    Why private: Keras keeps them only in `_model_variables_moving_average` (public only by
    their effect, `finalize_variable_values` overwriting the model); eval/export swap them in.
    """
    return list(getattr(optimizer, "_model_variables_moving_average", None) or [])


# ---------------------------------------------------------------- functional graphs


def run_through_graph(model, inputs, operation_fn):
    """Run a Functional model's graph with `operation_fn(op)` wrapping each operation.

    Why private: stats.py counts MACs per operation symbolically (shapes only); Keras has
    no public graph walker over operations with their actual call arguments.
    """
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def producing_layer(tensor):
    """The operation (layer) whose output a symbolic KerasTensor is; None if it has no history.

    Why private: a KerasTensor's producer is only recorded in `_keras_history`; the public
    `layer.input` / `layer.output` go the other way.
    """
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


# ---------------------------------------------------------------- preprocessing layers


def layer_seed_generator(layer):
    """A random preprocessing layer's SeedGenerator for its current backend.

    Why private: a subclass re-drawing the parent's random numbers in the parent's order
    (fast_layers.FastRandomErasing) needs the parent's generator; only `_get_seed_generator`
    returns it per backend (tf.data runs such layers on the TF backend).
    """
    return layer._get_seed_generator(layer.backend.name)


def shear_matrix(layer, shear_factors):
    """RandomShear's affine matrix for drawn shear factors. Why private: no public builder."""
    return layer._get_shear_matrix(shear_factors)


def translation_matrix(layer, translations):
    """RandomTranslation's affine matrix for drawn translations. Why private: no public builder."""
    return layer._get_translation_matrix(translations)


def posterization_shift(layer, bits):
    """RandomPosterization's drawn `shift_factor` for a fixed bit count (its bit width minus the bits kept).

    Why private: the layer's bit width (`_MAX_FACTOR`, 8) has no public name; RandAugment's
    draw table (randaugment_draws.RandAugmentDraws) builds the transformation the layer would draw.
    """
    return layer._MAX_FACTOR - bits


def crop_bounds(layer, batch_size, image_length, crop_ratio, seed):
    """RandomErasing's box bounds draw. Why private: reproducing the parent's draws needs its helper."""
    return layer._compute_crop_bounds(batch_size, image_length, crop_ratio, seed)
