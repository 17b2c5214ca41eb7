"""effnet-cam IMAGE... (--model_name NAME [--weights ID|FILE] | --model_dir RUN) [--out DIR]

Writes one PNG per image (original | Grad-CAM overlay, top-5 classes underneath) and a grid
of all of them, and prints where it wrote them. The model, its classifier, the image size
and the class names come as for effnet-predict (one loader, effnet_keras/cli/common.py), and
the pixels it explains are the ones effnet-predict classifies (effnet_keras.images.load_image).

    effnet-cam photo.jpg --model_name efficientnet-lite0 --weights efficientnet-lite0.pth
    effnet-cam photo.jpg --model_dir runs/flowers --layer block6a_project_bn
"""

import argparse
import io
import os
import sys

import numpy as np

from effnet_keras import fileio
from effnet_keras.cli import common
from effnet_keras.cli.startup import prog_name
from effnet_keras.images import load_image


def _save_png(image, path):
    """PNG written whole under its name, locally or on a bucket."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    fileio.write_bytes(path, buffer.getvalue())


def build_parser():
    parser = argparse.ArgumentParser(prog=prog_name("effnet_keras.cli.cam"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
    common.add_model_args(parser, weights_default="imagenet")
    common.add_crop_arg(parser)
    parser.add_argument("--layer", default=None, help="feature layer to explain (default: the model's last feature "
                        "map, as its builder recorded it)")
    parser.add_argument("--out", default="cam_out")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return common.run_command(parser, lambda: _explain(parser, args))


def _explain(parser, args):
    import keras

    from effnet_keras.explain import class_activation_map
    from effnet_keras.explain import grid
    from effnet_keras.explain import overlay_panel

    common.check_positive(parser, args, "image_size", "classes")
    missing = [p for p in args.images if not fileio.exists(p)]
    if missing:
        parser.error(f"no such image: {', '.join(missing)}")
    loaded = common.model_from_args(args)
    names = [name for _, name in loaded.class_index()]
    try:
        images = np.stack([load_image(p, loaded.image_size, args.crop_fraction) for p in args.images])
    except OSError as err:  # Pillow: not an image
        raise common.CommandError(f"cannot read an image: {err}") from None
    try:
        heatmaps, logits = class_activation_map(loaded.model, images, layer_name=args.layer, return_logits=True)
    except ValueError as err:  # --layer that does not exist or is not a feature map
        raise common.CommandError(str(err)) from None
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    fileio.makedirs(args.out)
    panels = []
    for path, image, heatmap, p in zip(args.images, images, heatmaps, probs):
        top = [(names[i], float(p[i])) for i in np.argsort(-p)[:5]]
        panel = overlay_panel(image, heatmap, top, title=os.path.basename(path))
        target = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + "_cam.png")
        _save_png(panel, target)
        panels.append(panel)
        print(f"wrote {target}: explains {top[0][0]} ({top[0][1]:.4f})")  # the caption's first line
    grid_path = os.path.join(args.out, "grid.png")
    _save_png(grid(panels), grid_path)
    print(f"wrote {grid_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
