"""effnet-predict IMAGE_OR_FOLDER... (--model_name NAME [--weights ID|FILE] | --model_dir RUN | --export_dir DIR)

Classifies images (files, and folders searched recursively for .jpg .jpeg .png .bmp .gif)
and prints one line per image: its path and the top-k classes as `name (score)`;
--json prints a JSON list instead. Class names: --labels FILE, else the run's or the
export's labels.txt, else the ImageNet names for an ImageNet head (1000 / 21843 classes),
else the class index. An image that cannot be read is reported on stderr and skipped
(exit status 1 at the end).

    effnet-predict photos/ --model_name efficientnetv2-s --weights imagenet21k-ft1k
    effnet-predict cat.jpg --model_dir runs/flowers
    effnet-predict cat.jpg --export_dir exports/flowers_classifier
"""

import argparse
import json
import os
import re
import sys

import numpy as np

from effnet_keras import fileio
from effnet_keras.cli_util import prog_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
BATCH = 16


def find_images(inputs):
    """(image paths, missing inputs): files as given, folders searched recursively (sorted)."""
    found, missing = [], []
    for given in inputs:
        if fileio.isdir(given):
            found.extend(fileio.join(given, rel) for rel in fileio.walk_files(given)
                         if rel.lower().endswith(IMAGE_EXTENSIONS))
        elif fileio.exists(given):
            found.append(given)
        else:
            missing.append(given)
    return list(dict.fromkeys(found)), missing


def load_image(path, size):
    """float32 [size, size, 3] RGB in [0, 255]: decoded and resized by TensorFlow
    (the first frame of a GIF); any failure raises (the caller reports it)."""
    import tensorflow as tf

    image = tf.io.decode_image(fileio.read_bytes(path), channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0).numpy()


class _Source:
    """What predicts: `predict(batch of [0, 255] images) -> scores`, its image size, where its names come from."""

    def __init__(self, predict, size, run=None, labels_file=None, describe=""):
        self.predict, self.size, self.run, self.labels_file, self.describe = predict, size, run, labels_file, describe


def _softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def _keras_source(model, size, multilabel=False, **kwargs):
    def predict(batch):
        logits = np.asarray(model.predict_on_batch(batch), dtype="float64")
        return 1.0 / (1.0 + np.exp(-logits)) if multilabel else _softmax(logits)

    return _Source(predict, size, **kwargs)


def _from_model_name(args, parser):
    import effnet_keras
    from effnet_keras.models import factory
    from effnet_keras.weights import registry

    try:
        name = effnet_keras.get_spec(args.model_name).name
    except ValueError as err:
        parser.error(str(err))
    weights = None if args.weights.lower() == "none" else args.weights
    classes = args.classes
    if classes is None:
        classes = 1000
        if registry.looks_like_weight_id(weights):
            try:
                classes = registry.lookup(name, weights).classes
            except ValueError as err:
                parser.error(str(err))
    size = args.image_size or factory.image_sizes(name)[1]
    try:
        model = factory.build_classifier(name, classes, size, weights=weights)
    except (ValueError, OSError) as err:
        parser.error(f"cannot build {name} with weights={args.weights!r}: {err}")
    # Logits out (build_classifier): softmax here, whatever the activation the weights were trained with.
    return _keras_source(model, size, describe=f"{name} ({args.weights} weights)")


def _from_run(args, parser):
    from effnet_keras import rundir

    run = rundir.open_for_command(parser, args.model_dir, args.weights)
    size = args.image_size or run.eval_size
    model = run.build(size)
    multilabel = bool(run.config.get("data", {}).get("multilabel"))
    return _keras_source(model, size, multilabel=multilabel, run=run, describe=run.describe())


