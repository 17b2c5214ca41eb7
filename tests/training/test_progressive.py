"""ProgressiveSchedule: Algorithm 1 values for the V2-S/M/L(/XL) recipes, serialisation, errors, TF-free
import, and stage regularisation reaching a model's layers without rebuilding it."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from effnet_keras.training import config as config_lib
from effnet_keras.training.progressive import ProgressiveSchedule
from effnet_keras.training.progressive import Stage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Paper Table 6 (min, max): size, RandAugment, Mixup, dropout. XL reuses L's row.
TABLE6 = {
    "s": (128, 300, 5, 15, 0.0, 0.0, 0.1, 0.3),
    "m": (128, 380, 5, 20, 0.0, 0.2, 0.1, 0.4),
    "l": (128, 380, 5, 25, 0.0, 0.4, 0.1, 0.5),
    "xl": (128, 380, 5, 25, 0.0, 0.4, 0.1, 0.5),
}
# automl's released configs: final size, RandAugment max, mixup = cutmix alpha, constant dropout.
AUTOML = {"s": (300, 10, 0.0, 0.2), "m": (384, 15, 0.2, 0.3), "l": (384, 20, 0.5, 0.4), "xl": (384, 20, 0.5, 0.4)}


def recipe_schedule(kind, size):
    cfg = config_lib.build_config(model_name=f"efficientnetv2-{size}", dataset_cfg="imagenet",
                                  config_file=config_lib.config_path("recipes", f"progressive_{kind}_{size}.yaml"))
    return ProgressiveSchedule.from_config(cfg)


def linear(start, end, i, stages=4):
    return start + (end - start) * i / (stages - 1)


@pytest.mark.parametrize("size", ["s", "m", "l", "xl"])
def test_paper_recipes_follow_algorithm_1(size):
    s0, se, ra0, rae, mix0, mixe, drop0, drope = TABLE6[size]
    schedule = recipe_schedule("paper", size)
    assert len(schedule.stages) == 4
    for i, stage in enumerate(schedule.stages):
        exact = linear(s0, se, i)
        # last stage exactly the final size, the others rounded down to a multiple of 8
        assert stage.image_size == (se if i == 3 else int(exact // 8 * 8))
        assert stage.randaug_magnitude == pytest.approx(linear(ra0, rae, i))
        assert stage.mixup_alpha == pytest.approx(linear(mix0, mixe, i))
        assert stage.cutmix_alpha == 0.0
        assert stage.dropout_rate == pytest.approx(linear(drop0, drope, i))
        assert stage.drop_connect_rate == pytest.approx(0.2)
    assert [(s.start_epoch, s.end_epoch) for s in schedule.stages] == [(0, 87), (87, 175), (175, 262), (262, 350)]
    if size == "s":
        assert [s.image_size for s in schedule.stages] == [128, 184, 240, 300]
        assert [s.randaug_magnitude for s in schedule.stages] == pytest.approx([5, 25 / 3, 35 / 3, 15])


@pytest.mark.parametrize("size", ["s", "m", "l", "xl"])
def test_automl_recipes_match_automl_formulas(size):
    final, ram, alpha, dropout = AUTOML[size]
    schedule = recipe_schedule("automl", size)
    for k, stage in enumerate(schedule.stages):
        ratio = (k + 1) / 4
        assert stage.image_size == int(128 + (final - 128) * ratio)  # automl: no 128 px stage
        assert stage.randaug_magnitude == pytest.approx(np.linspace(5, ram, 4)[k])
        assert stage.mixup_alpha == pytest.approx(np.linspace(0, alpha, 4)[k])
        assert stage.cutmix_alpha == pytest.approx(np.linspace(0, alpha, 4)[k])
        assert stage.dropout_rate == pytest.approx(dropout)  # automl deletes its dropout ramp
    if size == "s":
        assert [s.image_size for s in schedule.stages] == [171, 214, 257, 300]


def test_digits_recipe_three_stages():
    cfg = config_lib.build_config(dataset_cfg="digits",
                                  config_file=config_lib.config_path("recipes", "progressive_digits.yaml"))
    schedule = ProgressiveSchedule.from_config(cfg)
    assert [s.image_size for s in schedule.stages] == [32, 48, 64]
    assert [s.randaug_magnitude for s in schedule.stages] == [2.0, 4.0, 6.0]
    assert [s.dropout_rate for s in schedule.stages] == pytest.approx([0.05, 0.1, 0.15])
    assert [s.drop_connect_rate for s in schedule.stages] == pytest.approx([0.05, 0.075, 0.1])
    assert [(s.start_epoch, s.end_epoch) for s in schedule.stages] == [(0, 4), (4, 8), (8, 12)]


def test_from_config_nulls_fall_back_to_data_and_model_values():
    cfg = config_lib.build_config(dataset_cfg="digits", hparam_str=(
        "train.epochs=6,train.image_size=64,train.progressive.num_stages=3,train.progressive.start_image_size=32,"
        "data.ram=9,data.mixup_alpha=0.3,model.dropout_rate=0.25,model.drop_connect_rate=0.1"))
    stages = ProgressiveSchedule.from_config(cfg).stages
    # base.yaml: randaug [5, null] -> ends at data.randaug_magnitude (data.ram, its earlier name); mixup [0, null]; dropout [null, null] -> constant
    assert [s.randaug_magnitude for s in stages] == [5.0, 7.0, 9.0]
    assert [s.mixup_alpha for s in stages] == pytest.approx([0.0, 0.15, 0.3])
    assert {s.dropout_rate for s in stages} == {0.25} and {s.drop_connect_rate for s in stages} == {0.1}
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout_rate=None))
    with pytest.raises(ValueError, match="dropout_rate.*model.dropout_rate"):
        ProgressiveSchedule.from_config(cfg)
    assert ProgressiveSchedule.from_config(cfg, model_dropout_rate=0.2).stages[0].dropout_rate == 0.2


def test_from_config_takes_a_run_config_and_from_section_a_section():
    from effnet_keras import config_schema

    cfg = config_lib.build_config(model_name="efficientnetv2-s", dataset_cfg="imagenet",
                                  config_file=config_lib.config_path("recipes", "progressive_paper_s.yaml"))
    from_dict = ProgressiveSchedule.from_config(cfg)
    assert ProgressiveSchedule.from_config(config_schema.RunConfig.from_dict(cfg.to_dict())) == from_dict
    section = dict(num_stages=4, total_epochs=350, image_size=[128, 300], randaug_magnitude=[5, 15],
                   mixup_alpha=[0, 0], cutmix_alpha=0, dropout_rate=[0.1, 0.3], drop_connect_rate=0.2,
                   batch_growth=False)
    assert ProgressiveSchedule.from_section(section) == from_dict
    # One form per constructor: a section is not a run config, nor the other way round.
    with pytest.raises(ValueError, match="needs a run config.*from_section"):
        ProgressiveSchedule.from_config(section)
    with pytest.raises(ValueError, match="use ProgressiveSchedule.from_config"):
        ProgressiveSchedule.from_section(cfg)
    one = ProgressiveSchedule.from_section(dict(num_stages=1, epochs=3, start_image_size=64, end_image_size=96,
                                                randaug_magnitude=[2, 6]))
    assert [(s.image_size, s.randaug_magnitude) for s in one.stages] == [(96, 6.0)]
    with pytest.raises(ValueError, match="has a null; the section form needs numbers"):
        ProgressiveSchedule.from_section(section | {"mixup_alpha": [0.0, None]})


def test_single_stage_and_fixed():
    fixed = ProgressiveSchedule.fixed(total_epochs=5, image_size=227, randaug_magnitude=10, dropout_rate=0.2)
    (stage,) = fixed.stages
    assert (stage.image_size, stage.randaug_magnitude, stage.dropout_rate) == (227, 10.0, 0.2)  # no rounding
    assert (stage.start_epoch, stage.end_epoch) == (0, 5)
    one = ProgressiveSchedule(1, 3, (128, 300), randaug_magnitude=(5, 15))
    assert (one.stages[0].image_size, one.stages[0].randaug_magnitude) == (300, 15.0)  # M = 1: the end values


def test_stage_for_epoch_and_uneven_epoch_split():
    schedule = ProgressiveSchedule(3, 10, (64, 128))
    assert [(s.start_epoch, s.end_epoch) for s in schedule.stages] == [(0, 3), (3, 6), (6, 10)]
    assert [schedule.stage_for_epoch(e).index for e in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match=r"epoch must be an integer in \[0, 10\). Received: 10"):
        schedule.stage_for_epoch(10)


def test_size_multiple_32_for_coatnet_style_rounding():
    schedule = ProgressiveSchedule(4, 8, (128, 224), size_multiple=32)
    assert [s.image_size for s in schedule.stages] == [128, 160, 192, 224]
    assert all(s.image_size % 32 == 0 for s in schedule.stages)


def test_dict_round_trip_is_json_and_catches_edited_stages():
    schedule = ProgressiveSchedule(4, 350, (128, 300), randaug_magnitude=(5, 15), mixup_alpha=(0, 0.2),
                                   dropout_rate=(0.1, 0.3), drop_connect_rate=0.2, batch_growth=True)
    data = json.loads(json.dumps(schedule.to_dict()))
    again = ProgressiveSchedule.from_dict(data)
    assert again == schedule and again.batch_growth is True
    assert [Stage.from_dict(s.to_dict()) for s in schedule.stages] == schedule.stages
    data["stages"][1]["image_size"] = 200
    with pytest.raises(ValueError, match="listed stages differ"):
        ProgressiveSchedule.from_dict(data)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_stages=0), "num_stages must be a positive integer"),
    (dict(total_epochs=2), "total_epochs=2 is fewer than num_stages=4"),
    (dict(image_size=(300, 128)), r"image_size must be whole pixels with 1 <= start <= end. Received: \[300.0, 128"),
    (dict(dropout_rate=(0.1, 1.2)), r"dropout_rate values must be in \[0, 1\). Received: \[0.1, 1.2\]"),
    (dict(randaug_magnitude=(5, 40)), "automl's 0-30 scale"),
    (dict(mixup_alpha="big"), "mixup_alpha must be a number or a"),
    (dict(size_multiple=0), "size_multiple must be a positive integer"),
])
def test_bad_values_name_the_argument(kwargs, message):
    args = dict(num_stages=4, total_epochs=8, image_size=(128, 300)) | kwargs
    with pytest.raises(ValueError, match=message):
        ProgressiveSchedule(**args)


def test_progressive_module_does_not_need_tensorflow():
    """With TensorFlow blocked (the JAX GPU box), the schedule imports and builds; it imports neither TF nor Keras
    itself (the effnet_keras package imports Keras, which on the TF backend would load TF)."""
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import ast, inspect
        import effnet_keras.training.progressive as progressive
        tree = ast.parse(inspect.getsource(progressive))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported <= {"dataclasses", "math", "effnet_keras"}, imported  # effnet_keras.config_schema: stdlib
        print(progressive.ProgressiveSchedule(4, 350, (128, 300)).stages[1].image_size, "tensorflow" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, KERAS_BACKEND="jax"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["184", "False"]


def test_stage_regularisation_reaches_the_model_without_rebuilding():
    """set_regularization with each stage's rates changes the live layers; weights and optimizer state stay."""
    import dataclasses

    import keras

    import effnet_keras
    from effnet_keras.layers import StochasticDepth
    from effnet_keras.models import mbconv_net
    from effnet_keras.models import efficientnet_v2

    schedule = ProgressiveSchedule(3, 3, (32, 32), dropout_rate=(0.0, 0.5), drop_connect_rate=(0.0, 0.3))
    # The nano V2 net cut to its first four block stages: same builder and layer types, ~1 s to build.
    spec = dataclasses.replace(efficientnet_v2.v2_spec("nano"), blocks=efficientnet_v2.BASE_BLOCKS[:4], depth=1.0,
                               head_filters=64)
    model = mbconv_net.build_mbconv_net(spec, input_shape=(32, 32, 3), classes=4, dropout_rate=0.1)
    # Eager steps: no re-trace per stage (the trainer re-traces; set_regularization drops its train function).
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy",
                  run_eagerly=True)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.eye(4, dtype="float32")
    depth_layers = [layer for layer in model.layers if isinstance(layer, StochasticDepth)]
    dropout = model.get_layer("top_dropout")
    assert depth_layers
    model.train_on_batch(x, y)  # optimizer state exists from here on
    for stage in schedule.stages:
        weights_before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
        effnet_keras.set_regularization(model, dropout_rate=stage.dropout_rate,
                                        drop_connect_rate=stage.drop_connect_rate)
        assert dropout.rate == pytest.approx(stage.dropout_rate)
        fractions = [layer.schedule_fraction for layer in depth_layers]
        assert [layer.rate for layer in depth_layers] == pytest.approx([stage.drop_connect_rate * f for f in fractions])
        # same model, nothing re-initialised
        for before, after in zip(weights_before, model.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(after), before)
    momentum = [keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables]
    model.train_on_batch(x, y)  # a fresh train step with the last stage's rates, same optimizer
    assert int(model.optimizer.iterations.numpy()) == 2
    assert any(np.abs(keras.ops.convert_to_numpy(v) - m).max() > 0 for v, m in zip(model.optimizer.variables, momentum))
    # The new rates are what the forward pass uses: at rate 0 two training passes agree, at 0.5 they do not.
    effnet_keras.set_regularization(model, dropout_rate=0.0, drop_connect_rate=0.0)
    a, b = (keras.ops.convert_to_numpy(model(x, training=True)) for _ in range(2))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    effnet_keras.set_regularization(model, dropout_rate=0.5, drop_connect_rate=0.3)
    a, b = (keras.ops.convert_to_numpy(model(x, training=True)) for _ in range(2))
    assert not np.allclose(a, b)
