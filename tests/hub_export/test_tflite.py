"""TFLite float16 and full-integer int8 files: checked against the float model, refused when they fall short.

The real-weights int8 check (Lite0, raw-pixel input, Grace Hopper still a military uniform) is in
tests/test_tools_known_answer.py; here small models and the refusals.
"""

import json
import os

import keras
import numpy as np
import pytest

import effnet_keras
from effnet_keras.cli import export as export_cli
from effnet_keras.export import export
from effnet_keras.export import tflite

SIZE = 32


def _pixels(count, seed=0):
    """Smooth random images (a few blobs), closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (count, 4, 4, 3)).astype("float32")
    return keras.ops.convert_to_numpy(keras.ops.image.resize(low, (SIZE, SIZE))).clip(0, 255)


@pytest.fixture(scope="module")
def nano():
    keras.utils.set_random_seed(1)
    return effnet_keras.EfficientNetV2Nano(input_shape=(SIZE, SIZE, 3), classes=5, classifier_activation=None)


def test_int8_and_fp16_files_are_checked_and_take_raw_pixels(nano, tmp_path):
    pixels = _pixels(15)
    result = export(nano, str(tmp_path / "cls"), kind="classification", image_size=SIZE, tflite="float,fp16,int8",
                    calibration_images=pixels, min_agreement=0.0, class_names=list("abcde"))
    files = result["tflite"]
    for name in ("model_float32.tflite", "model_fp16.tflite", "model_int8.tflite", "labels.txt"):
        assert os.path.exists(tmp_path / "cls" / name), name
    # ImageNet mean/std is per channel: kept inside, the uint8 input is the pixel itself (scale 1, zero point 0).
    assert files["int8_input"] == {"dtype": "uint8", "feeds": "raw RGB pixels [0, 255]", "scale": 1.0,
                                   "zero_point": 0}
    assert files["int8_check"]["images"] == 3 and files["fp16_check"]["images"] == 3  # 12 calibrate, 3 held out
    assert tflite.first_float_op(open(files["int8"], "rb").read()) is None
    runner = tflite.interpreter(files["int8"])
    assert runner.get_input_details()[0]["dtype"] == np.uint8 and runner.get_output_details()[0]["dtype"] == np.uint8
    expected = nano.predict(pixels, verbose=0)
    fp16 = tflite.run_pixels(files["fp16"], pixels)
    assert np.abs(fp16 - expected).max() < 0.05 * max(1.0, np.abs(expected).max())
    int8 = tflite.run_pixels(files["int8"], pixels)
    assert np.corrcoef(int8.ravel(), expected.ravel())[0, 1] > 0.9
    assert os.path.getsize(files["int8"]) < 0.5 * os.path.getsize(files["float"])


def test_a_model_with_an_op_that_has_no_int8_kernel_is_refused_naming_it(tmp_path):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.sin(t), name="wave")(x)  # TFLite's SIN is float only
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="predictions")(x))
    calibration, holdout = tflite.split_calibration(_pixels(12))
    with pytest.raises(tflite.QuantizationError, match=r"first op left in float is '.*wave.*Sin'"):
        tflite.convert_int8(model, str(tmp_path), SIZE, calibration, holdout, min_agreement=0.0)
    assert not os.path.exists(tmp_path / tflite.INT8)


def test_too_few_calibration_images_and_low_agreement_are_refused(nano, tmp_path):
    with pytest.raises(tflite.QuantizationError, match="at least 10 images; got 9"):
        tflite.split_calibration(_pixels(9))
    calibration, holdout = tflite.split_calibration(_pixels(12))
    with pytest.raises(tflite.QuantizationError, match=r"agrees with the float model on .* below --min_agreement=1.01"):
        tflite.convert_int8(nano, str(tmp_path), SIZE, calibration, holdout, min_agreement=1.01)
    assert not os.path.exists(tmp_path / tflite.INT8)


def test_cli_calibration_errors_are_one_line(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "few"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(_pixels(1, seed=k)[0].astype(np.uint8)).save(folder / f"{k}.png")
    base = ["--model_name", "efficientnetv2-nano", "--weights", "none", "--image_size", str(SIZE),
            "--export_dir", str(tmp_path / "out"), "--kind", "classification"]
    for extra, message in ((["--tflite=int8", "--calibration_dir", str(folder)], "holds 3 images"),
                           (["--tflite=int8"], "needs real images: pass --calibration_dir"),
                           (["--tflite=int4"], "--tflite: tflite must be one of")):
        with pytest.raises(SystemExit) as info:
            export_cli.main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and message in err[-1] and "Traceback" not in "".join(err), err
        assert len(err) == 1 or err[0].startswith("usage:")  # ours: one line; argparse's: usage + one line
    assert not os.path.exists(tmp_path / "out")


def test_cli_int8_from_a_folder(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "calibration" / "nested"
    folder.mkdir(parents=True)
    for k, image in enumerate(_pixels(12, seed=3)):
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{k}.jpg")
    assert export_cli.main(["--model_name", "efficientnetv2-nano", "--weights", "none", "--image_size", str(SIZE),
                            "--export_dir", str(tmp_path / "out"), "--kind", "classification", "--tflite=int8",
                            "--calibration_dir", str(tmp_path / "calibration"), "--min_agreement", "0",
                            "--int8_output", "float32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tflite"]["calibration_images"] == 10 and result["tflite"]["int8_output"] == "float32"
    assert tflite.interpreter(result["tflite"]["int8"]).get_output_details()[0]["dtype"] == np.float32
