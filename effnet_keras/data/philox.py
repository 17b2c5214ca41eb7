"""TensorFlow's stateless random numbers (Philox-4x32-10) as plain integer ops, over many seeds at once.

RandAugment draws ~20 chained stateless numbers per image (op choices, then each op's
uniforms, every draw from its own folded seed). As TF kernels that is ~85 ops per image,
~0.17 ms on one core inside tf.data (measured: more than its two pixel kernels' launch
cost). Philox is integer arithmetic (32x32->64-bit products, xors, adds), so the same
numbers can be computed as vector ops over a whole batch of seeds, XLA-compiled or not:
the functions here return, bit for bit, what TF's kernels (`tf.random.experimental.
stateless_fold_in`, `tf.random.stateless_uniform`) return for the same seeds
(tests/data/test_philox.py checks them against TF's ops on int32 and int64 seeds of either sign).
XLA's own stateless random ops use another bit generator, hence this module.

Seeds are int64 [..., 2]; an int32 seed is the same seed sign-extended (as TF's kernels read it).
Every function works elementwise over the leading axes.
"""

import tensorflow as tf

_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)  # Philox-4x32's round multipliers
_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)  # added to the key between rounds
_SEED_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)  # TF's fixed key for turning a seed into a key and counter
_ROUNDS = 10


def _u32(value):
    return tf.constant(value, tf.uint32)


def _multiply_low_high(multiplier, word):
    product = tf.cast(word, tf.uint64) * tf.constant(multiplier, tf.uint64)
    return tf.cast(product, tf.uint32), tf.cast(tf.bitwise.right_shift(product, tf.constant(32, tf.uint64)), tf.uint32)


def block(counter, key):
    """The block of 4 uint32 words Philox-4x32-10 gives for a counter (4 words) and key (2 words)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(_ROUNDS):
        if round_index:
            k0, k1 = k0 + _u32(_KEY_STEPS[0]), k1 + _u32(_KEY_STEPS[1])
        low0, high0 = _multiply_low_high(_MULTIPLIERS[0], c0)
        low1, high1 = _multiply_low_high(_MULTIPLIERS[1], c2)
        c0, c1, c2, c3 = (tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(high1, c1), k0), low1,
                          tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(high0, c3), k1), low0)
    return c0, c1, c2, c3


def _words(value):
    """int64 -> its low and high uint32 words."""
    bits = tf.bitcast(value, tf.uint64)
    return tf.cast(bits, tf.uint32), tf.cast(tf.bitwise.right_shift(bits, tf.constant(32, tf.uint64)), tf.uint32)


def first_words(seed):
    """The first 4 uint32 words of the stream `seed` (int [..., 2]) names: what every stateless op
    draws first (`tf.raw_ops.StatelessRandomGetKeyCounter`'s key and counter, then one Philox block)."""
    seed = tf.cast(seed, tf.int64)
    low0, high0 = _words(seed[..., 0])
    low1, high1 = _words(seed[..., 1])
    key = tuple(tf.fill(tf.shape(low0), _u32(word)) for word in _SEED_SCRAMBLE_KEY)
    mixed = block((low0, high0, low1, high1), key)
    zero = tf.zeros_like(low0)
    return block((zero, zero, mixed[2], mixed[3]), (mixed[0], mixed[1]))


def uniform(word):
    """A uint32 word -> float32 in [0, 1), as TF's float32 uniform makes it (23 random mantissa bits, minus one)."""
    bits = tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(word, _u32(0x7FFFFF)), _u32(127 << 23))
    return tf.bitcast(bits, tf.float32) - 1.0


def uniform_int(word, low, high):
    """A uint32 word -> int32 in [low, high), as `tf.random.stateless_uniform(..., dtype=tf.int32)`."""
    return low + tf.bitcast(word % _u32(high - low), tf.int32)


def fold_in(seed, data):
    """`tf.random.experimental.stateless_fold_in(seed, data)` for a Python int `data`, seed int [..., 2].

    TF returns an int32 seed; here it is int64, sign-extended (the same seed to every stateless op)."""
    folded = tf.cast(tf.bitcast(first_words(seed)[0], tf.int32), tf.int64)
    return tf.stack([folded, tf.fill(tf.shape(folded), tf.constant(data, tf.int64))], -1)
