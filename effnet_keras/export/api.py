"""export(model, export_dir, kind=...): SavedModel, checked, plus optional TFLite and bundle."""

import os

from absl import logging

from effnet_keras import fileio
from effnet_keras import labels
from effnet_keras.export import savedmodel


def export(model, export_dir, kind="feature_vector", image_size=None, tflite=False, bundle=False, model_name=None,
           weights_provenance="random initialisation", atol=1e-5, class_names=None, calibration_images=None,
           min_agreement=0.98, int8_output="uint8", onnx=False):
    """Write a reusable SavedModel for `model` (a Keras model of ours, [0, 255] input) to `export_dir`.

    The SavedModel takes [0, 1] images. Before returning, the reloaded SavedModel is
    compared with the in-memory model (max |diff| <= atol), and the export is refused
    otherwise. `class_names` (classification: one per output) are written into the
    SavedModel as assets/labels.txt, beside the TFLite files and beside the bundle's
    tarball. Returns a dict describing what was written.

    `tflite`: False, True / "float", "fp16", "int8", or a list of them (effnet_keras.export.tflite).
    fp16 and int8 need `calibration_images` (real images [N, S, S, 3] in [0, 255], at least 10): int8
    calibrates on the first four fifths, both are checked against the float model on the last fifth
    and refused below `min_agreement` top-1 agreement. `int8_output`: "uint8" or "float32".
    `onnx`: also write model.onnx (same input and output as the SavedModel), checked with
    onnxruntime against the Keras model (effnet_keras.export.onnx).
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
        module = savedmodel.save(model, staging, kind, class_names=class_names, image_size=size, model_name=model_name)
        diff = savedmodel.check_reloaded(module, staging, size, atol=atol)
        tflite_files = _tflite_files(model, kind, staging, size, tflite, calibration_images, min_agreement,
                                     int8_output)
        onnx_files = {}
        if onnx:
            from effnet_keras.export import onnx as onnx_lib

            onnx_files = onnx_lib.convert(reference_model(model, kind), staging, size)
        if (tflite_files or onnx_files) and class_names is not None:
            labels.write_labels(staging, class_names)  # beside the .tflite / .onnx files, for apps
    result = {"saved_model": export_dir, "kind": kind, "num_outputs": module.num_outputs, "max_abs_diff": diff,
              "image_size": size}
    logging.info("SavedModel written to %s (%s, %d outputs, reload diff %.2g).", export_dir, kind,
                 module.num_outputs, diff)
    if class_names is not None:
        result["labels"] = os.path.join(export_dir, "assets", savedmodel.LABELS_ASSET)
    if tflite_files:
        result["tflite"] = {k: os.path.join(export_dir, os.path.basename(v)) if k in tflite_kinds(tflite) else v
                            for k, v in tflite_files.items()}
    if onnx_files:
        result.update(onnx_files, onnx=os.path.join(export_dir, os.path.basename(onnx_files["onnx"])))
    if bundle:
        from effnet_keras.export import bundle as bundle_lib

        result["bundle"] = bundle_lib.write_bundle(export_dir, model_name=model_name or model.name, kind=kind,
                                                   num_outputs=module.num_outputs, image_size=size,
                                                   weights_provenance=weights_provenance,
                                                   class_names=class_names)
    return result


def tflite_kinds(tflite):
    """The TFLite kinds asked for: `tflite` False/None, True, a kind, "float,int8", or a list of kinds."""
    from effnet_keras.export.tflite import KINDS

    if not tflite:
        return ()
    if tflite is True:
        return ("float",)
    kinds = tflite.split(",") if isinstance(tflite, str) else list(tflite)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"tflite must be one of {KINDS} (or a comma-separated list). Received: {tflite!r}")
    return tuple(dict.fromkeys(kinds))


def _tflite_files(model, kind, export_dir, size, tflite, calibration_images, min_agreement, int8_output):
    """The TFLite files asked for, each checked before it is written -> {kind: path, checks}."""
    kinds = tflite_kinds(tflite)
    if not kinds:
        return {}
    from effnet_keras.export import tflite as tflite_lib

    files = {}
    if "float" in kinds:
        files.update(tflite_lib.convert(export_dir, size))
    if "fp16" in kinds or "int8" in kinds:
        if calibration_images is None:
            raise tflite_lib.QuantizationError(
                f"tflite={','.join(kinds)} needs real images to check (int8: also to calibrate) the model: pass "
                "calibration_images (effnet-export: --calibration_dir, or a --model_dir run's validation images).")
        calibration, holdout = tflite_lib.split_calibration(calibration_images)
        reference = reference_model(model, kind)
        if "fp16" in kinds:
            outputs = lambda pixels: reference.predict(pixels, batch_size=16, verbose=0)  # noqa: E731
            files.update(tflite_lib.convert_fp16(export_dir, size, outputs, holdout, min_agreement))
        if "int8" in kinds:
            files.update(tflite_lib.convert_int8(reference, export_dir, size, calibration, holdout,
                                                 output_type=int8_output, min_agreement=min_agreement))
    return files


def reference_model(model, kind):
    """What the SavedModel outputs, as a Keras model on [0, 255] input (the same layers): the logits of
    a classifier, or the pooled features of a feature vector. The TFLite and ONNX files are made
    from it and checked against it."""
    import keras

    from effnet_keras.model_parts import embedding_output
    from effnet_keras.model_parts import logits_model

    if kind == "classification":
        return logits_model(model)
    return keras.Model(model.inputs, embedding_output(model), name=f"{model.name}_features")
