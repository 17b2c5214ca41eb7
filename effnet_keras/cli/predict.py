"""effnet-predict IMAGE_OR_FOLDER... (--model_name NAME [--weights ID|FILE] | --model_dir RUN | --export_dir DIR)

Classifies images (files, and folders searched recursively for .jpg .jpeg .png .bmp .gif)
and prints one line per image: its path and the top-k classes as `name (score)`;
--json prints a JSON list instead. The classifier is the weights' own (a weight id's, a
weights file's head, a run's, an export's); weights without one are refused. Class names:
--labels FILE, else the run's or the export's labels.txt, else the ImageNet names for an
ImageNet head (1000 / 21843 classes), else the class index. Each image is read whole and
resized to the model's size (--crop_fraction 0.875 crops the centre first, as ImageNet's
evaluation does). An image that cannot be read is reported on stderr and skipped (exit
status 1 at the end).

    effnet-predict photos/ --model_name efficientnet-lite0 --weights efficientnet-lite0.pth
    effnet-predict photos/ --model_name efficientnetv2-s --weights imagenet21k-ft1k
    effnet-predict cat.jpg --model_dir runs/flowers
    effnet-predict cat.jpg --export_dir exports/flowers_classifier
"""

import argparse
import json
import re
import sys

import numpy as np

from effnet_keras.cli import common
from effnet_keras.cli.startup import prog_name
from effnet_keras.images import IMAGE_EXTENSIONS
from effnet_keras.images import load_image

BATCH = 16


def _reason(err):
    """One line for a read/decode failure (TF's op errors without their function-node and op tags)."""
    text = str(getattr(err, "message", "") or err).strip()
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", text).strip()
    return (text.splitlines() or [type(err).__name__])[0]


def build_parser():
    parser = argparse.ArgumentParser(prog=prog_name("effnet_keras.cli.predict"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    common.add_model_args(parser, export_dir=True, weights_default="imagenet")
    common.add_crop_arg(parser)
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    return parser


def score_images(loaded, paths, crop_fraction=None, on_error=None):
    """(paths read, probabilities [N, classes]) for the images at `paths`, read by `images.load_image`
    at the model's size; an unreadable one goes to `on_error(path, reason)` and is skipped."""
    done, scores, batch, batch_paths = [], [], [], []

    def flush():
        if batch:
            scores.append(loaded.scores(np.stack(batch)))
            done.extend(batch_paths)
            batch.clear()
            batch_paths.clear()

    for path in paths:
        try:
            image = load_image(path, loaded.image_size, crop_fraction)
        except Exception as err:  # noqa: BLE001  (decode and I/O errors: reported, never a traceback)
            if on_error is None:
                raise
            on_error(path, _reason(err))
            continue
        batch.append(image)
        batch_paths.append(path)
        if len(batch) == BATCH:
            flush()
    flush()
    return done, (np.concatenate(scores) if scores else np.zeros((0, loaded.num_classes)))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return common.run_command(parser, lambda: _predict(parser, args))


def _predict(parser, args):
    from effnet_keras import labels as labels_lib

    common.check_positive(parser, args, "top_k", "image_size", "classes")
    paths, missing = common.image_paths(args.images)
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    if not paths:
        parser.error(f"no images found in {', '.join(args.images)} (looked for {' '.join(IMAGE_EXTENSIONS)})")
    loaded = common.model_from_args(args)
    index = loaded.class_index()  # a labels file whose length is not the class count: CommandError
    failed = []

    def report(path, reason):
        print(f"{parser.prog}: cannot read {path} (skipped): {reason}", file=sys.stderr)
        failed.append(path)

    done, probs = score_images(loaded, paths, args.crop_fraction, on_error=report)
    results = []
    if done:
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
        print(f"{parser.prog}: {len(failed)} of {len(paths)} images could not be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
