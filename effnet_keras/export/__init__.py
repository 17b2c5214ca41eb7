"""Export our models as reusable TF2 SavedModels (TF Hub / Kaggle Models), TFLite, ONNX and upload bundles.

    from effnet_keras.export import export
    export(model, "out/feature_vector", kind="feature_vector", image_size=224, tflite=True, bundle=True)
    effnet-export --model_dir=runs/x --export_dir=out --kind=classification

TensorFlow-only. `import hub_export` (the package's earlier name) still works as an alias.
"""

from effnet_keras.export.api import export  # noqa: F401

__all__ = ["export"]
