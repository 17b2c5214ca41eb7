"""data.name=folder: a folder of real images (scikit-learn digits as PNG/JPEG/GIF/BMP, scikit-learn's sample
photos as JPEG), one sub-folder per class: listing, stratified split, skipped files, errors, a short run
with labels.txt, and the export's assets/labels.txt."""

import collections
import dataclasses
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effnet_keras import data as data_lib
from effnet_keras import rundir
from effnet_keras.config_schema import ConfigError
from effnet_keras.data import pipeline
from effnet_keras.data.sources import folder
from effnet_keras.training import config as config_lib

CLASSES = ["digit_0", "digit_1", "digit_2", "photo"]
PER_DIGIT = 9  # + 1 GIF and 1 BMP in digit_2
PHOTOS = 6


def _digit_images(digit, count):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[digits.target == digit][:count] * (255.0 / 16.0)
    return [Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR).convert("RGB")
            for im in images]


def _photos(count):
    from sklearn.datasets import load_sample_images

    out = []
    for k in range(count):
        photo = load_sample_images().images[k % 2]
        h, w = photo.shape[:2]
        crop = photo[k * 20:k * 20 + h // 2, k * 30:k * 30 + w // 2]
        out.append(Image.fromarray(crop).resize((48, 36), Image.BILINEAR))
    return out


def _write_folder(root, classes_and_images):
    for name, images in classes_and_images.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for k, image in enumerate(images):
            ext = "png" if k % 2 else "jpg"
            image.save(os.path.join(root, name, f"{name}_{k:02d}.{ext}"))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("folder_ds"))
    _write_folder(root, {f"digit_{d}": _digit_images(d, PER_DIGIT) for d in range(3)} | {"photo": _photos(PHOTOS)})
    extra = _digit_images(2, PER_DIGIT + 2)[-2:]
    extra[0].save(os.path.join(root, "digit_2", "extra.gif"))
    extra[1].save(os.path.join(root, "digit_2", "extra.BMP"))
    with open(os.path.join(root, "digit_1", "broken.jpg"), "wb") as f:  # corrupt: random bytes
        f.write(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    with open(os.path.join(root, "photo", "notes.txt"), "w") as f:
        f.write("not an image\n")
    return root


def folder_config(data_dir, **overrides):
    cfg = config_lib.build_config(dataset_cfg="folder", overrides={"data": {"data_dir": str(data_dir)}}).data
    return dataclasses.replace(cfg, **overrides)


COUNTS = {"digit_0": 9, "digit_1": 10, "digit_2": 11, "photo": 6}  # digit_1 holds broken.jpg


def test_listing_class_names_counts_and_ignored_files(image_folder, caplog):
    folder._list_folder.cache_clear()
    caplog.set_level(logging.WARNING)
    info = data_lib.dataset_info(folder_config(image_folder))
    assert list(info.class_names) == CLASSES and info.num_classes == 4
    assert info.num_train_examples + info.num_eval_examples == sum(COUNTS.values())
    listing = folder.list_folder(folder_config(image_folder))
    assert listing.ignored == 1 and listing.nested == 0 and listing.layout == "stratified"
    assert not any(p.endswith(".txt") for split in listing.splits.values() for p in split[0])
    ignored = [r.getMessage() for r in caplog.records if "without an image extension" in r.getMessage()]
    assert len(ignored) == 1 and "1 file(s) without an image extension" in ignored[0] and "skipped" in ignored[0]
    # the run config gets the real counts, the YAML placeholders are gone
    resolved = data_lib.resolve_data_counts(config_lib.build_config(
        dataset_cfg="folder", overrides={"data": {"data_dir": image_folder}})).data
    assert (resolved.num_classes, resolved.num_train_examples, resolved.num_eval_examples) == (
        4, info.num_train_examples, info.num_eval_examples)
    digits = config_lib.build_config(dataset_cfg="digits")
    assert data_lib.resolve_data_counts(digits) is digits
    assert list(data_lib.dataset_info(digits.data).class_names) == [str(k) for k in range(10)]


def test_stratified_split_is_seeded_and_stratified(image_folder):
    def split(seed):
        listing = folder.list_folder(folder_config(image_folder, split_seed=seed))
        return {name: (tuple(p), tuple(l)) for name, (p, l) in listing.splits.items()}

    first, again, other = split(0), split(0), split(1)
    assert first == again and first != other
    train_paths, train_labels = first["train"]
    val_paths, val_labels = first["val"]
    assert not set(train_paths) & set(val_paths)
    per_class_val = collections.Counter(val_labels)
    for k, name in enumerate(CLASSES):
        total = COUNTS[name]
        assert per_class_val[k] == max(1, round(0.2 * total)), name
        assert all(os.path.basename(os.path.dirname(p)) == CLASSES[l] for p, l in zip(train_paths, train_labels))
    assert len(train_paths) + len(val_paths) == sum(COUNTS.values())


def test_corrupt_file_is_skipped_and_named_in_the_log(image_folder, caplog):
    caplog.set_level(logging.WARNING)
    seen = 0
    for split_name in ("train", "val"):
        cfg = folder_config(image_folder, eval_split=split_name)
        for images, labels in data_lib.build_dataset(cfg, split="eval", image_size=32, batch_size=64):
            assert images.shape[1:] == (32, 32, 3) and labels.shape[1] == 4
            seen += len(images)
    assert seen == sum(COUNTS.values()) - 1  # all but broken.jpg (GIF and BMP decoded)
    broken = os.path.join(image_folder, "digit_1", "broken.jpg")
    skipped = pipeline.skipped_records()
    assert any(broken in paths for paths in skipped.values()), skipped
    assert any("skipped 1 unreadable or corrupt file" in r.getMessage() and broken in r.getMessage()
               for r in caplog.records)
    # training batches: cropped, augmented, static batch
    train = data_lib.build_dataset(folder_config(image_folder, augment="randaugment", randaug_magnitude=5.0), split="train",
                                   image_size=32, batch_size=4, seed=0)
    images, labels = next(iter(train))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 4)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="data.data_dir must be a folder of class sub-folders"):
        data_lib.dataset_info(config_lib.build_config(dataset_cfg="folder").data)
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"data.data_dir='{missing}' is not a folder"):
        data_lib.dataset_info(folder_config(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="has no class sub-folders; expected at least 2 classes"):
        data_lib.dataset_info(folder_config(empty))
    single = tmp_path / "single"
    _write_folder(str(single), {"only": _digit_images(0, 2)})
    with pytest.raises(ConfigError, match="has only the class folder 'only'; expected at least 2 classes"):
        data_lib.dataset_info(folder_config(single))
    (single / "hollow").mkdir()
    with pytest.raises(ConfigError, match=f"class folder '{single / 'hollow'}' has no images"):
        data_lib.dataset_info(folder_config(single))
    split = tmp_path / "split"
    _write_folder(str(split / "train"), {"a": _digit_images(0, 2), "b": _digit_images(1, 2)})
    _write_folder(str(split / "val"), {"a": _digit_images(0, 1), "c": _digit_images(1, 1)})
    with pytest.raises(ConfigError, match=r"must hold the same class folders.*missing: \['b'\], extra: \['c'\]"):
        data_lib.dataset_info(folder_config(split))


def test_train_and_val_folders(tmp_path):
    root = tmp_path / "tv"
    _write_folder(str(root / "train"), {"cat": _photos(3), "dog": _digit_images(3, 4)})
    _write_folder(str(root / "val"), {"cat": _photos(1), "dog": _digit_images(4, 2)})
    cfg = folder_config(root)
    info = data_lib.dataset_info(cfg)
    assert list(info.class_names) == ["cat", "dog"]
    assert (info.num_train_examples, info.num_eval_examples) == (7, 3)
    assert folder.list_folder(cfg).layout == "split"
    _, labels = next(iter(data_lib.build_dataset(cfg, split="eval", image_size=24, batch_size=8)))
    assert labels.numpy().argmax(1).tolist() == [0, 1, 1]


def test_short_run_writes_labels_and_export_carries_them(image_folder, tmp_path):
    from effnet_keras import labels
    from effnet_keras.export import export
    from effnet_keras.training import run as run_lib

    cfg = config_lib.build_config(
        model_name="efficientnetv2-nano", dataset_cfg="folder",
        overrides={"data": {"data_dir": image_folder}},
        hparam_str="train.max_steps=2,train.steps_per_execution=1,train.batch_size=8,train.image_size=32,"
                   "eval.image_size=32,eval.batch_size=16,train.epochs=1,train.checkpoint_every_steps=0",
    )
    model_dir = str(tmp_path / "run")
    result = run_lib.run(cfg, mode="train_and_eval", model_dir=model_dir, verbose=0)
    assert [h["steps"] for h in result["history"]] == [2] and 0.0 <= result["eval"]["top1"] <= 1.0
    run = rundir.RunDir.open(model_dir)
    assert run.class_names == CLASSES and run.num_classes == 4
    with open(os.path.join(model_dir, labels.LABELS_FILE)) as f:
        assert f.read().split() == CLASSES

    model, size, names = run.build(run.eval_size), run.eval_size, run.class_names
    assert model.output.shape[-1] == 4
    export_dir = str(tmp_path / "export")
    out = export(model, export_dir, kind="classification", image_size=size, class_names=names, bundle=True,
                 model_name="nano-folder")
    labels_path = os.path.join(export_dir, "assets", "labels.txt")
    assert out["labels"] == labels_path and labels.read_names(labels_path) == CLASSES
    assert labels.read_names(os.path.join(out["bundle"], "labels.txt")) == CLASSES
    reloaded = tf.saved_model.load(export_dir)
    assert labels.read_names(reloaded.labels_file.asset_path.numpy().decode()) == CLASSES
    with pytest.raises(ValueError, match="3 class names for a classifier of 4"):
        export(model, str(tmp_path / "bad"), kind="classification", class_names=CLASSES[:3])


def _cli(args, cwd):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the command keeps TF quiet itself
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_the_driver_trains_on_a_folder_exports_and_predict_names_its_classes(image_folder, tmp_path):
    """What a user types: effnet-train on a folder, a classification export, effnet-predict on it."""
    run_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "cls")
    hparams = "train.max_steps=2,train.batch_size=8,eval.batch_size=8,model.weights=null"
    train = _cli(["effnet_keras.cli.train", "--dataset_cfg=folder", f"--data_dir={image_folder}",
                  f"--model_dir={run_dir}", f"--export_dir={export_dir}", "--export_kind=classification",
                  "--model_name=efficientnetv2-nano", f"--hparam_str={hparams}"], cwd=str(tmp_path))
    assert train.returncode == 0, train.stderr[-3000:]
    assert "stage 1/1, epoch 1/" in train.stdout and "ETA" in train.stdout
    for noise in ("oneDNN", "cuInit", "Traceback"):
        assert noise not in train.stderr, noise
    assert open(os.path.join(export_dir, "assets", "labels.txt")).read().split() == CLASSES
    predicted = _cli(["effnet_keras.cli.predict", os.path.join(image_folder, "photo"), f"--export_dir={export_dir}",
                      "--top_k=2", "--json"], cwd=str(tmp_path))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    import json

    results = json.loads(predicted.stdout)
    assert len(results) == PHOTOS
    assert {p["name"] for r in results for p in r["predictions"]} <= set(CLASSES)

    # A typo'd model name and a --data_dir the digits dataset would ignore: one line, exit 2, no traceback.
    for bad in (["--model_name=efficientnetv2-q"], [f"--data_dir={image_folder}"]):
        refused = _cli(["effnet_keras.cli.train", f"--model_dir={tmp_path / 'bad'}", *bad], cwd=str(tmp_path))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert len(refused.stderr.strip().splitlines()) == 1 and ": error: " in refused.stderr, refused.stderr
