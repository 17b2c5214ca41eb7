"""Convert published checkpoints into our native `.weights.h5`.

    python -m effnet_keras.convert --from automl --model efficientnetv2-s efficientnetv2-s-21k.tgz s21k.weights.h5
    python -m effnet_keras.convert --from keras  --model efficientnet-b0 efficientnetb0.h5 b0.weights.h5
    python -m effnet_keras.convert --from timm   --model efficientnetv2-s model.safetensors s.weights.h5
    python -m effnet_keras.convert --from timm   --model coatnet-0 coatnet_0_224.safetensors c0.weights.h5 \\
        --builder-args '{"downsample": "dwconv", "pool": "avg", "padding": "symmetric"}'

The model is built with `weights=None` and the class count the source's classifier has
(`--classes` to override, `--no-top` to drop the head), the source is loaded by name (every
mismatch names the layer), and the result is saved with `model.save_weights`. Load it with
`get_model(NAME, weights=OUT, ...)` built the same way (or headless: `include_top=False`).
The same conversions as functions: `effnet_keras.weights.automl_checkpoint.load_automl_checkpoint`,
`effnet_keras.weights.keras_h5.load_legacy_h5`, `effnet_keras.weights.timm_efficientnet.
load_timm_efficientnet`, `effnet_keras.weights.timm_coatnet.load_timm_coatnet`.
A damaged or foreign source file (truncated download, wrong format) stops with one
`WeightsFileError` line naming it (exit status 2).
"""

import argparse
import json
import os
import sys

from effnet_keras.cli_util import prog_name

SOURCES = {"automl": "tf_checkpoint", "keras": "keras_h5", "timm": "timm"}


def source_classes(src, source):
    """The class count of the source's classifier, or None when it has none."""
    if source == "timm":
        from effnet_keras.weights.state_dict import read_state_dict

        state = read_state_dict(src)
        for key in ("classifier.weight", "head.fc.weight"):
            if key in state:
                return int(state[key].shape[0])
        return None
    if source == "keras":
        from effnet_keras.weights import keras_h5

        head = keras_h5.read_legacy_h5(src).get("predictions")
        return int(head[0].shape[-1]) if head else None
    from effnet_keras.weights import automl_checkpoint

    variables = automl_checkpoint.read_checkpoint(src)
    scope = automl_checkpoint.model_scope(variables)
    kernel = variables.get(f"{scope}/head/dense/kernel")
    return int(kernel.shape[-1]) if kernel is not None else None


def convert(source, model_name, src, out, *, classes=None, include_top=True, input_size=None, builder_args=None):
    """Build `model_name`, load `src` (a `source` checkpoint) into it, save `out`; returns the model."""
    if source not in SOURCES:
        raise ValueError(f"--from must be one of {sorted(SOURCES)}. Received: {source!r}")
    if not str(out).endswith(".weights.h5"):
        raise ValueError(f"The output must end in `.weights.h5` (Keras' weights format). Received: {out!r}")
    if not (os.path.exists(src) or os.path.exists(str(src) + ".index")):
        raise FileNotFoundError(f"No such source checkpoint: {src!r}")
    import effnet_keras
    from effnet_keras import weights as weights_lib

    kwargs = dict(builder_args or {})
    if include_top:
        classes = classes or source_classes(src, source)
        if classes is None:
            raise ValueError(f"{src!r} has no classifier: pass --no-top (or --classes N for a fresh head).")
        kwargs.update(classes=classes, classifier_activation=None)
    if input_size:
        kwargs["input_shape"] = (input_size, input_size, 3)
    model = effnet_keras.get_model(model_name, weights=None, include_top=include_top, **kwargs)
    weights_lib.load_file(model, str(src), include_top=include_top, model_name=model_name,
                          file_format=SOURCES[source], converter=effnet_keras.get_spec(model_name).family.converter)
    model.save_weights(out)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(prog=prog_name("effnet_keras.convert"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, choices=sorted(SOURCES))
    parser.add_argument("--model", required=True, help="registry name, e.g. efficientnetv2-s, efficientnet-b0, coatnet-0")
    parser.add_argument("src", help="checkpoint: .tgz/.tar.gz/dir/prefix (automl), .h5 (keras), .safetensors/.pth (timm)")
    parser.add_argument("out", help="output file, *.weights.h5")
    parser.add_argument("--classes", type=int, default=None, help="class count (default: the source's)")
    parser.add_argument("--no-top", action="store_true", help="save the backbone only (include_top=False)")
    parser.add_argument("--input-size", type=int, default=None, help="build at this square size (default: the model's)")
    parser.add_argument("--builder-args", default=None, help="JSON dict of extra builder arguments")
    args = parser.parse_args(argv)
    try:
        builder_args = json.loads(args.builder_args) if args.builder_args else None
    except json.JSONDecodeError as err:
        parser.error(f"--builder-args is not valid JSON: {err}")
    from effnet_keras.weights.files import WeightsFileError

    try:
        model = convert(args.source, args.model, args.src, args.out, classes=args.classes,
                        include_top=not args.no_top, input_size=args.input_size, builder_args=builder_args)
    except WeightsFileError as err:  # a damaged / foreign source: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {type(err).__name__}: {err}\n")
    print(f"wrote {args.out}: {args.model} ({model.count_params():,} parameters) from {args.source} {args.src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
