"""python -m hub_export --model_name=NAME [--checkpoint=PATH | --model_dir=DIR] --export_dir=OUT
    --kind=feature_vector|classification [--tflite] [--bundle]

--model_dir: a training run of ours (config.yaml + ema.weights.h5 / model.weights.h5; EMA
weights are preferred when present). --checkpoint: a `.keras` file, or a weights file
(`.weights.h5`, keras.applications `.h5`, or a weight id) for --model_name.
"""

import argparse
import json
import os
import sys

import yaml

from effnet_keras import fileio
from effnet_keras.cli_util import prog_name


def load_model(model_name=None, checkpoint=None, model_dir=None, classes=1000, image_size=None):
    """-> (keras model, image size, provenance string)."""
    import keras

    from effnet_keras.models import registry

    if model_dir:
        cfg_path = os.path.join(model_dir, "config.yaml")
        if not fileio.exists(cfg_path):
            raise SystemExit(f"--model_dir={model_dir}: no config.yaml there (is it a training run directory?)")
        with fileio.open(cfg_path) as f:
            cfg = yaml.safe_load(f)
        name = cfg["model"]["name"]
        if model_name and model_name.lower() != name.lower():
            raise SystemExit(f"--model_name={model_name} but {model_dir} trained {name}.")
        size = image_size or cfg["eval"].get("image_size") or cfg["model"].get("image_size") or cfg["train"].get("image_size")
        ema = os.path.join(model_dir, "ema.weights.h5")
        raw = os.path.join(model_dir, "model.weights.h5")
        path = ema if fileio.exists(ema) else raw
        if not fileio.exists(path):
            raise SystemExit(f"--model_dir={model_dir}: neither ema.weights.h5 nor model.weights.h5 exists.")
        model = registry.build_classifier(name, cfg["data"]["num_classes"], image_size=size)
        model.load_weights(path)
        return model, size, f"trained with effnet-keras in {model_dir} ({'EMA' if path == ema else 'raw'} weights)"
    if checkpoint and checkpoint.endswith(".keras"):
        model = keras.saving.load_model(checkpoint)
        return model, image_size or model.input_shape[1], f"Keras file {checkpoint}"
    if not model_name:
        raise SystemExit("Pass --model_name (with --checkpoint or alone), or --model_dir.")
    kwargs = {"weights": checkpoint} if checkpoint else {}
    builder = registry.get_builder(model_name)
    size = image_size or getattr(getattr(builder, "spec", None), "default_size", 224)
    if model_name.lower().startswith("coatnet"):
        model = registry.get_model(model_name, classes=classes, input_shape=(size, size, 3), **kwargs)
    else:
        model = registry.get_model(model_name, classes=classes, **kwargs)
    return model, size, checkpoint or "random initialisation"


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

    model, size, provenance = load_model(args.model_name, args.checkpoint, args.model_dir, args.classes,
                                         args.image_size)
    result = export(model, args.export_dir, kind=args.kind, image_size=size, tflite=args.tflite, bundle=args.bundle,
                    model_name=args.model_name or model.name, weights_provenance=provenance)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
