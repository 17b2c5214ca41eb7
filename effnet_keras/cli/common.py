"""What the commands share: one way to get a model from flags, one flag style, one error line.

Every tool that needs a trained model (effnet-predict, effnet-cam, effnet-export) takes it
from `model_from_args`, whichever way the user names it:

    --model_name NAME [--weights ID|FILE|none]   a registered model with a weight id, a weights
                                                  file in any format we read, a `.keras` file,
                                                  or random weights ('none')
    --model_dir RUN                               a training run of ours (EMA weights preferred)
    --export_dir DIR                              a classification SavedModel of ours (predict)

and gets a `LoadedModel`: the Keras model (logits out), a scoring function, its image size,
its class names and where its weights came from. The classifier is always the builder's own
(`factory.build_classifier`) sized to the weights' class count, so a weights file or id that
has a classifier keeps it; weights without one are refused where scores are asked for, never
replaced by a random head.

Flags are spelled with underscores everywhere; the earlier spellings (`--checkpoint`,
`--input-size`, `--no-top`, `--builder-args`, `--model`) still work as aliases. effnet-train
keeps absl flags (the training driver's, as main.py's); the tools use argparse.
"""

import argparse
import dataclasses

import numpy as np

from effnet_keras import fileio

SOURCES = ("model_name", "model_dir", "export_dir")


class CommandError(ValueError):
    """A problem the user can fix (a flag, a path, a file): printed as one line, exit status 2."""


def add_model_args(parser, *, export_dir=False, weights_default="imagenet", required=True):
    """The model source flags (--model_name | --model_dir [| --export_dir]) and what goes with them."""
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--model_name", help="a registered model, e.g. efficientnet-lite0, efficientnetv2-s, coatnet-0")
    source.add_argument("--model_dir", help="a training run directory of ours (its model and trained weights)")
    if export_dir:
        source.add_argument("--export_dir", help="a classification SavedModel written by effnet-export")
    parser.add_argument("--weights", default=None,
                        help="with --model_name: a weight id, a weights file (ours, keras.applications .h5, timm or "
                             "efficientnet_pytorch .safetensors/.pth, automl/tensorflow-tpu checkpoint), a .keras "
                             f"file, or 'none' for random weights (default: {weights_default})")
    parser.add_argument("--classes", type=int, default=None,
                        help="with --model_name: the classifier's class count (default: the weights')")
    parser.add_argument("--image_size", type=int, default=None,
                        help="default: the run's / export's / model's evaluation size")
    parser.add_argument("--labels", default=None,
                        help="text file of class names, one per line (or id<TAB>name), overriding the model's")
    parser.set_defaults(weights_default=weights_default)


def crop_fraction(text):
    """--crop_fraction: 'eval' (the evaluation pipeline's centre crop) or a number in (0, 1]."""
    if text == "eval":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be 'eval' or a number in (0, 1]. Received: {text!r}")
    return value


def add_crop_arg(parser):
    parser.add_argument("--crop_fraction", type=crop_fraction, default=None,
                        help="crop the centre square of this fraction of the shorter side before resizing, or "
                             "'eval' for the evaluation pipeline's size/(size+32) (default: no crop, the whole "
                             "image resized, as keras.applications' load_img)")


@dataclasses.dataclass
class LoadedModel:
    """A model to score images with, whichever way it was named."""

    scores: object  # images float32 [N, S, S, 3] in [0, 255] -> probabilities [N, classes] (float64)
    image_size: int
    num_classes: int
    provenance: str  # where the weights came from, for messages and model cards
    model: object = None  # the Keras model, logits out (None for a SavedModel)
    run: object = None  # the RunDir of a --model_dir
    labels_file: str = None  # --labels, else the export's assets/labels.txt
    multilabel: bool = False

    def class_index(self):
        """[(class id, name)] for the classifier (effnet_keras.labels' one lookup)."""
        from effnet_keras import labels

        return labels.class_index_for(self.num_classes, run=self.run, labels_file=self.labels_file)


def check_positive(parser, args, *names):
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer. Received: {value}")


def model_from_args(args, classifier=True):
    """The LoadedModel the flags name (see the module docstring); CommandError for what the user can fix.

    `classifier=False` (a feature-vector export): weights without a classifier are welcome, and
    give a headless model with global average pooling (`scores` is then None).
    """
    if getattr(args, "labels", None) and not fileio.exists(args.labels):
        raise CommandError(f"--labels: no such file: {args.labels}")
    if getattr(args, "export_dir", None) and not getattr(args, "model_name", None) and not args.model_dir:
        loaded = _from_export(args)
    elif args.model_dir:
        loaded = _from_run(args)
    else:
        loaded = _from_model_name(args, classifier)
    if args.labels:
        loaded.labels_file = args.labels
    return loaded


def _refuse_weights(args, source):
    if args.weights is not None:
        raise CommandError(f"--weights goes with --model_name; {source} brings its own weights.")
    if args.classes is not None:
        raise CommandError(f"--classes goes with --model_name; {source} brings its own classifier.")


