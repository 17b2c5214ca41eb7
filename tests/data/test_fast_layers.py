"""Each fast RandAugment kernel gives its Keras parent's output for the same random draws, compiled or not."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet_keras.data import augment
from effnet_keras.data import randaugment as randaugment_lib
from effnet_keras.data import fast_layers

GEO = dict(interpolation="nearest", fill_mode="constant", fill_value=128.0, dtype="float32")
COLOR = dict(value_range=(0, 255), dtype="float32")

# (fast class, Keras parent, constructor kwargs, atol): RandAugment's settings at strong magnitudes.
PAIRS = {
    "rotation": (fast_layers.FastRandomRotation, keras.layers.RandomRotation, dict(factor=(-0.1, 0.1), **GEO), 0),
    "shear_x": (fast_layers.FastRandomShear, keras.layers.RandomShear, dict(x_factor=(0.4, 0.4), y_factor=0.0, **GEO), 0),
    "shear_y": (fast_layers.FastRandomShear, keras.layers.RandomShear, dict(x_factor=0.0, y_factor=(0.4, 0.4), **GEO), 0),
    "translation": (fast_layers.FastRandomTranslation, keras.layers.RandomTranslation,
                    dict(height_factor=0.4, width_factor=0.3, **GEO), 0),
    "auto_contrast": (fast_layers.FastAutoContrast, keras.layers.AutoContrast, COLOR, 2e-3),
    "contrast": (fast_layers.FastRandomContrast, keras.layers.RandomContrast, dict(factor=(0.8, 0.8), **COLOR), 2e-3),
    "color": (fast_layers.FastRandomColorDegeneration, keras.layers.RandomColorDegeneration,
              dict(factor=0.9, **COLOR), 2e-3),
    "sharpness": (fast_layers.FastRandomSharpness, keras.layers.RandomSharpness,
                  dict(factor=(0.05, 0.95), **COLOR), 2e-3),
    "equalize": (fast_layers.FastEqualization, keras.layers.Equalization, COLOR, 0),
    "invert": (fast_layers.FastRandomInvert, keras.layers.RandomInvert, dict(factor=(1.0, 1.0), **COLOR), 0),
    "erasing": (fast_layers.FastRandomErasing, keras.layers.RandomErasing,
                dict(factor=(1.0, 1.0), scale=(0.2, 0.3), fill_value=128.0, value_range=(0, 255), dtype="float32"), 0),
}


def photo(seed, height=36, width=44, integer=False):
    """A smooth random image (real photos are smooth; histograms then have gaps and peaks)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (1, 6, 7, 3)).astype("float32")
    image = tf.image.resize(coarse, (height, width), method="bicubic").numpy()
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype("float32")
    return np.round(image) if integer else image


def seed(a, b):
    return tf.constant([a, b], tf.int64)


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer"])
def test_fast_kernel_equals_its_keras_parent(name, integer):
    fast_cls, keras_cls, kwargs, atol = PAIRS[name]
    fast, reference = fast_cls(**kwargs), keras_cls(**kwargs)
    for trial in range(4):
        image = photo(trial, integer=integer)
        ours = augment.apply_layer(fast, image, seed(trial, 11)).numpy()
        theirs = augment.apply_layer(reference, image, seed(trial, 11)).numpy()
        assert ours.shape == theirs.shape == image.shape and ours.dtype == np.float32
        if atol:
            np.testing.assert_allclose(ours, theirs, atol=atol, rtol=0, err_msg=f"{name}, trial {trial}")
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}, trial {trial}")
        assert not np.array_equal(ours, image) or name == "auto_contrast", f"{name} left the image unchanged"


@pytest.mark.parametrize("name", ["auto_contrast", "equalize"])
def test_constant_channel_is_left_as_it_is(name):
    fast_cls, keras_cls, kwargs, _ = PAIRS[name]
    image = photo(5)
    image[..., 1] = 77.25  # one flat channel: Keras returns it unchanged
    ours = augment.apply_layer(fast_cls(**kwargs), image, seed(1, 2)).numpy()
    theirs = augment.apply_layer(keras_cls(**kwargs), image, seed(1, 2)).numpy()
    np.testing.assert_array_equal(ours[..., 1], image[..., 1])
    np.testing.assert_allclose(ours, theirs, atol=2e-3, rtol=0)