def _from_export(args, parser):
    import tensorflow as tf

    if args.weights:
        parser.error("--weights goes with --model_name; an --export_dir brings its own weights.")
    if not fileio.exists(os.path.join(args.export_dir, "saved_model.pb")):
        parser.error(f"{args.export_dir}: no saved_model.pb there; pass a SavedModel written by effnet-export "
                     "--kind=classification.")
    loaded = tf.saved_model.load(args.export_dir)
    serve = loaded.signatures.get("serving_default")

    def predict(batch):
        images = tf.constant(batch / 255.0, tf.float32)  # exports take [0, 1] images
        out = serve(images=images) if serve is not None else loaded(images)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return _softmax(out.numpy().astype("float64"))  # classification exports output logits

    labels = os.path.join(args.export_dir, "assets", "labels.txt")
    return _Source(predict, args.image_size or 224, labels_file=labels if fileio.exists(labels) else None,
                   describe=f"SavedModel {args.export_dir}")


def _reason(err):
    """One line for a read/decode failure (TF's op errors without their function-node and op tags)."""
    text = str(getattr(err, "message", "") or err).strip()
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", text).strip()
    return (text.splitlines() or [type(err).__name__])[0]


def _report(prog, message):
    print(f"{prog}: {message}", file=sys.stderr)


def main(argv=None):
    prog = prog_name("effnet_keras.predict")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_name", help="a registered model, e.g. efficientnetv2-s, coatnet-0")
    source.add_argument("--model_dir", help="a training run directory of ours (its model and trained weights)")
    source.add_argument("--export_dir", help="a classification SavedModel written by effnet-export")
    parser.add_argument("--weights", default=None, help="with --model_name: a weight id or weights file, or "
                        "'none' for random init (default: imagenet)")
    parser.add_argument("--classes", type=int, default=None, help="with --model_name: the head's class count "
                        "(default: the weight id's, else 1000)")
    parser.add_argument("--image_size", type=int, default=None, help="default: the model's / run's evaluation "
                        "size; 224 for an --export_dir")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--labels", default=None, help="text file of class names, one per line (or id<TAB>name), "
                        "overriding the model's")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top_k must be at least 1. Received: {args.top_k}")
    if args.image_size is not None and args.image_size < 1:
        parser.error(f"--image_size must be positive. Received: {args.image_size}")
    if args.labels and not fileio.exists(args.labels):
        parser.error(f"--labels: no such file: {args.labels}")
    paths, missing = find_images(args.images)
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    if not paths:
        parser.error(f"no images found in {', '.join(args.images)} (looked for {' '.join(IMAGE_EXTENSIONS)})")
    if args.model_name:
        if args.weights is None:
            args.weights = "imagenet"
        src = _from_model_name(args, parser)
    elif args.model_dir:
        src = _from_run(args, parser)
    else:
        src = _from_export(args, parser)

    from effnet_keras import labels as labels_lib

    failed, done, scores = [], [], []

    def flush(batch, batch_paths):
        if batch:
            scores.append(src.predict(np.stack(batch)))
            done.extend(batch_paths)

    batch, batch_paths = [], []
    for path in paths:
        try:
            image = load_image(path, src.size)
        except Exception as err:  # noqa: BLE001  (TF's decode errors, I/O errors: reported, never a traceback)
            _report(prog, f"cannot read {path} (skipped): {_reason(err)}")
            failed.append(path)
            continue
        batch.append(image)
        batch_paths.append(path)
        if len(batch) == BATCH:
            flush(batch, batch_paths)
            batch, batch_paths = [], []
    flush(batch, batch_paths)

    results = []
    if done:
        probs = np.concatenate(scores)
        try:
            index = labels_lib.class_index_for(probs.shape[-1], run=src.run, labels_file=args.labels or src.labels_file)
        except ValueError as err:  # a labels file whose length is not the model's class count
            parser.error(str(err))
        top = labels_lib.decode_predictions(probs, top=args.top_k, class_names=[n for _, n in index])
        for path, row in zip(done, top):
            # class ids: WordNet ids when the names are ImageNet's, else the index (decode_predictions' ids)
            results.append({"path": path, "predictions": [
                {"class_id": index[int(i)][0], "index": int(i), "name": name, "score": round(score, 6)}
                for i, name, score in row]})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(f"{result['path']}: " + ", ".join(f"{p['name']} ({p['score']:.4f})" for p in result["predictions"]))
    if failed:
        _report(prog, f"{len(failed)} of {len(paths)} images could not be read")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
