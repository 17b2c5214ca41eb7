"""`effnet-train` (and `python main.py` in a checkout): train, evaluate and export
EfficientNet / EfficientNetV2 / CoAtNet.

With no flags it runs the digits demo: efficientnetv2-nano trained
with a 3-stage progressive schedule on scikit-learn's handwritten digits,
evaluated with its EMA weights, and exported as a TF Hub feature vector.

    effnet-train --model_name=efficientnetv2-s --dataset_cfg=imagenet --data_dir=gs://... \
        --model_dir=gs://.../v2s --mode=train_and_eval --strategy=tpu --tpu=$TPU_NAME
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

from effnet_keras import config_schema

flags.DEFINE_string("model_name", None, "Registry name, e.g. efficientnetv2-s (default: the config's model.name).")
flags.DEFINE_string("dataset_cfg", "digits", "A packaged dataset config (effnet_keras/configs/datasets/<name>.yaml), "
                    "e.g. imagenet, cifar10ft, digits.")
flags.DEFINE_string("data_dir", None, "TFRecord / TFDS data directory (sets data.data_dir).")
flags.DEFINE_string("model_dir", None, "Checkpoints, config.yaml, results. Default: runs/<model>-<dataset>.")
flags.DEFINE_enum("mode", "train_and_eval", config_schema.RUN_MODES, "What to run.")
flags.DEFINE_enum("strategy", None, config_schema.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or address for TPUClusterResolver.")
flags.DEFINE_enum("mixed_precision", None, config_schema.MIXED_PRECISIONS, "Compute precision.")
flags.DEFINE_string("hparam_str", "", "Overrides: 'train.batch_size=512,data.randaug_magnitude=10' (lists as a|b|c).")
flags.DEFINE_string("config", None, "An extra YAML merged after the dataset config. Default for the digits "
                    "dataset: the packaged recipes/digits_demo.yaml.")
flags.DEFINE_bool("override_config", False, "Continue in a model_dir whose config.yaml differs.")
flags.DEFINE_string("export_dir", None, "Where the SavedModel goes (default: <model_dir>/export/<kind>). Exports "
                    "happen with --mode=export, in the digits demo, and whenever --export_dir or --export_kind is given.")
flags.DEFINE_enum("export_kind", "feature_vector", ["feature_vector", "classification"], "What to export.")
flags.DEFINE_integer("verbose", 2, "Training output: 0 silent, 1 a progress bar within each epoch, 2 one line per "
                     "epoch (stage, size, epoch k/N, img/s, loss, accuracy, ETA). TensorFlow's start-up and "
                     "Python log lines, and tracebacks for config errors: --verbosity=1.")
FLAGS = flags.FLAGS


def build_config_from_flags():
    from effnet_keras.training import config as config_lib

    config_file = FLAGS.config
    if config_file is None and FLAGS.dataset_cfg == "digits":
        config_file = config_lib.config_path("recipes", "digits_demo.yaml")
    overrides = {}
    if FLAGS.data_dir:
        overrides.setdefault("data", {})["data_dir"] = FLAGS.data_dir
    runtime = {k: v for k, v in (("strategy", FLAGS.strategy), ("tpu", FLAGS.tpu),
                                 ("mixed_precision", FLAGS.mixed_precision)) if v is not None}
    if runtime:
        overrides["runtime"] = runtime
    return config_lib.build_config(
        model_name=FLAGS.model_name, dataset_cfg=FLAGS.dataset_cfg, config_file=config_file,
        hparam_str=FLAGS.hparam_str, overrides=overrides,
    )


def _export_demo(model, model_dir, kind="feature_vector", export_dir=None, required=False, image_size=None,
                 provenance=None):
    """The one call site of the TF Hub exporter (model holds its EMA weights here)."""
    from effnet_keras import rundir
    from effnet_keras.export import export

    target = export_dir or os.path.join(model_dir, "export", kind)
    # A classifier carries the run's class names (labels.txt) as a SavedModel asset.
    names = rundir.RunDir.open(model_dir, require_weights=False).class_names if kind == "classification" else None
    result = export(model, target, kind=kind, image_size=image_size, class_names=names,
                    weights_provenance=provenance or "trained by effnet-train")
    return result.get("saved_model", target) if isinstance(result, dict) else target


class _NotTensorFlowInfo:
    """A logging filter: warnings and errors from anywhere, INFO only from outside TensorFlow."""

    def filter(self, record):
        import logging as python_logging

        path = str(getattr(record, "pathname", "")).replace(os.sep, "/")
        return record.levelno >= python_logging.WARNING or "/tensorflow/" not in path


def _main(argv):
    """One line on stderr and exit status 2 for what the user can fix (a config, a path, a file);
    the traceback with --verbosity=1."""
    if len(argv) > 1:  # absl leaves words that are not --flags here; never drop what was typed
        raise app.UsageError(f"unexpected arguments {argv[1:]} (flags are written --name=value; see --helpfull)")
    if FLAGS.verbosity < 1:
        # TF's Python-side INFO chatter (a "Sharding callback duration" line per checkpoint) goes
        # through absl's handler like ours: drop INFO records logged from TensorFlow's own files.
        logging.get_absl_handler().addFilter(_NotTensorFlowInfo())
    try:
        return _run_job()
    except (ValueError, FileNotFoundError) as err:  # ConfigError, RunDirError, WeightsFileError, paths
        if FLAGS.verbosity >= 1:
            raise
        from effnet_keras.cli.startup import prog_name

        print(f"{prog_name('effnet_keras.cli.train')}: error: {err}  (--verbosity=1 shows the traceback)",
              file=sys.stderr)
        return 2


def _run_job():
    from effnet_keras import fileio
    from effnet_keras.training import run as run_lib

    config = build_config_from_flags()
    model_dir = FLAGS.model_dir or os.path.join("runs", f"{config.model.name}-{FLAGS.dataset_cfg}")
    # Export: --mode=export, the digits demo, or whenever --export_dir / --export_kind was typed (a flag
    # the user gave is never dropped).
    typed = FLAGS["export_dir"].present or FLAGS["export_kind"].present
    export = FLAGS.mode == "export" or typed or (FLAGS.dataset_cfg == "digits" and FLAGS.mode == "train_and_eval")

    def export_fn(model, eval_size):
        provenance = f"effnet-train: {config.model.name} trained on {FLAGS.dataset_cfg} ({fileio.display(model_dir)})"
        return _export_demo(model, model_dir, FLAGS.export_kind, FLAGS.export_dir, required=FLAGS.mode == "export",
                            image_size=eval_size, provenance=provenance)

    results = run_lib.run(
        config, mode=FLAGS.mode, model_dir=model_dir, override_config=FLAGS.override_config,
        export_fn=export_fn if export else None, verbose=FLAGS.verbose,
    )
    summary = {
        "model": config.model.name,
        "dataset": FLAGS.dataset_cfg,
        "model_dir": fileio.display(model_dir),
        "stages": [(s["image_size"], s["batch_size"]) for s in results["stages"]],
        "train_seconds": results.get("train_seconds"),
        "eval": results.get("eval"),
        "weights": results.get("weights"),
        "export": fileio.display(results["export"]) if results.get("export") else None,
    }
    print(json.dumps(summary, indent=2))
    if "eval" in results:
        print(f"test accuracy (top-1, EMA weights): {results['eval'].get('top1', float('nan')):.4f}")
    print(f"wrote: {fileio.display(model_dir)}" + (f" and {summary['export']}" if summary["export"] else ""))
    return 0


def main():
    """Console-script entry point (`effnet-train`): absl parses sys.argv."""
    logging.set_verbosity(logging.INFO)
    app.run(_main)


if __name__ == "__main__":
    sys.exit(main())