def test_warp_nearest_equals_image_projective_transform_for_a_batch():
    rng = np.random.default_rng(0)
    images = np.concatenate([photo(1), photo(2)]).astype("float32")
    for _ in range(5):
        angle = rng.uniform(-1, 1)
        transforms = np.array([
            [np.cos(angle), -np.sin(angle), rng.uniform(-9, 9), np.sin(angle), np.cos(angle), rng.uniform(-9, 9), 0, 0],
            [1.0, rng.uniform(-0.5, 0.5), rng.uniform(-9, 9), rng.uniform(-0.5, 0.5), 1.0, 0.0, 0, 0],
        ], np.float32)
        ours = fast_layers.warp_nearest(tf.constant(images), tf.constant(transforms), 128.0).numpy()
        theirs = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=images.shape[1:3], fill_value=128.0,
            interpolation="NEAREST", fill_mode="CONSTANT").numpy()
        np.testing.assert_array_equal(ours, theirs)


def test_solarization_matches_keras_at_fixed_threshold_and_addition():
    image = photo(4)
    for threshold, addition in ((200.0, 0.0), (128.0, 66.0)):
        ours = augment.apply_layer(fast_layers.FixedSolarization(threshold, addition, dtype="float32"), image,
                                   seed(0, 1)).numpy()
        keras_layer = keras.layers.Solarization(value_range=(0, 255), dtype="float32")
        transformation = {"additions": tf.fill([1, 1, 1, 1], addition), "thresholds": tf.fill([1, 1, 1, 1], threshold)}
        theirs = keras_layer.transform_images(tf.constant(image), transformation).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_solarization_config_round_trip_keeps_threshold_and_addition():
    layer = fast_layers.FixedSolarization(128.0, 66.0, dtype="float32")
    copy = fast_layers.FixedSolarization.from_config(layer.get_config())
    assert (copy.fixed_threshold, copy.fixed_addition) == (128.0, 66.0)
    image = photo(5)
    np.testing.assert_array_equal(augment.apply_layer(copy, image, seed(0, 1)).numpy(),
                                  augment.apply_layer(layer, image, seed(0, 1)).numpy())


def test_batches_fall_back_to_the_keras_kernels():
    images = np.concatenate([photo(1), photo(2)])
    for name, (fast_cls, keras_cls, kwargs, atol) in PAIRS.items():
        ours = augment.apply_layer(fast_cls(**kwargs), images, seed(3, 4)).numpy()
        theirs = augment.apply_layer(keras_cls(**kwargs), images, seed(3, 4)).numpy()
        np.testing.assert_allclose(ours, theirs, atol=atol or 1e-6, rtol=0, err_msg=name)


EXACT_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "cutout",
             "invert", "equalize", "posterize", "solarize", "solarize_add", "auto_contrast")


def forced_record(randaugment, op_index, seed_values, num_layers=1):
    """RandAugment's draw record for op `op_index` (every layer) on one seed, its first `num_layers` layers."""
    record = randaugment.draw(tf.constant([seed_values], tf.int64), choice=[op_index] * randaugment.num_layers)
    return {key: value[0, :num_layers] for key, value in record.items()}


def layer_draw(layer, image, seed_values, layer_index=0):
    """The op layer's own get_random_transformation on RandAugment's seed for layer `layer_index` (graph)."""
    def draw(s):
        op_seed = augment.fold(augment.fold(s, layer_index), 7919)
        with augment.tensorflow_backend(layer):
            return layer.get_random_transformation(tf.zeros(image.shape), training=True,
                                                   seed=augment.ElementSeed(op_seed))
    return tf.function(draw, autograph=False)(tf.constant(seed_values, tf.int64))


def test_randaugment_draws_equal_each_layers_own_draws():
    """RandAugmentDraws' draw pass and its transformations, XLA-compiled as RandAugment runs them, give for every op
    exactly its Keras layer's draw on the same seed (at 300 x 260 px: a fused multiply-add that rounds a warp
    coordinate differently shows up among the hundreds of row and column terms)."""
    randaugment = randaugment_lib.RandAugment(15.0)
    image = tf.zeros([1, 300, 260, 3])
    for op_index, (name, layer) in enumerate(randaugment.ops):
        transformation = randaugment_lib.compiled(lambda record, layer_index: randaugment.draws.transformation(
            op_index, randaugment_lib.RandAugmentDraws.row(record, layer_index), 300, 260) or {})
        for trial in range(4):
            seed_values = (trial, 31 * op_index + 7)
            record = forced_record(randaugment, op_index, seed_values, num_layers=2)
            for layer_index in range(2):
                ours = transformation(record, tf.constant(layer_index)) or None
                theirs = layer_draw(layer, image, seed_values, layer_index)
                if ours is None:
                    continue
                for key, value in ours.items():
                    expected = theirs[key]
                    if key == "warp_axes":
                        for axis in value:
                            np.testing.assert_array_equal(value[axis], expected[axis], err_msg=f"{name} {axis}")
                    else:
                        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected), err_msg=f"{name} {key}")
                        assert np.asarray(value).dtype == np.asarray(expected).dtype, (name, key)


