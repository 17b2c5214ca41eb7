"""python -m effnet_keras.explain IMAGE... (--model_name=NAME [--weights=...] | --model_dir=RUN) [--out=DIR]

Writes one PNG per image (original | Grad-CAM overlay, top-5 classes underneath)
and a grid of all of them, and prints where it wrote them.
"""

import argparse
import io
import os
import sys

import numpy as np

from effnet_keras import fileio
from effnet_keras.cli_util import prog_name


def _load_image(path, size):
    try:
        from PIL import Image
    except ImportError as error:
        raise SystemExit("effnet_keras.explain needs Pillow to read images: pip install pillow") from error
    if not fileio.exists(path):  # local or a bucket path
        raise SystemExit(f"No such image: {path}")
    with Image.open(io.BytesIO(fileio.read_bytes(path))) as image:
        image = image.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype="float32")


def _labels(path, classes, model_dir=None):
    """Caption names, as effnet-predict finds them: --labels, else the run's labels.txt, else the
    ImageNet names for an ImageNet head, else the class index (effnet_keras.labels.class_names_for)."""
    from effnet_keras import labels
    from effnet_keras import rundir

    run = rundir.RunDir.open(model_dir, require_weights=False) if model_dir else None
    try:
        return labels.class_names_for(classes, run=run, labels_file=path)
    except ValueError as err:  # a names file whose length is not the model's class count
        raise SystemExit(f"--labels: {err}" if path else str(err)) from None


def _save_png(image, path):
    """PNG written whole under its name, locally or on a bucket."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    fileio.write_bytes(path, buffer.getvalue())


def _model(args, parser):
    """-> (model, image size): a run directory's trained classifier, or a registered model."""
    import effnet_keras
    from effnet_keras import rundir

    if args.model_dir:
        run = rundir.open_for_command(parser, args.model_dir, args.weights)
        size = args.image_size or run.eval_size
        return run.build(size), size
    kwargs = dict(weights=args.weights, classes=args.classes)
    if args.image_size:
        kwargs["input_shape"] = (args.image_size, args.image_size, 3)
    model = effnet_keras.get_model(args.model_name, **kwargs)
    return model, model.input_shape[1] or args.image_size


def main(argv=None):
    parser = argparse.ArgumentParser(prog=prog_name("effnet_keras.explain"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="PNG/JPEG files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_name", help="e.g. efficientnetv2-b0, coatnet-0")
    source.add_argument("--model_dir", help="a training run directory of ours (its model and trained weights)")
    parser.add_argument("--weights", default=None, help="with --model_name: weight id or weights file "
                        "(default: random init)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=None, help="default: the model's input size")
    parser.add_argument("--layer", default=None, help="feature layer to explain (default: last feature map)")
    parser.add_argument("--labels", default=None, help="text file, one class name per line")
    parser.add_argument("--out", default="cam_out")
    args = parser.parse_args(argv)

    import keras

    from effnet_keras.explain import class_activation_map, grid, overlay_panel

    model, size = _model(args, parser)
    images = np.stack([_load_image(p, size) for p in args.images])
    heatmaps, logits = class_activation_map(model, images, layer_name=args.layer, return_logits=True)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    names = _labels(args.labels, probs.shape[-1], args.model_dir)
    fileio.makedirs(args.out)
    panels, written = [], []
    for path, image, heatmap, p in zip(args.images, images, heatmaps, probs):
        top = np.argsort(-p)[:5]
        panel = overlay_panel(image, heatmap, [(names[i], float(p[i])) for i in top], title=os.path.basename(path))
        target = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + "_cam.png")
        _save_png(panel, target)
        panels.append(panel)
        written.append(target)
    grid_path = os.path.join(args.out, "grid.png")
    _save_png(grid(panels), grid_path)
    for target in written + [grid_path]:
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
