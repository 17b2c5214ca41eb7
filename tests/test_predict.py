"""Predict like keras.applications: preprocess_input, decode_predictions (shipped ImageNet names),
the effnet-predict CLI (weight id, run dir, export), Grad-CAM captions' names."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import effnet_keras
from effnet_keras import labels as labels_lib
from effnet_keras import rundir
from effnet_keras.cli import predict as predict_lib
from effnet_keras.images import load_image
from effnet_keras.preprocessing import PREPROCESSING_MODES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- preprocess_input ----------------------------------------------------------------------------

def _images(n=2, size=32, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, channels))


def test_preprocess_input_default_is_float32_identity():
    x = _images().astype("float64")
    out = effnet_keras.preprocess_input(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, x.astype("float32"))
    ints = np.arange(12, dtype="uint8").reshape(1, 2, 2, 3)
    np.testing.assert_array_equal(effnet_keras.preprocess_input(ints), ints.astype("float32"))
    np.testing.assert_array_equal(effnet_keras.preprocess_input(x, mode="none"), x.astype("float32"))
    with pytest.raises(ValueError, match="preprocessing mode must be one of"):
        effnet_keras.preprocess_input(x, mode="caffe")


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
@pytest.mark.parametrize("channels", [3, 1])
def test_preprocess_input_matches_the_in_model_normalisation(mode, channels):
    from effnet_keras.models import common

    inputs = keras.Input((32, 32, channels))
    layer = keras.Model(inputs, common.preprocessing(inputs, mode))
    x = _images(channels=channels, seed=1).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(effnet_keras.preprocess_input(x, mode=mode), expected, rtol=1e-6, atol=1e-6)


def test_preprocess_input_symbolic_tensor_in_tf_data():
    tf = pytest.importorskip("tensorflow")
    x = _images(seed=2).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(x).map(lambda t: effnet_keras.preprocess_input(t, mode="plus_minus_one"))
    got = np.stack([t.numpy() for t in ds])
    np.testing.assert_allclose(got, effnet_keras.preprocess_input(x, mode="plus_minus_one"), atol=1e-6)


def test_model_without_preprocessing_plus_preprocess_input_equals_model_with_it():
    with_norm = effnet_keras.EfficientNetV2Nano(input_shape=(64, 64, 3), classes=7)
    without = effnet_keras.EfficientNetV2Nano(input_shape=(64, 64, 3), classes=7, include_preprocessing=False)
    without.set_weights(with_norm.get_weights())  # normalisation is constants, never weights
    mode = effnet_keras.get_spec("efficientnetv2-nano").preprocessing
    assert mode != "none"
    x = _images(size=64, seed=3).astype("float32")
    expected = keras.ops.convert_to_numpy(with_norm(x, training=False))
    got = keras.ops.convert_to_numpy(without(effnet_keras.preprocess_input(x, mode=mode), training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    wrong = keras.ops.convert_to_numpy(without(effnet_keras.preprocess_input(x), training=False))
    assert not np.allclose(wrong, expected, atol=1e-3)


# ---- class names, decode_predictions ---------------------------------------------------------------

def test_shipped_imagenet_names():
    index = labels_lib.imagenet_class_index(1000)
    assert len(index) == 1000 and len({w for w, _ in index}) == 1000
    assert index[0] == ("n01440764", "tench")
    assert index[1] == ("n01443537", "goldfish")
    assert index[207] == ("n02099601", "golden retriever")
    assert index[999] == ("n15075141", "toilet tissue")
    assert [w for w, _ in index] == sorted(w for w, _ in index)  # ImageNet-1k order: sorted WordNet ids
    goog, fall11 = labels_lib.imagenet_class_index(21843), labels_lib.imagenet_class_index(21841)
    assert len(goog) == 21843 and len(fall11) == 21841
    assert {w for w, _ in goog} - {w for w, _ in fall11} == set(labels_lib.FALL11_ABSENT)
    assert labels_lib.imagenet_class_index(10) is None
    assert labels_lib.class_names_for(3) == ["0", "1", "2"]
    assert labels_lib.class_names_for(1000)[207] == "golden retriever"
    import types  # a run without labels.txt: ImageNet names only when it trained on ImageNet

    def run_on(name):
        return types.SimpleNamespace(path="run", class_names=None, config=types.SimpleNamespace(data=types.SimpleNamespace(name=name)))

    digits = run_on("digits")
    assert labels_lib.class_names_for(1000, run=digits)[:2] == ["0", "1"]
    imagenet = run_on("imagenet")
    assert labels_lib.class_names_for(1000, run=imagenet)[0] == "tench"


def test_decode_predictions_imagenet():
    preds = np.full((2, 1000), 1e-4, "float32")
    preds[0, [207, 1, 0]] = [0.5, 0.3, 0.1]
    preds[1, 999] = 0.9
    out = effnet_keras.decode_predictions(preds, top=3)
    assert [t[:2] for t in out[0]] == [("n02099601", "golden retriever"), ("n01443537", "goldfish"),
                                       ("n01440764", "tench")]
    assert [round(t[2], 4) for t in out[0]] == [0.5, 0.3, 0.1]
    assert out[1][0] == ("n15075141", "toilet tissue", pytest.approx(0.9))
    assert len(effnet_keras.decode_predictions(preds)[0]) == 5  # keras' default top=5
    assert isinstance(out[0][0][2], float)
    tf = pytest.importorskip("tensorflow")
    assert effnet_keras.decode_predictions(tf.constant(preds), top=1)[0][0][1] == "golden retriever"


def test_decode_predictions_custom_names_other_counts_and_errors():
    preds = np.array([[0.1, 0.7, 0.2]])
    assert effnet_keras.decode_predictions(preds, top=2, class_names=["cat", "dog", "fox"]) == [
        [("1", "dog", pytest.approx(0.7)), ("2", "fox", pytest.approx(0.2))]]
    assert len(effnet_keras.decode_predictions(preds, top=10, class_names=["a", "b", "c"])[0]) == 3
    with pytest.warns(UserWarning, match="no class names known for 3 classes"):
        assert effnet_keras.decode_predictions(preds, top=1) == [[("1", "1", pytest.approx(0.7))]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 21k head has names: no warning
        out = effnet_keras.decode_predictions(np.eye(1, 21843, 5), top=1)
    assert out[0][0][0] == labels_lib.imagenet_class_index(21843)[5][0]
    with pytest.raises(ValueError, match=r"shape \(1000,\)"):
        effnet_keras.decode_predictions(np.zeros(1000))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 1000\)"):
        effnet_keras.decode_predictions(np.zeros((2, 3, 1000)))
    with pytest.raises(ValueError, match="class_names has 2 names"):
        effnet_keras.decode_predictions(preds, class_names=["a", "b"])
    with pytest.raises(ValueError, match="top must be a positive integer"):
        effnet_keras.decode_predictions(preds, top=0)


def test_labels_module_is_a_leaf():
    # effnet_keras/__init__ imports the models (keras): load the two modules alone, under a bare package.
    code = ("import sys, types\n"
            "pkg = types.ModuleType('effnet_keras'); pkg.__path__ = [%r]; sys.modules['effnet_keras'] = pkg\n"
            "import effnet_keras.preprocessing, effnet_keras.labels\n"
            "assert effnet_keras.labels.imagenet_class_index(1000)[0][1] == 'tench'\n"
            "effnet_keras.preprocessing.preprocess_input([[1.0, 2.0, 3.0]], mode='advprop')\n"
            "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]\n"
            "assert not bad, bad\n") % os.path.dirname(effnet_keras.__file__)  # the installed package, not a checkout
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- the CLI ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    china, flower = load_sample_images().images
    Image.fromarray(china[::4, ::4]).save(root / "china.jpg")
    Image.fromarray(flower[::4, ::4]).save(root / "sub" / "flower.png")
    noise = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "sub" / "noise.JPEG")
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def _run(argv, capsys):
    code = predict_lib.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_model_name_folder_recursive_text_and_json(image_dir, capsys):
    base = [image_dir, "--model_name", "efficientnetv2-nano", "--weights", "none", "--image_size", "32"]
    code, out, err = _run(base + ["--top_k", "3"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        str(image_dir / "china.jpg"), str(image_dir / "sub" / "flower.png"), str(image_dir / "sub" / "noise.JPEG")]
    imagenet = set(labels_lib.class_names_for(1000))
    for line in lines:
        entries = line.split(": ", 1)[1].split(", ")
        assert len(entries) == 3
        assert all(e.rsplit(" (", 1)[0] in imagenet for e in entries)
    code, out, _ = _run(base + ["--json", "--top_k", "2"], capsys)
    result = json.loads(out)
    assert code == 0 and len(result) == 3
    first = result[0]["predictions"]
    assert len(first) == 2 and first[0]["score"] >= first[1]["score"]
    index = labels_lib.imagenet_class_index(1000)
    assert all((p["class_id"], p["name"]) == index[p["index"]] for r in result for p in r["predictions"])


def test_cli_unreadable_image_is_reported_and_skipped(image_dir, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is no jpeg")
    code, out, err = _run([image_dir / "china.jpg", bad, "--model_name", "efficientnetv2-nano", "--weights",
                           "none", "--image_size", "32", "--top_k", "1"], capsys)
    assert code == 1
    assert out.startswith(str(image_dir / "china.jpg")) and len(out.strip().splitlines()) == 1
    assert f"cannot read {bad}" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,message", [
    (["--model_name", "efficientnetv2-nano", "--weights", "none"], "no images found"),
    (["--model_name", "no-such-net"], "Unknown model name"),
    ([], "one of the arguments --model_name --model_dir --export_dir is required"),
    (["--model_name", "efficientnetv2-nano", "--model_dir", "x"], "not allowed with argument"),
])
def test_cli_bad_input_is_a_usage_error(tmp_path, capsys, argv, message):
    (tmp_path / "a.txt").write_text("no image here")
    image = [tmp_path] if message == "no images found" else [tmp_path / "a.txt"]
    with pytest.raises(SystemExit) as exit_info:
        predict_lib.main([str(a) for a in image + argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from effnet_keras.training import config as config_lib

    path = tmp_path_factory.mktemp("run")
    cfg = config_lib.build_config(model_name="efficientnetv2-nano", dataset_cfg="digits",
                                  hparam_str="data.num_classes=3,train.image_size=32,eval.image_size=32")
    config_lib.write_or_check(cfg, str(path))
    model = rundir.build_model(cfg, 3, 32)
    model.save_weights(str(path / "model.weights.h5"))
    labels_lib.write_labels(str(path), ["cat", "dog", "fox"])
    return path


def test_cli_run_dir_uses_its_labels(image_dir, run_dir, capsys):
    code, out, err = _run([image_dir, "--model_dir", run_dir, "--top_k", "3", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert len(result) == 3
    for r in result:
        assert sorted(p["name"] for p in r["predictions"]) == ["cat", "dog", "fox"]
        assert sum(p["score"] for p in r["predictions"]) == pytest.approx(1.0, abs=1e-4)
    override = run_dir / "other.txt"
    override.write_text("a\nb\nc\n")
    code, out, _ = _run([image_dir / "china.jpg", "--model_dir", run_dir, "--labels", override, "--top_k", "3"],
                        capsys)
    assert code == 0 and {e.rsplit(" (", 1)[0] for e in out.split(": ", 1)[1].strip().split(", ")} == {"a", "b", "c"}
    run = rundir.RunDir.open(str(run_dir))
    assert labels_lib.class_names_for(3, run=run) == ["cat", "dog", "fox"]


def test_cli_export_dir_reads_assets_labels(image_dir, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    import inspect

    from effnet_keras.export import api

    model = effnet_keras.get_model("efficientnetv2-nano", input_shape=(32, 32, 3), classes=4,
                                   classifier_activation=None)
    export_dir = tmp_path / "export"
    names = ["w", "x", "y", "z"]
    if "class_names" in inspect.signature(api.export).parameters:
        api.export(model, str(export_dir), kind="classification", image_size=32, class_names=names)
    else:
        api.export(model, str(export_dir), kind="classification", image_size=32)
        (export_dir / "assets").mkdir(exist_ok=True)
        (export_dir / "assets" / "labels.txt").write_text("\n".join(names) + "\n")
    assert (export_dir / "assets" / "labels.txt").exists()
    code, out, err = _run([image_dir / "china.jpg", "--export_dir", export_dir, "--image_size", "32", "--top_k", "4",
                           "--json"], capsys)
    assert code == 0, err
    (result,) = json.loads(out)
    assert sorted(p["name"] for p in result["predictions"]) == names
    # The export computes the same classifier as the Keras model (the export takes [0, 1] images).
    image = load_image(str(image_dir / "china.jpg"), 32)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(model(image[None], training=False)))[0]
    got = {p["index"]: p["score"] for p in result["predictions"]}
    np.testing.assert_allclose([got[i] for i in range(4)], probs, atol=1e-4)


def test_module_entry_point(image_dir):
    result = subprocess.run([sys.executable, "-m", "effnet_keras.cli.predict", str(image_dir / "sub" / "flower.png"),
                             "--model_name", "efficientnetv2-nano", "--weights", "none", "--image_size", "32",
                             "--top_k", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(str(image_dir / "sub" / "flower.png") + ": ")
    assert "Traceback" not in result.stderr


# ---- Grad-CAM captions -------------------------------------------------------------------------------------

def test_cam_captions_use_the_same_names(run_dir, image_dir, tmp_path, capsys):
    from effnet_keras.cli import cam

    out = tmp_path / "cam"
    assert cam.main([str(image_dir / "china.jpg"), "--model_dir", str(run_dir), "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"wrote {out / 'china_cam.png'}: explains ") and line.split("explains ")[1].split(" (")[0] in (
        "cat", "dog", "fox")
    with pytest.raises(SystemExit) as exit_info:
        cam.main([str(image_dir / "china.jpg"), "--model_dir", str(run_dir), "--labels", str(run_dir / "labels.txt"),
                  "--classes", "1000"])
    assert exit_info.value.code == 2 and "--classes goes with --model_name" in capsys.readouterr().err
