"""python -m hub_export --model_name=NAME [--checkpoint=PATH | --model_dir=DIR] --export_dir=OUT
    --kind=feature_vector|classification [--tflite] [--bundle]

--model_dir: a training run of ours (config.yaml + ema.weights.h5 / model.weights.h5; EMA
weights are preferred when present). --checkpoint: a `.keras` file, or a weights file
(`.weights.h5`, keras.applications `.h5`, or a weight id) for --model_name.
"""

import argparse
import json
import sys

from effnet_keras.cli_util import prog_name


def load_model(model_name=None, checkpoint=None, model_dir=None, classes=1000, image_size=None):
    """-> (keras model, image size, provenance string, class names: a run's labels.txt, else None)."""
    import keras

    from effnet_keras import rundir
    from effnet_keras.models import factory
    from effnet_keras.models import registry

    if model_dir:
        try:
            run = rundir.RunDir.open(model_dir)
        except rundir.RunDirError as err:
            raise SystemExit(f"--model_dir={model_dir}: {err}") from None
        if model_name and registry.get_spec(model_name).name != registry.get_spec(run.model_name).name:
            raise SystemExit(f"--model_name={model_name} but {model_dir} trained {run.model_name}.")
        size = image_size or run.eval_size
        return run.build(size), size, run.describe(), run.class_names
    if checkpoint and checkpoint.endswith(".keras"):
        model = keras.saving.load_model(checkpoint)
        return model, image_size or model.input_shape[1], f"Keras file {checkpoint}", None
    if not model_name:
        raise SystemExit("Pass --model_name (with --checkpoint or alone), or --model_dir.")
    kwargs = {"weights": checkpoint} if checkpoint else {}
    size = image_size or factory.image_sizes(model_name)[1]
    if registry.get_spec(model_name).family.static_input:
        kwargs["input_shape"] = (size, size, 3)
    model = registry.get_model(model_name, classes=classes, **kwargs)
    return model, size, checkpoint or "random initialisation", None


def main(argv=None):
    parser = argparse.ArgumentParser(prog=prog_name("hub_export"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint")
    source.add_argument("--model_dir")
    parser.add_argument("--export_dir", required=True)
    parser.add_argument("--kind", choices=["feature_vector", "classification"], default="feature_vector")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--tflite", action="store_true")
    parser.add_argument("--bundle", action="store_true")
    args = parser.parse_args(argv)

    from hub_export import export

    model, size, provenance, class_names = load_model(args.model_name, args.checkpoint, args.model_dir, args.classes,
                                                      args.image_size)
    result = export(model, args.export_dir, kind=args.kind, image_size=size, tflite=args.tflite, bundle=args.bundle,
                    model_name=args.model_name or model.name, weights_provenance=provenance,
                    class_names=class_names if args.kind == "classification" else None)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
