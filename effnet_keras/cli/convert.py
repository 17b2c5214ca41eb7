"""effnet-convert --from SOURCE --model_name NAME SRC OUT.weights.h5: published checkpoints -> our `.weights.h5`.

    effnet-convert --from automl --model_name efficientnetv2-s efficientnetv2-s-21k.tgz s21k.weights.h5
    effnet-convert --from tpu --model_name efficientnet-lite0 efficientnet-lite0.tar.gz lite0.weights.h5
    effnet-convert --from efficientnet_pytorch --model_name efficientnet-lite0 efficientnet-lite0-57934424.pth lite0.weights.h5
    effnet-convert --from keras --model_name efficientnet-b0 efficientnetb0.h5 b0.weights.h5
    effnet-convert --from timm --model_name coatnet-0 coatnet_0_224.safetensors c0.weights.h5 \\
        --builder_args '{"downsample": "dwconv", "pool": "avg", "padding": "symmetric"}'

The model is built with the class count the source's classifier has (--classes to override,
--no_top to drop the head), the source is loaded by name (every mismatch names the layer),
and the result is saved with `model.save_weights`. Load it with `get_model(NAME, weights=OUT)`
built the same way (or headless: `include_top=False`). The same conversion as a function:
`effnet_keras.models.convert.convert`. `.pth` files are read without torch. A damaged or
foreign source file (truncated download, wrong format) stops with one line naming it (exit
status 2). Earlier spellings still work: --model, --input-size, --no-top, --builder-args.
"""

import argparse
import json
import sys

from effnet_keras.cli import common
from effnet_keras.cli.startup import prog_name


def build_parser():
    from effnet_keras.models.convert import SOURCES

    parser = argparse.ArgumentParser(prog=prog_name("effnet_keras.cli.convert"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, choices=sorted(SOURCES))
    parser.add_argument("--model_name", "--model", dest="model_name", required=True,
                        help="registry name, e.g. efficientnetv2-s, efficientnet-lite0, coatnet-0")
    parser.add_argument("src", help="checkpoint: .tgz/.tar.gz/dir/prefix (automl, tpu), .h5 (keras), "
                                    ".safetensors/.pth (timm, efficientnet_pytorch)")
    parser.add_argument("out", help="output file, *.weights.h5")
    parser.add_argument("--classes", type=int, default=None, help="class count (default: the source's)")
    parser.add_argument("--no_top", "--no-top", dest="no_top", action="store_true",
                        help="save the backbone only (include_top=False)")
    parser.add_argument("--image_size", "--input_size", "--input-size", dest="image_size", type=int, default=None,
                        help="build at this square size (default: the model's)")
    parser.add_argument("--builder_args", "--builder-args", dest="builder_args", default=None,
                        help="JSON dict of extra builder arguments")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return common.run_command(parser, lambda: _convert(parser, args))


def _convert(parser, args):
    from effnet_keras.models import convert

    common.check_positive(parser, args, "image_size", "classes")
    try:
        builder_args = json.loads(args.builder_args) if args.builder_args else None
    except json.JSONDecodeError as err:
        parser.error(f"--builder_args is not valid JSON: {err}")
    try:
        model = convert.convert(args.source, args.model_name, args.src, args.out, classes=args.classes,
                                include_top=not args.no_top, input_size=args.image_size, builder_args=builder_args)
    except ValueError as err:  # WeightsFileError (damaged / foreign source), an unknown model: one line
        raise common.CommandError(f"{type(err).__name__}: {err}" if type(err) is not ValueError else str(err)) \
            from None
    print(f"wrote {args.out}: {args.model_name} ({model.count_params():,} parameters) from {args.source} {args.src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
