"""Fine-tuning the real Lite0 weights on a small folder of your own photos, with the defaults.

`effnet-train --dataset_cfg=folder --data_dir=DIR --model_name=efficientnet-lite0
--hparam_str=model.weights=PATH.pth` on ~60 images: class folders are read recursively (images
in DIR/<class>/more/ count), the fine-tune recipe's batch 64 is lowered to what the 47 training
images allow (one log line), and the run trains, evaluates and names its classes.
"""

import os

import numpy as np
import pytest
from PIL import Image

from effnet_keras.data.sources import folder
from effnet_keras.training import config as config_lib
from effnet_keras.training import run as run_lib

PHOTOS = ("grace_hopper", "china", "flower")


def _photo_paths():
    import matplotlib
    import sklearn

    images = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images")
    return {"grace_hopper": os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                                         "grace_hopper.jpg"),
            "china": os.path.join(images, "china.jpg"), "flower": os.path.join(images, "flower.jpg")}


def write_photo_folder(root, per_class=(20, 20, 19), nested=5, seed=0):
    """A folder of real photos: square crops of the three packaged photos, one class each; the last
    `nested` images of the first class sit in a sub-folder; one text file to skip."""
    rng = np.random.default_rng(seed)
    for (name, path), count in zip(_photo_paths().items(), per_class):
        image = Image.open(path).convert("RGB")
        for k in range(count):
            side = int(min(image.size) * rng.uniform(0.4, 0.9))
            x, y = (int(rng.integers(0, n - side + 1)) for n in image.size)
            where = os.path.join(root, name, "more") if name == PHOTOS[0] and k >= count - nested else \
                os.path.join(root, name)
            os.makedirs(where, exist_ok=True)
            image.crop((x, y, x + side, y + side)).resize((160, 160)).save(os.path.join(where, f"{k:02d}.jpg"))
    with open(os.path.join(root, PHOTOS[1], "README.txt"), "w") as f:
        f.write("not an image")
    return root


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return write_photo_folder(str(tmp_path_factory.mktemp("photos")))


def test_class_folders_are_read_recursively_and_counted(photo_folder, caplog):
    caplog.set_level("INFO")
    folder._list_folder.cache_clear()
    data = config_lib.build_config(dataset_cfg="folder", overrides={"data": {"data_dir": photo_folder}}).data
    listing = folder.list_folder(data)
    assert listing.class_names == tuple(sorted(PHOTOS))
    assert listing.count("train") + listing.count("val") == 59 and (listing.nested, listing.ignored) == (5, 1)
    assert any(p.endswith(os.path.join("grace_hopper", "more", "19.jpg")) for p in listing.splits["train"][0] +
               listing.splits["val"][0])
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Image folder"))
    assert "5 of them in nested folders" in line and "1 file(s) without an image extension" in line


def test_fine_tune_real_lite0_on_59_photos_with_the_defaults(photo_folder, tmp_path, caplog):
    from tests.weights.conftest import lite0_pth

    weights = lite0_pth()
    # What the user types, plus a step cap to keep the test short.
    config = config_lib.build_config(model_name="efficientnet-lite0", dataset_cfg="folder",
                                     overrides={"data": {"data_dir": photo_folder}},
                                     hparam_str=f"model.weights={weights},train.max_steps=1")
    assert config.train.batch_size == 64 and config.train.image_size is None
    # A ~50-step fine-tune: BN statistics must catch up within it (0.99 left eval at 75 % top-1).
    assert config.model.bn_momentum == 0.9
    with caplog.at_level("WARNING"):
        result = run_lib.run(config, model_dir=str(tmp_path / "run"), verbose=0)
    assert "train.batch_size=64 is larger than the 47 training examples: training with batch 47" in caplog.text
    assert result["stages"][0]["batch_size"] == 47 and result["stages"][0]["image_size"] == 224
    assert result["eval"]["global_step"] == 1 and 0.0 <= result["eval"]["top1"] <= 1.0
    with open(tmp_path / "run" / "labels.txt") as f:
        assert f.read().split() == sorted(PHOTOS)
    from effnet_keras import rundir

    built = rundir.RunDir.open(str(tmp_path / "run")).build(64)
    assert {layer.momentum for layer in built.layers if "BatchNormalization" in type(layer).__name__} == {0.9}