@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer"])
def test_every_randaugment_op_compiled_equals_the_keras_kernel(integer):
    """RandAugment runs each op's pixel kernel XLA-compiled (all ops in one call): the uncompiled kernel's output
    on the layer's own draw."""
    randaugment = randaugment_lib.RandAugment(15.0)
    keras_parents = {cls: parent for cls, parent, _, _ in PAIRS.values()}
    for index, (name, layer) in enumerate(randaugment.ops):
        for trial in range(3):
            image = tf.constant(photo(trial + 10 * index, integer=integer))
            seed_values = (trial, index)
            compiled = randaugment.apply_ops(image, forced_record(randaugment, index, seed_values)).numpy()
            transformation = layer_draw(layer, image, seed_values)
            with augment.tensorflow_backend(layer):
                uncompiled = layer.transform_images(image, transformation, training=True).numpy()
            parent = keras_parents.get(type(layer))
            # ... and the uncompiled kernel is Keras' own result on this draw (erasing draws its box in its own
            # format: its equality with Keras goes through the same seed, in test_fast_kernel_equals_its_keras_parent).
            if parent is not None and name != "cutout":
                reference = parent.from_config(layer.get_config())
                with augment.tensorflow_backend(reference):
                    theirs = reference.transform_images(image, transformation, training=True).numpy()
                np.testing.assert_allclose(uncompiled, theirs, atol=2e-3, rtol=0, err_msg=name)
            if name in EXACT_OPS:
                np.testing.assert_array_equal(compiled, uncompiled, err_msg=f"{name}, trial {trial}")
            else:  # fused multiply-adds may round the last bit differently
                np.testing.assert_allclose(compiled, uncompiled, atol=2e-3, rtol=0, err_msg=f"{name}, trial {trial}")


def test_randaugment_applies_the_drawn_ops_in_order():
    """Two layers: the choices fold(seed, layer) picks, each op on its layer's draw, the first op's output into the
    second (the uncompiled sequence through apply_layer; last-bit FMA differences may cross a later threshold)."""
    randaugment = randaugment_lib.RandAugment(15.0, num_layers=2)
    image = photo(3, integer=True)[0]
    for trial in range(24):
        seed_values = (trial, 5)
        seed_tensor = tf.constant(seed_values, tf.int64)
        expected = image[None]
        for layer_index in range(2):
            layer_seed = augment.fold(seed_tensor, layer_index)
            choice = int(tf.random.stateless_uniform([], layer_seed, 0, 16, dtype=tf.int32))
            layer = randaugment.ops[choice][1]
            expected = augment.apply_layer(layer, expected, augment.fold(layer_seed, 7919)).numpy()
        ours = randaugment(tf.constant(image), seed_tensor).numpy()
        off = np.abs(ours - expected[0]) > 2e-3
        assert off.mean() < 1e-3, (trial, off.mean())


def test_rotation_cosine_and_sine_equal_keras_on_many_angles():
    """A batch's draws take the cosines and sines of its angles as Keras does for one angle (Eigen's scalar cos;
    its vectorised cos rounds differently): 256 angles against the layer's own matrix."""
    randaugment = randaugment_lib.RandAugment(15.0)
    rotate = [name for name, _ in randaugment.ops].index("rotate")
    layer = randaugment.ops[rotate][1]
    seeds = np.random.default_rng(0).integers(-2**40, 2**40, (256, 2))
    record = randaugment.draw(tf.constant(seeds, tf.int64), choice=[rotate] * 2)

    def matrix(choice, values):
        row = {"choice": choice[0], "values": values[0]}
        return randaugment.draws.transformation(rotate, row, 300, 260)["rotation_matrix"][0]

    ours = randaugment_lib.compiled(lambda r: tf.map_fn(lambda row: matrix(*row), (r["choice"], r["values"]),
                                                        fn_output_signature=tf.float32))(record).numpy()

    @tf.function(autograph=False)
    def theirs(seed_values):
        with augment.tensorflow_backend(layer):
            return layer.get_random_transformation(tf.zeros([1, 300, 260, 3]), training=True, seed=augment.ElementSeed(
                augment.fold(augment.fold(seed_values, 0), 7919)))["rotation_matrix"][0]

    expected = np.stack([theirs(tf.constant(s, tf.int64)).numpy() for s in seeds])
    assert len(np.unique(expected[:, 0])) > 200  # distinct angles
    np.testing.assert_array_equal(ours, expected)
