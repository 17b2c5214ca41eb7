"""hub_export.export(model, export_dir, kind=...): SavedModel, checked, plus optional TFLite and bundle."""

import os

from absl import logging

from effnet_keras import fileio
from hub_export import savedmodel


def export(model, export_dir, kind="feature_vector", image_size=None, tflite=False, int8_dataset=None, bundle=False,
           model_name=None, weights_provenance="random initialisation", atol=1e-5, class_names=None):
    """Write a reusable SavedModel for `model` (a Keras model of ours, [0, 255] input) to `export_dir`.

    The SavedModel takes [0, 1] images. Before returning, the reloaded SavedModel is
    compared with the in-memory model (max |diff| <= atol), and the export is refused
    otherwise. `class_names` (classification: one per output) are written into the
    SavedModel as assets/labels.txt, and beside the bundle's tarball. Returns a dict
    describing what was written.
    """
    if kind not in savedmodel.KINDS:
        raise ValueError(f"kind must be one of {savedmodel.KINDS}. Received: {kind!r}")
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if kind == "classification" and len(class_names) != int(model.output.shape[-1]):
            raise ValueError(f"{len(class_names)} class names for a classifier of {model.output.shape[-1]} "
                             "classes.")
    size = image_size or model.input_shape[1] or 224
    export_dir = os.fspath(export_dir).rstrip("/")
    # Written beside the target (`.<name>.tmp-*`), checked there, and moved into place only then
    # (local and bucket paths alike): an interrupted or refused export leaves the target as it was.
    with fileio.staged_dir(export_dir, commit_last=("saved_model.pb",)) as staging:
        module = savedmodel.save(model, staging, kind, class_names=class_names)
        diff = savedmodel.check_reloaded(module, staging, size, atol=atol)
        tflite_files = None
        if tflite or int8_dataset is not None:
            from hub_export import tflite as tflite_lib

            tflite_files = tflite_lib.convert(staging, size, int8_dataset=int8_dataset)
    result = {"saved_model": export_dir, "kind": kind, "num_outputs": module.num_outputs, "max_abs_diff": diff,
              "image_size": size}
    logging.info("SavedModel written to %s (%s, %d outputs, reload diff %.2g).", export_dir, kind,
                 module.num_outputs, diff)
    if class_names is not None:
        result["labels"] = os.path.join(export_dir, "assets", savedmodel.LABELS_ASSET)
    if tflite_files is not None:
        result["tflite"] = {k: os.path.join(export_dir, os.path.basename(v)) if k in ("float", "int8") else v
                            for k, v in tflite_files.items()}
    if bundle:
        from hub_export import bundle as bundle_lib

        result["bundle"] = bundle_lib.write_bundle(export_dir, model_name=model_name or model.name, kind=kind,
                                                   num_outputs=module.num_outputs, image_size=size,
                                                   weights_provenance=weights_provenance,
                                                   class_names=class_names)
    return result
