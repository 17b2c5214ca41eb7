"""Mixup / CutMix label weights, RandAugment ops at automl magnitudes, random erasing, seeds, and the
same augmentation under KERAS_BACKEND=jax."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from effnet_keras import data as data_lib
from effnet_keras.data import augment
from effnet_keras.data import randaugment as randaugment_lib
from tests.data.conftest import data_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEVELS = np.array([10.0, 40.0, 70.0, 100.0, 130.0, 160.0, 190.0, 220.0], "float32")


def flat_batch(size=24):
    """Image i is filled with LEVELS[i] and labelled class i: a pixel's value tells its source image."""
    images = np.broadcast_to(LEVELS[:, None, None, None], (len(LEVELS), size, size, 3)).copy()
    return tf.constant(images), tf.constant(np.eye(len(LEVELS), dtype="float32"))


def seed(*values):
    return tf.constant(values, tf.int64)


def check_mixup(images, labels):
    """Every pixel = sum_c weight_c * LEVELS[c]; weights sum to 1 per sample."""
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-6)
    expected = labels @ LEVELS[: labels.shape[1]]
    np.testing.assert_allclose(images, np.broadcast_to(expected[:, None, None, None], images.shape), atol=1e-3)
    return labels


def check_cutmix(images, labels):
    """Each sample's label weight for a class = the fraction of its pixels carrying that class's level."""
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-6)
    for sample, label in zip(images, labels):
        fractions = np.array([(sample[..., 0] == level).mean() for level in LEVELS[: len(label)]])
        np.testing.assert_allclose(fractions.sum(), 1.0)  # nothing but pasted or own pixels
        np.testing.assert_allclose(label, fractions, atol=1e-6)
    return labels


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_label_weights_match_pixel_mixing(alpha):
    images, labels = flat_batch()
    out_images, out_labels = augment.BatchMixer(alpha, 0.0)(images, labels, seed(1, 2))
    weights = check_mixup(out_images.numpy(), out_labels.numpy())
    assert (weights.max(1) < 1.0).any()  # something was mixed


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_cutmix_label_weight_is_each_samples_pasted_area(alpha):
    images, labels = flat_batch(size=23)  # odd size: a real-valued box would differ from the pixel mask
    mixed = []
    for k in range(4):
        out_images, out_labels = augment.BatchMixer(0.0, alpha)(images, labels, seed(3, k))
        mixed.append(check_cutmix(out_images.numpy(), out_labels.numpy()))
    kept = np.concatenate([w.max(1) for w in mixed])
    assert kept.min() < 0.95 and len(np.unique(np.round(kept, 4))) > 4  # per-sample weights, not one batch mean


def test_mixup_and_cutmix_together_split_the_batch():
    images, labels = flat_batch()
    out_images, out_labels = augment.BatchMixer(0.4, 0.6)(images, labels, seed(5, 6))
    out_images, out_labels = out_images.numpy(), out_labels.numpy()
    check_mixup(out_images[:4], out_labels[:4])
    check_cutmix(out_images[4:], out_labels[4:])
    # partners come from the same half
    assert np.all(out_labels[:4, 4:] == 0) and np.all(out_labels[4:, :4] == 0)


def test_pipeline_mixup_cutmix_labels_are_soft_and_sum_to_one():
    cfg = data_config("digits", mixup_alpha=0.3, cutmix_alpha=0.5)
    images, labels = next(iter(data_lib.build_dataset(cfg, split="train", image_size=32, batch_size=16, seed=2)))
    labels = labels.numpy()
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-6)
    assert ((labels > 0) & (labels < 1)).any()
    assert 0.0 <= images.numpy().min() and images.numpy().max() <= 255.0


def test_random_erasing_grey_box_of_the_asked_area():
    images = tf.constant(np.full((6, 40, 40, 3), 30.0, "float32"))
    out = augment.RandomErasing(1.0, scale=(0.25, 0.25))(images, seed(7, 7)).numpy()
    grey = (out[..., 0] == augment.GREY).mean(axis=(1, 2))
    np.testing.assert_allclose(grey, 0.25, atol=0.06)  # sides sqrt(0.25) = half the image side
    never = augment.RandomErasing(0.0)(images, seed(7, 7)).numpy()
    np.testing.assert_array_equal(never, images.numpy())


# ---------------------------------------------------------------------- RandAugment


def structured_image():
    """A structured 32 px image spanning 40..200: gradients, a bright square, a dark bar."""
    yy, xx = np.mgrid[0:32, 0:32].astype("float32")
    image = np.stack([40 + 4 * xx, 40 + 4 * yy, 200 - 2 * (xx + yy) / 2], -1)
    image[8:16, 8:16] = 200.0
    image[20:24, :] = 40.0
    return tf.constant(np.clip(image, 40, 200))


