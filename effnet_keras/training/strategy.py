"""tf.distribute strategy selection: TPU > GPUs > CPU for `auto`, or exactly what was asked.

The resolver class is a parameter so tests can drive the TPU wiring with a fake
(no TPU is reachable from a test machine).
"""

import json
import os

from absl import logging

from effnet_keras import _keras_internals as keras_internals
from effnet_keras.config_schema import STRATEGIES


def _tf():
    import tensorflow as tf

    return tf


def tpu_strategy(tpu=None, resolver_cls=None):
    """TPUClusterResolver -> connect_to_cluster -> initialize_tpu_system -> TPUStrategy."""
    tf = _tf()
    resolver_cls = resolver_cls or tf.distribute.cluster_resolver.TPUClusterResolver
    resolver = resolver_cls(tpu=tpu) if tpu else resolver_cls()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _find_tpu(tpu, resolver_cls):
    """A TPU strategy if one is reachable, else None (for `auto`)."""
    tf = _tf()
    resolver_cls = resolver_cls or tf.distribute.cluster_resolver.TPUClusterResolver
    try:
        resolver = resolver_cls(tpu=tpu) if tpu else resolver_cls()
        if not resolver.master():
            return None
    except (ValueError, RuntimeError, KeyError, tf.errors.NotFoundError) as error:
        logging.info("No TPU found (%s); falling back.", error)
        return None
    return tpu_strategy(tpu, lambda **_: resolver)


def make_strategy(name="auto", tpu=None, devices=None, resolver_cls=None):
    """name: one of config_schema.STRATEGIES. `devices` pins MirroredStrategy's devices."""
    tf = _tf()
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: {name!r}")
    if name == "tpu":
        return tpu_strategy(tpu, resolver_cls)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy=multi_worker needs the TF_CONFIG environment variable (cluster spec and task).")
        json.loads(os.environ["TF_CONFIG"])  # a malformed TF_CONFIG fails here, loudly
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "gpus":
        if not gpus:
            raise ValueError("strategy=gpus but no GPU is visible to TensorFlow.")
        return tf.distribute.MirroredStrategy()
    # auto
    if tpu is not None or os.environ.get("TPU_NAME") or resolver_cls is not None:
        strategy = _find_tpu(tpu, resolver_cls)
        if strategy is not None:
            return strategy
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def fix_keras_multi_worker_reduction(strategy):
    """Keras 3.15's fit() cannot reduce its scalar logs under MultiWorkerMirroredStrategy.

    Its `reduce_per_replica` calls `strategy.reduce("MEAN", value, axis=0)` on the scalar
    loss/metric values of each step, which fails ("Invalid reduction dimension 0 for input
    with 0 dimensions"; tensorflow/tensorflow#72388). Reducing with axis=None is the mean
    across replicas that was meant. Installed only for a multi-worker strategy; idempotent.
    """
    tf = _tf()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    original = keras_internals.get_reduce_per_replica()
    if getattr(original, "_effnet_multi_worker_fix", False):
        return True

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._effnet_multi_worker_fix = True
    keras_internals.set_reduce_per_replica(reduce_per_replica)
    return True


def is_chief(strategy):
    """Whether this process writes the run's files (the chief, or worker 0 of a cluster without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{getattr(resolver, 'task_type', 'worker')}-{getattr(resolver, 'task_id', 0)}"


def set_precision(choice, strategy):
    """runtime.mixed_precision -> the Keras global policy (auto: bf16 on TPU, fp16 on GPU, float32 on CPU)."""
    import keras
    import tensorflow as tf

    if choice == "auto":
        if isinstance(strategy, tf.distribute.TPUStrategy):
            choice = "bf16"
        elif tf.config.list_logical_devices("GPU"):
            choice = "fp16"
        else:
            choice = "none"
    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16", "none": "float32"}[choice]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def set_up_runtime(runtime, seed, strategy=None):
    """-> (strategy, mixed-precision policy name) for a `config_schema.RuntimeConfig`; seeds and op
    determinism as configured. `strategy` overrides runtime.strategy (tests pin devices with it)."""
    import keras
    import tensorflow as tf

    strategy = strategy or make_strategy(runtime.strategy, tpu=runtime.tpu)
    fix_keras_multi_worker_reduction(strategy)
    policy = set_precision(runtime.mixed_precision, strategy)
    keras.utils.set_random_seed(seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    return strategy, policy
