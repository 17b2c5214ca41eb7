"""How the trainer drives Keras' `fit()`: the workarounds it needs, kept out of the loop.

Each one names the Keras 3.15 behaviour it works around; the private hooks they touch are in
`effnet_keras._keras_internals`.
"""

from effnet_keras import _keras_internals as keras_internals


def build_compiled_state_once(model, image_size):
    """Build the loss/metric state from shapes, once, and stop fit() from doing it per call.

    Keras 3.15's TF fit() starts every dataset's iterator, pulls one batch and all-reduces
    it just to build metrics — on each call (for us: each epoch, a second pipeline start
    with its shuffle-buffer fill), and under MultiWorkerMirroredStrategy that eager reduce
    fails ("Attempt to convert a value (PerReplica ...)"). Once built from shapes there is
    nothing left for it to build.
    """
    import numpy as np

    classes = model.output_shape[-1]
    # On a Keras without these internals it does nothing: fit() keeps its own behaviour.
    keras_internals.build_compiled_state_once(model, (np.zeros((1, image_size, image_size, 3), "float32"),
                                                      np.zeros((1, classes), "float32")))


def keep_all(*_):
    import tensorflow as tf

    return tf.constant(True)


def without_static_shapes(images, labels):
    """Identity that forgets the batch and image sizes (PlaceholderWithDefault's output has the given shape)."""
    import tensorflow as tf

    images = tf.raw_ops.PlaceholderWithDefault(input=images, shape=[None, None, None, images.shape[-1]])
    labels = tf.raw_ops.PlaceholderWithDefault(input=labels, shape=[None] + labels.shape[1:].as_list())
    return images, labels


def install_multi_step(model, steps_per_execution):
    """Run up to `steps_per_execution` steps per host round trip in one tf.function.

    The loop stops early when the iterator runs dry (the last execution of an epoch
    whose steps are not a multiple of steps_per_execution).
    """
    import tensorflow as tf

    def make_train_function():
        strategy = model.distribute_strategy

        def one_step(data):
            outputs = strategy.run(model.train_step, args=(data,))
            return keras_internals.reduce_per_replica(outputs, strategy, reduction="auto")

        @tf.function(reduce_retracing=True)  # as Keras' own: one size-agnostic trace for all stages
        def multi_step(iterator):
            outputs = one_step(next(iterator))
            for _ in tf.range(steps_per_execution - 1):
                data = iterator.get_next_as_optional()
                if not data.has_value():
                    break
                outputs = one_step(data.get_value())
            return outputs

        return multi_step

    keras_internals.install_train_function(model, make_train_function)