def run_op(name, magnitude, image, seed_values=(1, 1)):
    layer = dict(randaugment_lib.randaugment_ops(magnitude))[name]
    return augment.apply_layer(layer, image[None], seed(*seed_values))[0].numpy()


@pytest.mark.parametrize("name", [name for name, _ in randaugment_lib.randaugment_ops(10.0)])
def test_every_randaugment_op_changes_the_image_within_range(name):
    image = structured_image()
    out = run_op(name, 10.0, image)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out - image.numpy()).max() > 1.0, name


def test_randaugment_op_strengths_follow_automl_magnitude():
    image = structured_image()
    pixels = image.numpy()
    np.testing.assert_allclose(run_op("invert", 10.0, image), 255.0 - pixels)
    posterized = run_op("posterize", 10.0, image)  # level 1: 4 bits kept
    np.testing.assert_array_equal(posterized % 16, 0)
    assert len(np.unique(run_op("posterize", 5.0, image) % 4)) == 1  # level 0.5: 6 bits
    solarized = run_op("solarize", 10.0, image)  # threshold 128: pixels >= 128 inverted
    np.testing.assert_allclose(solarized, np.where(pixels >= 128, 255 - pixels, pixels))
    for geometric in ("rotate", "shear_x", "translate_y"):
        np.testing.assert_allclose(run_op(geometric, 0.0, image), pixels)  # magnitude 0: identity
    # cutout side 0.27 * level of the image: 8 px at magnitude 10 on 32 px
    grey_fraction = (run_op("cutout", 10.0, tf.fill([32, 32, 3], 10.0))[..., 0] == augment.GREY).mean()
    assert grey_fraction == pytest.approx((0.27 * 32) ** 2 / 32**2, abs=0.03)
    # stronger magnitude, larger geometric change (same seed)
    change = [np.abs(run_op("rotate", m, image) - pixels).mean() for m in (3.0, 10.0, 20.0)]
    assert change[0] < change[1] < change[2]
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 30\].*31"):
        randaugment_lib.randaugment_ops(31)


def test_randaugment_is_per_image_and_seeded():
    policy = randaugment_lib.RandAugment(15.0, num_layers=2)
    image = structured_image()
    outs = [policy(image, seed(9, k)).numpy() for k in range(12)]
    again = policy(image, seed(9, 0)).numpy()
    np.testing.assert_array_equal(outs[0], again)
    distinct = {out.tobytes() for out in outs}
    assert len(distinct) >= 10  # a different op pair / strength per image seed
    assert all(out.min() >= 0 and out.max() <= 255 for out in outs)


def test_seeded_pipeline_is_reproducible_under_parallel_maps():
    """Per-image and per-batch stateless seeds: the same seed gives the same batches however tf.data's
    parallel maps interleave (Keras' own stateful SeedGenerator would not)."""
    cfg = data_config("digits", randaug_magnitude=15.0, random_erasing=0.5, mixup_alpha=0.2)

    def batches():
        ds = data_lib.build_dataset(cfg, split="train", image_size=24, batch_size=32, seed=11, repeat=False)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(2)]

    for (xa, ya), (xb, yb) in zip(batches(), batches()):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from effnet_keras import data as data_lib
    from tests.data.conftest import data_config
    assert keras.backend.backend() == "jax", keras.backend.backend()
    cfg = data_config("digits", randaug_magnitude=15.0, random_erasing=0.5, mixup_alpha=0.2, cutmix_alpha=0.5)
    x, y = next(iter(data_lib.build_dataset(cfg, split="train", image_size=24, batch_size=8, seed=4)))
    np.savez(sys.argv[1], x=x.numpy(), y=y.numpy())
    """
)


def test_same_augmentation_under_the_jax_backend(tmp_path):
    """Keras' preprocessing layers run their TensorFlow code inside tf.data under any backend: a JAX-backend
    process gives bit-identical batches for the same seed. Both sides run in fresh processes: tf.data's
    seeded ops also fold in TF's global seed, which earlier tests in this process may have set."""
    batches = {}
    for backend in ("jax", "tensorflow"):
        path = str(tmp_path / f"{backend}.npz")
        out = subprocess.run([sys.executable, "-c", JAX_SCRIPT.replace('"jax"', repr(backend)), path], cwd=ROOT,
                             capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2"))
        assert out.returncode == 0, out.stderr[-3000:]
        batches[backend] = np.load(path)
    np.testing.assert_array_equal(batches["jax"]["x"], batches["tensorflow"]["x"])
    np.testing.assert_array_equal(batches["jax"]["y"], batches["tensorflow"]["y"])
    assert batches["jax"]["x"].std() > 0
