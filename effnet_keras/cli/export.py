"""effnet-export (--model_name NAME [--weights ID|FILE] | --model_dir RUN) --export_dir OUT
    [--kind feature_vector|classification] [--tflite] [--bundle]

Writes a reusable TF2 SavedModel (TF Hub / Kaggle Models; input float32 RGB in [0, 1]),
checked against the Keras model before it is moved into place, plus optional TFLite and a
Kaggle upload bundle. The model comes as for effnet-predict: a run directory of ours (EMA
weights preferred, its class names travel as assets/labels.txt), or a registered model with
a weight id, a weights file (any format we read; a classification export keeps the file's
classifier) or a `.keras` file. `--checkpoint` is the earlier name of `--weights`;
`python -m hub_export` the earlier name of this command.

    effnet-export --model_dir runs/flowers --export_dir exports/flowers --kind classification --tflite
    effnet-export --model_name efficientnet-lite0 --weights lite0.pth --export_dir out --kind classification
"""

import argparse
import json
import sys

import numpy as np

from effnet_keras.cli import common
from effnet_keras.cli.startup import prog_name

KINDS = ("feature_vector", "classification")


def build_parser():
    parser = argparse.ArgumentParser(prog=prog_name("effnet_keras.cli.export"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(parser, weights_default="imagenet")
    parser.add_argument("--checkpoint", dest="weights", help=argparse.SUPPRESS)  # earlier name of --weights
    parser.add_argument("--export_dir", required=True, help="where the SavedModel goes (local or gs://)")
    parser.add_argument("--kind", choices=KINDS, default="feature_vector")
    parser.add_argument("--tflite", nargs="?", const="float", default=None, metavar="float|fp16|int8",
                        help="also write TFLite, each file checked before it is written: --tflite (float32, "
                             "model_float32.tflite), --tflite=fp16 (float16 weights), --tflite=int8 (full-integer: "
                             "uint8 raw-pixel input, TFLITE_BUILTINS_INT8 ops), or a list: --tflite=float,int8")
    parser.add_argument("--calibration_dir", default=None,
                        help="fp16/int8: a folder of representative images (searched recursively; at least 10). "
                             "Default with --model_dir: the run's validation images (200 to calibrate, 50 held out)")
    parser.add_argument("--min_agreement", type=float, default=0.98,
                        help="fp16/int8: the least top-1 agreement with the float model on held-out images "
                             "(default 0.98); below it the file is not written")
    parser.add_argument("--int8_output", choices=("uint8", "float32"), default="uint8",
                        help="int8: the output's type (default uint8, for integer-only accelerators)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx (same input and output as the "
                        "SavedModel), checked with onnxruntime; needs the onnx extra")
    parser.add_argument("--bundle", action="store_true", help="also write <export_dir>_bundle/ for Kaggle Models")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return common.run_command(parser, lambda: _export(parser, args))


def _export(parser, args):
    from effnet_keras.export import export

    from effnet_keras.export.api import tflite_kinds
    from effnet_keras.export.onnx import OnnxExportError
    from effnet_keras.export.tflite import QuantizationError

    common.check_positive(parser, args, "image_size", "classes")
    try:  # a typo'd kind is refused before minutes of model building
        kinds = tflite_kinds(args.tflite)
    except ValueError as err:
        parser.error(f"--tflite: {err}")
    classification = args.kind == "classification"
    loaded = common.model_from_args(args, classifier=classification)
    class_names = _known_names(loaded) if classification else None
    calibration = calibration_images(args, loaded) if set(kinds) & {"fp16", "int8"} else None
    try:
        result = export(loaded.model, args.export_dir, kind=args.kind, image_size=loaded.image_size, tflite=kinds,
                        bundle=args.bundle, model_name=args.model_name or loaded.model.name,
                        weights_provenance=loaded.provenance, class_names=class_names,
                        calibration_images=calibration, min_agreement=args.min_agreement,
                        int8_output=args.int8_output, onnx=args.onnx)
    except (QuantizationError, OnnxExportError) as err:
        raise common.CommandError(str(err)) from None
    print(json.dumps(result, indent=2))
    return 0


RUN_CALIBRATION_IMAGES = 250  # of a run's validation split: 200 to calibrate, 50 held out to check


def calibration_images(args, loaded):
    """Real images [N, S, S, 3] in [0, 255] to calibrate and check an fp16/int8 file: --calibration_dir's
    (shuffled with a fixed seed, so the held-out fifth mixes the folder's classes), else the run's
    validation split as its evaluation pipeline reads it."""
    from effnet_keras.export.tflite import MIN_CALIBRATION_IMAGES
    from effnet_keras.images import load_image

    if args.calibration_dir:
        paths, missing = common.image_paths([args.calibration_dir])
        if missing or not paths or len(paths) < MIN_CALIBRATION_IMAGES:
            found = "does not exist" if missing else f"holds {len(paths)} images"
            raise common.CommandError(f"--calibration_dir={args.calibration_dir} {found}; int8/fp16 need at least "
                                      f"{MIN_CALIBRATION_IMAGES} representative images (.jpg .jpeg .png .bmp .gif).")
        order = np.random.default_rng(0).permutation(len(paths))
        return np.stack([load_image(paths[i], loaded.image_size) for i in order])
    if loaded.run is None:
        raise common.CommandError("--tflite=int8/fp16 needs real images: pass --calibration_dir=DIR (or export a "
                                  "--model_dir run, whose validation images are used).")
    from effnet_keras import data as data_lib

    dataset = data_lib.build_dataset(loaded.run.config.data, split="eval", image_size=loaded.image_size,
                                     batch_size=50, training=False, repeat=False)
    images = np.concatenate([x.numpy() for x, _ in dataset.take(RUN_CALIBRATION_IMAGES // 50)])
    return images[:RUN_CALIBRATION_IMAGES]


def _known_names(loaded):
    """The class names to write beside a classifier (a labels file's, a run's, ImageNet's), or None when
    only the index strings are known."""
    names = [name for _, name in loaded.class_index()]
    given = loaded.labels_file or (loaded.run is not None and loaded.run.class_names is not None)
    return names if given or names != [str(i) for i in range(len(names))] else None


if __name__ == "__main__":
    sys.exit(main())
