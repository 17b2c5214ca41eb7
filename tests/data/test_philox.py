"""philox: TF's stateless random numbers as integer ops, bit for bit, compiled or not, over many seeds at once."""

import numpy as np
import pytest
import tensorflow as tf

from effnet_keras.data import augment
from effnet_keras.data import philox
from effnet_keras.data import randaugment as randaugment_lib


def seeds(count, dtype, seed=0):
    info = np.iinfo(np.int32 if dtype == tf.int32 else np.int64)
    return np.random.default_rng(seed).integers(info.min, info.max, (count, 2), dtype=np.int64)


@pytest.mark.parametrize("dtype", [tf.int32, tf.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("jit", [False, True], ids=["tf", "xla"])
def test_fold_in_and_uniforms_equal_tensorflows_kernels(dtype, jit):
    values = seeds(200, dtype)

    @tf.function(jit_compile=jit, autograph=False)
    def ours(batch):
        words = philox.first_words(batch)
        return (philox.fold_in(batch, 7919), tf.stack([philox.uniform(word) for word in words], -1),
                philox.uniform_int(words[0], 0, 16))

    folded, uniforms, integers = (value.numpy() for value in ours(tf.constant(values, dtype)))
    for index, value in enumerate(values):
        seed = tf.constant(value, dtype)
        np.testing.assert_array_equal(folded[index], tf.random.experimental.stateless_fold_in(seed, 7919).numpy())
        np.testing.assert_array_equal(uniforms[index], tf.random.stateless_uniform([4], seed).numpy())
        assert integers[index] == tf.random.stateless_uniform([], seed, 0, 16, dtype=tf.int32).numpy()
    assert np.abs(folded).max() > 2**31 - 2**28 and folded.min() < 0  # both signs, int32's full range


def test_randaugment_draws_for_a_batch_equal_the_per_image_tensorflow_draws():
    """RandAugment.draw over 100 seeds: the choices and uniforms TF's kernels draw per image, each uniform scaled
    into its op's range as Keras scales it (a product rounded before the add)."""
    randaugment = randaugment_lib.RandAugment(15.0, num_layers=2)
    draws = randaugment.draws
    values = seeds(100, tf.int64, seed=1)
    record = {key: value.numpy() for key, value in randaugment.draw(tf.constant(values)).items()}
    assert len(np.unique(record["choice"])) == 16
    for index, value in enumerate(values):
        for layer_index in range(2):
            layer_seed = augment.fold(tf.constant(value), layer_index)
            choice = int(tf.random.stateless_uniform([], layer_seed, 0, 16, dtype=tf.int32))
            assert record["choice"][index, layer_index] == choice
            element_seed = augment.ElementSeed(augment.fold(layer_seed, 7919))
            uniforms = tf.concat([tf.random.stateless_uniform([2 if k == 0 else 1], element_seed.next())
                                  for k in range(3)], 0).numpy()
            expected = (uniforms * draws.span[choice]).astype(np.float32) + draws.low[choice]
            np.testing.assert_array_equal(record["values"][index, layer_index, :4], expected, err_msg=str(index))
