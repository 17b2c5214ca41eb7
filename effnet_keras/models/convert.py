"""Convert published checkpoints into our native `.weights.h5` (the library half of effnet-convert).

    convert("automl", "efficientnetv2-s", "efficientnetv2-s-21k.tgz", "s21k.weights.h5")
    convert("efficientnet_pytorch", "efficientnet-lite0", "efficientnet-lite0-57934424.pth", "lite0.weights.h5")

The model is built with `weights=None` and the class count the source's classifier has
(`classes` to override, `include_top=False` to drop the head), the source is read by its
format's pure converter and written by the one assigner (every mismatch names the layer), and
the result is saved with `model.save_weights`. Load it with `get_model(NAME, weights=OUT, ...)`
built the same way (or headless: `include_top=False`). The same conversions happen when a
source file is passed as `weights=` to a builder; converting once saves the work per load.
"""

import os

from effnet_keras import weights as weights_lib
from effnet_keras.models import registry

# --from value -> the file format it names (several names for one format: the source's own name).
SOURCES = {
    "automl": "tf_checkpoint",  # google/automl EfficientNetV2, tensorflow/tpu V1 and Lite checkpoints
    "tpu": "tf_checkpoint",
    "keras": "keras_h5",  # keras.applications .h5
    "timm": "state_dict",  # timm tf_efficientnet*, tf_efficientnet_lite*, coatnet_* (.safetensors / .pth)
    "efficientnet_pytorch": "state_dict",  # lukemelas' efficientnet_pytorch and efficientnet_lite_pytorch (.pth)
}


def convert(source, model_name, src, out, *, classes=None, include_top=True, input_size=None, builder_args=None):
    """Build `model_name`, load `src` (a `source` checkpoint) into it, save `out`; returns the model."""
    if source not in SOURCES:
        raise ValueError(f"--from must be one of {sorted(SOURCES)}. Received: {source!r}")
    if not str(out).endswith(".weights.h5"):
        raise ValueError(f"The output must end in `.weights.h5` (Keras' weights format). Received: {out!r}")
    if not (os.path.exists(src) or os.path.exists(str(src) + ".index")):
        raise FileNotFoundError(f"No such source checkpoint: {src!r}")
    file_format = SOURCES[source]
    kwargs = dict(builder_args or {})
    if include_top:
        classes = classes or weights_lib.classifier_classes(str(src), file_format=file_format)
        if classes is None:
            raise ValueError(f"{src!r} has no classifier: pass --no_top (or --classes N for a fresh head).")
        kwargs.update(classes=classes, classifier_activation=None)
    if input_size:
        kwargs["input_shape"] = (input_size, input_size, 3)
    model = registry.get_model(model_name, weights=None, include_top=include_top, **kwargs)
    weights_lib.load_file(model, str(src), file_format=file_format,
                          converter=registry.get_spec(model_name).family.converter)
    model.save_weights(out)
    return model