def _from_run(args):
    from effnet_keras import rundir

    _refuse_weights(args, "a --model_dir")
    try:
        run = rundir.RunDir.open(args.model_dir)
    except rundir.RunDirError as err:
        raise CommandError(str(err)) from None
    size = args.image_size or run.eval_size
    model = run.build(size)
    multilabel = run.multilabel
    return LoadedModel(_keras_scores(model, multilabel), size, run.num_classes, run.describe(), model=model, run=run,
                       multilabel=multilabel)


def _from_model_name(args, classifier=True):
    import effnet_keras
    from effnet_keras import weights as weights_lib
    from effnet_keras.models import factory

    try:
        name = effnet_keras.get_spec(args.model_name).name
    except ValueError as err:
        raise CommandError(str(err)) from None
    weights = args.weights if args.weights is not None else args.weights_default
    weights = None if str(weights).lower() == "none" else weights
    if args.weights is None and weights is not None and not weights_lib.weight_ids(name):
        raise CommandError(f"{name} has no published weights, and --weights defaults to {weights!r}: pass --weights "
                           "FILE (a weights file), --weights none (random weights), or --model_dir RUN (a run of ours).")
    if weights is not None and str(weights).endswith(".keras"):
        return _from_keras_file(args, weights, name)
    classes = _classes_of(name, weights, args.classes, required=classifier)
    size = args.image_size or factory.image_sizes(name)[1]
    try:
        if classes is None:  # a feature vector from weights without a classifier
            model = factory.build_backbone(name, size, weights=weights, pooling="avg")
        else:
            model = factory.build_classifier(name, classes, size, weights=weights)
    except weights_lib.WeightsFileError as err:
        raise CommandError(str(err)) from None
    except (ValueError, OSError) as err:
        raise CommandError(f"cannot build {name} with weights={weights!r}: {err}") from None
    provenance = f"{name} with {'random' if weights is None else repr(weights)} weights"
    scores = None if classes is None else _keras_scores(model)
    return LoadedModel(scores, size, classes or 0, provenance, model=model)


def _classes_of(name, weights, asked, required=True):
    """The classifier size: the weights' own (an id's, a file's head), else --classes, else 1000.

    A classifier that the weights do not hold would be random: refused, with what to do instead
    (None when no classifier is `required`: the caller builds a headless model).
    """
    from effnet_keras import weights as weights_lib
    from effnet_keras.weights import registry

    if weights is None:
        return asked or 1000
    try:
        if registry.looks_like_weight_id(weights):
            own = weights_lib.lookup(name, weights).classes
        else:
            own = weights_lib.classifier_classes(weights)
    except weights_lib.WeightsFileError as err:
        raise CommandError(str(err)) from None
    except (ValueError, FileNotFoundError) as err:
        raise CommandError(str(err)) from None
    if own is None and not required:
        return None
    if own is None:
        raise CommandError(f"--weights={weights} has no classifier (a headless file): scores would come from a "
                           "random head. Pass weights with a classifier, a --model_dir run, or an --export_dir.")
    if asked is not None and asked != own:
        raise CommandError(f"--classes={asked} but --weights={weights} has a {own}-class classifier: the other "
                           f"{asked} classes would be random. Leave --classes out.")
    return own


def _from_keras_file(args, path, name):
    import keras

    from effnet_keras.model_parts import logits_model

    if args.classes is not None:
        raise CommandError("--classes does not go with a .keras file: it holds its own classifier.")
    try:
        model = keras.saving.load_model(path)
    except (ValueError, OSError) as err:
        raise CommandError(f"cannot load {path}: {err}") from None
    logits = logits_model(model)
    size = args.image_size or model.input_shape[1]
    if size is None:
        from effnet_keras.models import factory

        size = factory.image_sizes(name)[1]
    return LoadedModel(_keras_scores(logits), size, int(logits.output.shape[-1]), f"Keras file {path}",
                       model=logits)


def _from_export(args):
    from effnet_keras.export import savedmodel

    _refuse_weights(args, "an --export_dir")
    try:
        export = savedmodel.load_classifier(args.export_dir)
    except savedmodel.ExportError as err:
        raise CommandError(str(err)) from None

    def scores(batch):
        return _softmax(export.logits(batch))

    size = args.image_size or export.image_size
    return LoadedModel(scores, size, export.num_outputs, f"SavedModel {args.export_dir}",
                       labels_file=export.labels_file)


def _softmax(logits):
    logits = np.asarray(logits, "float64")
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def _keras_scores(model, multilabel=False):
    def scores(batch):
        logits = np.asarray(model.predict_on_batch(np.asarray(batch, "float32")), "float64")
        return 1.0 / (1.0 + np.exp(-logits)) if multilabel else _softmax(logits)

    return scores


def run_command(parser, job):
    """`job()` with what the user can fix as one line on stderr and exit status 2, as argparse's own
    usage errors (SystemExit), never a traceback."""
    from effnet_keras.weights.files import WeightsFileError

    try:
        return job()
    except (CommandError, WeightsFileError, FileNotFoundError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


def image_paths(inputs):
    """(image paths, missing inputs): files as given, folders searched recursively (sorted)."""
    from effnet_keras.images import IMAGE_EXTENSIONS

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
